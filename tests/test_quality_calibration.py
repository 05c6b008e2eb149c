"""Every shipped model and documented ensemble gates with thresholds chosen on its own
training split (issue 14.2: MedSegDiff-V2 under the default model's 0.95 confidence limit
refused 59 of 60 HC18 heads). Small checks only: the stored blocks, their provenance,
and how Predictor.from_ensemble picks its block; no inference over a data set, no
/work/shared needed (the calibration itself is benchmarks/quality_gate.py)."""

from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from dataclasses import fields
from pathlib import Path

import pytest

from fetometry.biometry.quality import DEFAULT_THRESHOLDS, QualityThresholds
from fetometry.inference.predictor import Predictor

REPO = Path(__file__).resolve().parents[1]
WEIGHTS = REPO / "weights"
SHIPPED = [
    "attention-unet",
    "attention-unet-gpu",
    "duck-net",
    "medsegdiff-v2",
    "reference-monai-attention-unet",
    "transunet",
    "transunet-gpu",
    "unext",
    "unext-gpu",
    "unext-scanners",
]
#: The ensembles README.md and docs/BENCHMARKS.md tell users to run.
DOCUMENTED_ENSEMBLES = ["attention-unet,unext,transunet,duck-net", "unext-gpu,attention-unet-gpu,transunet-gpu"]
#: One limit for every model, chosen once (benchmarks/outside_scan.py): a block may leave it
#: out, or carry the shared value.
SHARED_LIMITS = {"max_outside_scan_fraction": DEFAULT_THRESHOLDS.max_outside_scan_fraction}
FIELDS = [f.name for f in fields(QualityThresholds) if f.name not in SHARED_LIMITS]


def _calibrated(block: dict) -> list[str]:
    """The block's own limits, in order; a shared limit in it must carry the shared value."""
    for name, value in SHARED_LIMITS.items():
        assert block.get(name, value) == value, f"{name} is shared by every model: {value}"
    return [name for name in block if name not in SHARED_LIMITS]


#: The project's target: each model measures at least this fraction of its validation heads.
MIN_MEASURED = 0.98
PROVENANCE_KEYS = {
    "script",
    "rule",
    "split",
    "train_images",
    "correct_train_images",
    "date",
    "git_commit",
    "hardware",
    "results",
    "validation",
    "weights_sha256",
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _config(name: str) -> dict:
    return json.loads((WEIGHTS / name / "config.json").read_text())


def _ensembles() -> dict:
    return json.loads((WEIGHTS / "ensembles.json").read_text())["ensembles"]


def _check_provenance(provenance: dict, block: dict, train_images: int) -> None:
    assert PROVENANCE_KEYS <= set(provenance), f"missing {sorted(PROVENANCE_KEYS - set(provenance))}"
    assert provenance["script"] == "benchmarks/quality_gate.py"
    assert "TRAINING" in provenance["rule"] and "train" in provenance["split"]
    assert provenance["train_images"] == train_images
    assert 0.9 * train_images <= provenance["correct_train_images"] <= train_images
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", provenance["date"])
    assert re.fullmatch(r"[0-9a-f]{40}", provenance["git_commit"])
    validation = provenance["validation"]
    assert validation["measured"] + sum(validation["refused_by_rule"].values()) == validation["images"]
    assert validation["measured_fraction"] == validation["measured"] / validation["images"]
    # The results file the block came from says the same.
    results = json.loads((REPO / provenance["results"]).read_text())
    assert QualityThresholds(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in results["chosen_on_train"].items()}
    ) == QualityThresholds.from_config({"quality": block})
    assert results["val"]["measured"]["measured_fraction"] == validation["measured_fraction"]
    assert results["train"]["n"] == train_images


def _is_segmenter(folder: Path) -> bool:
    """A segmentation model's weights (the gate's business); a plane classifier's folder
    (config "kind": "plane-classifier") measures nothing and has no gate."""
    return (folder / "config.json").is_file() and json.loads((folder / "config.json").read_text()).get(
        "kind", "segmenter"
    ) == "segmenter"


def test_every_segmentation_weights_folder_is_a_listed_shipped_model():
    folders = sorted(p.name for p in WEIGHTS.iterdir() if _is_segmenter(p))
    assert folders == sorted(SHIPPED), (
        "a new weights folder needs its quality calibration (benchmarks/quality_gate.py --write-config) and a line here"
    )


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_carries_its_own_calibrated_block(name):
    config = _config(name)
    assert "quality" in config, (
        f"{name}: no quality block; run benchmarks/quality_gate.py --model {name} --write-config"
    )
    block = config["quality"]
    assert _calibrated(block) == FIELDS, "a calibrated block sets every limit (none left to the default model's)"
    limits = QualityThresholds.from_config(config)  # raises on unknown keys: provenance stays outside
    assert limits == QualityThresholds.from_config({"quality": block})
    split = json.loads((WEIGHTS / name / "split.json").read_text())
    provenance = config["quality_calibration"]
    _check_provenance(provenance, block, len(split["train"]))
    assert provenance["weights_sha256"] == _sha256(WEIGHTS / name / "model.safetensors"), (
        f"{name}'s weights changed since its gate was calibrated: rerun benchmarks/quality_gate.py --model {name} --write-config"
    )


#: Short of the target with the rule's own thresholds (validation never tunes them), and
#: why (docs/QUALITY.md, "Refusal calibrated per model"). strict: passing again fails.
SHORT_OF_TARGET = {
    "reference-monai-attention-unet": "175/179 (97.8%): mask_fit refuses 001_HC and 051_HC, correct by the robust fit but "
    "their segmentations carry a blob outside / a bite out of the skull, and 064_HC (HC 6.7% off); 064_2HC: no ellipse",
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=SHORT_OF_TARGET[n])) if n in SHORT_OF_TARGET else n
        for n in SHIPPED
    ],
)
def test_shipped_model_measures_98_percent_of_its_validation_heads(name):
    validation = _config(name)["quality_calibration"]["validation"]
    assert validation["images"] == len(json.loads((WEIGHTS / name / "split.json").read_text())["val"])
    assert validation["measured_fraction"] >= MIN_MEASURED, (
        f"{name} measures {validation['measured_fraction']:.1%} of its validation heads"
    )


def test_medsegdiff_gates_below_the_default_models_confidence():
    """The issue: MedSegDiff-V2's mean probability sits at 0.92-0.95, under the default 0.95."""
    limits = QualityThresholds.from_config(_config("medsegdiff-v2"))
    assert limits.min_confidence < 0.92 < DEFAULT_THRESHOLDS.min_confidence


def test_ensembles_file_lists_the_documented_ensembles_by_sorted_existing_members():
    ensembles = _ensembles()
    for documented in DOCUMENTED_ENSEMBLES:
        assert ",".join(sorted(documented.split(","))) in ensembles
    for key, entry in ensembles.items():
        members = key.split(",")
        assert members == sorted(members) == entry["members"] and len(members) >= 2
        for member in members:
            assert (WEIGHTS / member / "config.json").is_file(), f"{key}: no weights folder {member}"
        splits = [json.loads((WEIGHTS / m / "split.json").read_text()) for m in members]
        identical = all(
            {p: sorted(v) for p, v in s.items()} == {p: sorted(v) for p, v in splits[0].items()} for s in splits
        )
        provenance = entry["quality_calibration"]
        assert ("identical" in provenance["split"]) == identical
        train = set.intersection(*(set(s["train"]) for s in splits))
        assert _calibrated(entry["quality"]) == FIELDS
        QualityThresholds.from_config(entry)
        _check_provenance(provenance, entry["quality"], len(train))
        assert provenance["validation"]["measured_fraction"] >= MIN_MEASURED, (
            f"{key} measures {provenance['validation']['measured_fraction']:.1%}"
        )
        assert provenance["weights_sha256"] == {m: _sha256(WEIGHTS / m / "model.safetensors") for m in members}, (
            f"{key}: a member changed since calibration"
        )


def test_from_ensemble_uses_the_stored_block_of_a_listed_ensemble(monkeypatch, caplog):
    monkeypatch.setenv("FETOMETRY_WEIGHTS", str(WEIGHTS))
    stored = _ensembles()["attention-unet-gpu,transunet-gpu,unext-gpu"]
    with caplog.at_level(logging.WARNING, logger="fetometry.inference.predictor"):
        predictor = Predictor.from_weights("unext-gpu,attention-unet-gpu,transunet-gpu")  # any order
    assert predictor.config.quality == QualityThresholds.from_config({"quality": stored["quality"]})
    assert predictor.config.quality_calibration["calibrated"] is True
    assert predictor.config.thresholds == QualityThresholds.from_config(stored)
    assert not [r for r in caplog.records if "not calibrated" in r.getMessage()]


def _lenient(limits: list[QualityThresholds]) -> QualityThresholds:
    return QualityThresholds.most_lenient(limits)


def test_most_lenient_takes_each_limit_from_the_more_lenient_block():
    strict = QualityThresholds(0.95, 0.60, (50.0, 400.0), (0.03, 0.70), 0.05, 0.92)
    loose = QualityThresholds(0.90, 0.55, (45.0, 420.0), (0.02, 0.75), 0.10, 0.88)
    mixed = QualityThresholds(0.97, 0.50, (40.0, 410.0), (0.04, 0.80), 0.02, 0.95)
    assert QualityThresholds.most_lenient([strict, loose, mixed]) == QualityThresholds(
        0.90, 0.50, (40.0, 420.0), (0.02, 0.80), 0.10, 0.88
    )
    assert QualityThresholds.from_config({"quality": loose.to_config()}) == loose


def test_from_ensemble_takes_the_most_lenient_member_limits_for_an_unlisted_set(monkeypatch, caplog):
    monkeypatch.setenv("FETOMETRY_WEIGHTS", str(WEIGHTS))
    assert "duck-net,unext" not in _ensembles()
    with caplog.at_level(logging.WARNING, logger="fetometry.inference.predictor"):
        predictor = Predictor.from_weights("unext,duck-net")
    expected = _lenient([QualityThresholds.from_config(_config(n)) for n in ("unext", "duck-net")])
    assert predictor.config.thresholds == expected
    assert predictor.config.quality_calibration["calibrated"] is False
    assert any("not calibrated" in r.getMessage() for r in caplog.records)


def _fake_member(folder: Path, quality: dict | None) -> Path:
    """A copy of the shipped UNeXt's folder (weights linked) with the given quality block."""
    folder.mkdir(parents=True)
    (folder / "model.safetensors").symlink_to(WEIGHTS / "unext" / "model.safetensors")
    shutil.copy(WEIGHTS / "unext" / "split.json", folder / "split.json")
    config = {k: v for k, v in _config("unext").items() if k not in ("quality", "quality_calibration")}
    if quality is not None:
        config["quality"] = quality
    (folder / "config.json").write_text(json.dumps(config))
    return folder


A = {
    "min_confidence": 0.80,
    "min_axis_ratio": 0.60,
    "hc_range_mm": [40.0, 400.0],
    "extent_range": [0.02, 0.70],
    "max_clipped_fraction": 0.05,
    "min_mask_fit_iou": 0.93,
}
C = {
    "min_confidence": 0.90,
    "min_axis_ratio": 0.50,
    "hc_range_mm": [50.0, 450.0],
    "extent_range": [0.03, 0.80],
    "max_clipped_fraction": 0.12,
    "min_mask_fit_iou": 0.88,
}
STORED = {
    "min_confidence": 0.77,
    "min_axis_ratio": 0.55,
    "hc_range_mm": [45.0, 410.0],
    "extent_range": [0.025, 0.75],
    "max_clipped_fraction": 0.08,
    "min_mask_fit_iou": 0.9,
}


@pytest.fixture
def fake_root(tmp_path, monkeypatch) -> Path:
    """A weights root with members a, b (listed together in ensembles.json), c and d (no block)."""
    root = tmp_path / "weights"
    _fake_member(root / "a", A)
    _fake_member(root / "b", C)
    _fake_member(root / "c", C)
    _fake_member(root / "d", None)
    entry = {"members": ["a", "b"], "quality": STORED, "quality_calibration": {"date": "2026-01-01"}}
    (root / "ensembles.json").write_text(json.dumps({"ensembles": {"a,b": entry}}))
    monkeypatch.setenv("FETOMETRY_WEIGHTS", str(root))
    return root


def test_from_ensemble_listed_and_unlisted_on_a_controlled_root(fake_root, caplog):
    listed = Predictor.from_ensemble(["b", "a"])
    assert listed.config.thresholds == QualityThresholds.from_config({"quality": STORED})
    assert listed.config.quality_calibration["date"] == "2026-01-01"

    with caplog.at_level(logging.WARNING, logger="fetometry.inference.predictor"):
        unlisted = Predictor.from_ensemble(["a", "c"])
    lenient = unlisted.config.thresholds
    # Each limit from whichever member is more lenient there (a for some, c for others).
    assert lenient == QualityThresholds(0.80, 0.50, (40.0, 450.0), (0.02, 0.80), 0.12, 0.88)
    assert any("not calibrated" in r.getMessage() for r in caplog.records)

    # A member without a block counts with the defaults, and the warning names it.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="fetometry.inference.predictor"):
        with_default = Predictor.from_ensemble(["a", "d"])
    assert with_default.config.thresholds == _lenient(
        [QualityThresholds.from_config({"quality": A}), DEFAULT_THRESHOLDS]
    )
    assert str(fake_root / "d") in " ".join(r.getMessage() for r in caplog.records)


def test_a_folder_outside_the_root_is_not_taken_for_a_listed_member(fake_root, tmp_path):
    """The stored block is for the root's own folders: another folder named "a" is not them."""
    elsewhere = _fake_member(tmp_path / "elsewhere" / "a", A)
    predictor = Predictor.from_ensemble([str(elsewhere), "b"])
    assert predictor.config.quality_calibration["calibrated"] is False
    assert predictor.config.thresholds == _lenient([QualityThresholds.from_config({"quality": q}) for q in (A, C)])


def test_a_bad_stored_block_fails_loudly(fake_root):
    data = json.loads((fake_root / "ensembles.json").read_text())
    data["ensembles"]["a,b"]["quality"]["date"] = "2026-01-01"  # provenance inside the block
    (fake_root / "ensembles.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="unknown quality thresholds"):
        Predictor.from_ensemble(["a", "b"])
