"""Logic of the scripts in benchmarks/ that saves their long runs work, on stand-ins
(the scripts themselves take minutes to hours on the real models)."""

from __future__ import annotations

import importlib.util
import zlib
from pathlib import Path
from types import SimpleNamespace

import pytest

from fetometry.weights_config import WeightsConfig

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"benchmark_script_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def counted_fits(monkeypatch):
    """calibrate_residual replaced by a stand-in that counts its calls."""
    import fetometry.explain.uncertainty as uncertainty

    calls = []

    def fake_fit(predictor, samples, **kwargs):
        calls.append([s.name for s in samples])
        return {"residual_fraction": 0.02 + len(calls) / 1000, "images": len(samples)}

    monkeypatch.setattr(uncertainty, "calibrate_residual", fake_fit)
    return calls


def stand_in(folder: Path, weights: bytes = b"weights", offset: float = 1.0):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(weights)
    return SimpleNamespace(config=WeightsConfig(weights_dir=str(folder), hc_offset_px=offset))


def samples(hc: float = 170.0):
    return [SimpleNamespace(name=f"{i:03d}_HC.png", pixel_size_mm=0.1, hc_mm=hc + i) for i in range(3)]


def test_the_residual_fit_is_computed_once_per_weights_config_and_images(tmp_path, counted_fits):
    explain = load_script("explainability")
    cache = tmp_path / "cache"
    predictor = stand_in(tmp_path / "w")
    first = explain.cached_residual_fit(predictor, samples(), cache)
    again = explain.cached_residual_fit(stand_in(tmp_path / "w"), samples(), cache)  # the second run's own predictor
    assert again == first and len(counted_fits) == 1

    # Anything the fit depends on changed: fitted again, never the other weights' fit.
    other_weights = explain.cached_residual_fit(stand_in(tmp_path / "w", weights=b"retrained"), samples(), cache)
    other_offset = explain.cached_residual_fit(stand_in(tmp_path / "w", offset=1.5), samples(), cache)
    other_images = explain.cached_residual_fit(stand_in(tmp_path / "w"), samples()[:2], cache)
    other_reference = explain.cached_residual_fit(stand_in(tmp_path / "w"), samples(hc=180.0), cache)
    assert len(counted_fits) == 5
    assert (
        len({f["residual_fraction"] for f in (first, other_weights, other_offset, other_images, other_reference)}) == 5
    )


def test_a_predictor_without_a_weights_folder_is_never_cached(tmp_path, counted_fits):
    explain = load_script("explainability")
    ensemble = SimpleNamespace(config=WeightsConfig(members=("a", "b")))
    for _ in range(2):
        explain.cached_residual_fit(ensemble, samples(), tmp_path / "cache")
    assert len(counted_fits) == 2 and not (tmp_path / "cache").exists()


class FakeScorer:
    """score_predictor's stand-in: per-image numbers that depend on the weights' name,
    the noise seed and the image; records the seeds and image counts it scored."""

    def __init__(self):
        self.calls = []

    def __call__(self, predictor, val, *, tta=False, progress=True):
        seed = predictor.model.noise_seed
        self.calls.append((seed, len(val), tta))
        rows = [
            {
                "name": s.name,
                "pixel_size_mm": s.pixel_size_mm,
                "ref_hc_mm": s.hc_mm,
                "dice": 0.9 + zlib.crc32(f"{predictor.weights}/{seed}/{s.name}".encode()) % 1000 / 1e5,
                "pred_hc_mm": s.hc_mm + seed + 0.5 * tta,
            }
            for s in val
        ]
        summary = {
            "dice": sum(r["dice"] for r in rows) / len(rows),
            "dice_ellipse": 0.97,
            "hausdorff_mm": 4.0,
            "hc_mae_mm": 3.0 + seed,
            "tta": tta,
        }
        return {"summary": summary, "rows": rows}


def write_benchmark(folder: Path, scorer, predictor, val, *, tta=False):
    """A benchmark.json with one row of ``predictor`` scored (seed 0) on ``val``."""
    import json

    scored = scorer(predictor, val, tta=tta)
    entry = {"row": {"model": predictor.name}, "summary": scored["summary"], "per_image": scored["rows"]}
    folder.mkdir(parents=True)
    (folder / "benchmark.json").write_text(json.dumps({"models": [entry]}))
    return scored["summary"]


@pytest.fixture
def seeds_script(monkeypatch):
    module = load_script("medsegdiff_seeds")
    scorer = FakeScorer()
    monkeypatch.setattr(module, "score_predictor", scorer)
    return module, scorer


def diffusion(weights="third-leg"):
    return SimpleNamespace(name="medsegdiff-v2", weights=weights, model=SimpleNamespace(noise_seed=0))


def test_seed_0_is_taken_from_the_benchmark_row_of_the_same_weights_and_images(tmp_path, seeds_script):
    seeds, scorer = seeds_script
    val = samples()
    # Two rows of the model: an older weights' first, then these weights'.
    write_benchmark(tmp_path / "benchmark", scorer, diffusion("second-leg"), val)
    stored = write_benchmark(tmp_path / "medsegdiff_tta", scorer, diffusion(), val)
    scorer.calls.clear()

    runs = seeds.score_seeds(diffusion(), val, 3, tta=False, results=tmp_path)
    assert [r["noise_seed"] for r in runs] == [0, 1, 2]
    assert runs[0]["reused_from"].endswith("medsegdiff_tta/benchmark.json") and runs[0]["dice"] == stored["dice"]
    # Seed 0 cost only the probe; seeds 1 and 2 are scored on every image.
    assert scorer.calls == [(0, seeds.PROBE_IMAGES, False), (1, 3, False), (2, 3, False)]
    assert all("reused_from" not in r for r in runs[1:])


@pytest.mark.parametrize("change", ["other weights", "other images", "other reference HC", "tta"])
def test_seed_0_is_scored_when_no_row_matches(tmp_path, seeds_script, change):
    seeds, scorer = seeds_script
    write_benchmark(
        tmp_path / "benchmark", scorer, diffusion("second-leg" if change == "other weights" else "third-leg"), samples()
    )
    scorer.calls.clear()
    val = {"other images": samples()[:2], "other reference HC": samples(hc=171.0)}.get(change, samples())
    tta = change == "tta"

    assert seeds.stored_seed0(diffusion(), val, tta=tta, results=tmp_path) is None
    # Only other weights reach the probe: the rest are refused before scoring anything.
    assert scorer.calls == ([(0, seeds.PROBE_IMAGES, False)] if change == "other weights" else [])
    runs = seeds.score_seeds(diffusion(), val, 1, tta=tta, results=tmp_path)
    assert "reused_from" not in runs[0] and scorer.calls[-1] == (0, len(val), tta)


# ---- gpu_train.py: the canvas pack that carries a data set to a lent GPU


def test_the_gpu_pack_is_the_trainers_own_input_and_a_changed_pack_is_caught(phantom_hc18, tmp_path):
    import cv2

    gpu_train = load_script("gpu_train")
    pack = tmp_path / "pack"
    gpu_train.pack(str(phantom_hc18), pack, (64, 96))
    gpu_train.check(str(phantom_hc18), pack)  # bit-identical: passes
    packed, canvas_hw = gpu_train.load_pack(pack)
    assert canvas_hw == (64, 96) and len(packed) == 24
    mask = packed[0].load_mask()
    assert ((mask > 0) & (mask < 1)).any()  # the soft letterboxed edge survives, not a binary mask
    victim = pack / "images" / packed[0].name
    pixels = cv2.imread(str(victim), cv2.IMREAD_UNCHANGED)
    pixels[10, 10] ^= 1  # one bit of one pixel
    cv2.imwrite(str(victim), pixels)
    with pytest.raises(SystemExit, match=packed[0].name):
        gpu_train.check(str(phantom_hc18), pack)


def test_the_gpu_slot_is_split_by_the_measured_epoch_time():
    epochs_for = load_script("gpu_train").epochs_for
    assert epochs_for(300, 3.0, max_epochs=300) == 90  # 0.9 x 300 s at 3 s per epoch
    assert epochs_for(300, 0.1, max_epochs=200) == 200  # capped
    assert epochs_for(5, 30.0, max_epochs=200) == 1  # at least one epoch


def test_tracked_canvas_moves_a_window_inside_the_frame_and_restores_the_canvas():
    script = load_script("tracked_canvas")
    window = (slice(10, 110), slice(500, 650))
    assert script.moved(window, 8, (540, 800)) == (slice(18, 118), slice(508, 658))
    assert script.moved(window, 8, (115, 655)) == (slice(15, 115), slice(505, 655))  # clipped at the edge
    predictor = SimpleNamespace(canvas_hw=(256, 384))
    with pytest.raises(RuntimeError):
        with script.model_canvas(predictor, (192, 288)):
            assert predictor.canvas_hw == (192, 288)
            raise RuntimeError
    assert predictor.canvas_hw == (256, 384)


def test_hc_error_by_pixel_size_counts_each_head_in_its_bin_in_mm_and_pixels():
    script = load_script("hc_error_by_pixel_size")
    rows = [
        {"pixel_size_mm": 0.05, "hc_mm": 100.0, "error_mm": -1.0},
        {"pixel_size_mm": 0.25, "hc_mm": 300.0, "error_mm": 3.0},
        {"pixel_size_mm": 0.25, "hc_mm": 200.0, "error_mm": 1.0},
    ]
    bins = {tuple(b["pixel_size_mm"]): b for b in script.by_pixel_size(rows)}
    assert set(bins) == {(0.0, 0.1), (0.2, 1.0)}
    assert bins[(0.0, 0.1)] == {
        "pixel_size_mm": [0.0, 0.1],
        "n": 1,
        "hc_mae_mm": 1.0,
        "hc_mae_image_px": 20.0,
        "hc_mae_percent": 1.0,
    }
    assert bins[(0.2, 1.0)]["hc_mae_mm"] == 2.0 and bins[(0.2, 1.0)]["hc_mae_image_px"] == 8.0
    assert bins[(0.2, 1.0)]["hc_mae_percent"] == 0.75


def test_onnx_op_profile_counts_a_convolutions_multiply_adds():
    script = load_script("onnx_op_profile")
    event = {
        "args": {
            "input_type_shape": [{"float": [4, 32, 64, 96]}, {"float": [128, 32, 3, 3]}, {"float": [128]}],
            "output_type_shape": [{"float": [4, 128, 64, 96]}],
        }
    }
    assert script.conv_flops(event) == 2.0 * 4 * 128 * 64 * 96 * 32 * 9
    assert script.conv_flops({"args": {}}) is None


def test_plane_beside_takes_turns_in_a_rotating_order_and_pairs_the_ratios():
    script = load_script("plane_beside")
    order = []
    seconds, outputs = script.take_turns(["a", "b", "c"], [1, 2, 3, 4], lambda name, item: order.append(name) or item)
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b", "a", "b", "c"]
    assert outputs == {"a": [1, 2, 3, 4], "b": [1, 2, 3, 4], "c": [1, 2, 3, 4]}
    assert all(len(v) == 4 for v in seconds.values())
    ratios = script.paired_ratios({"first": [1.0, 2.0, 4.0], "half": [0.5, 1.0, 2.0], "drift": [2.0, 2.0, 2.0]})
    assert ratios == {"first": 1.0, "half": 0.5, "drift": 1.0}


def test_before_after_runs_the_baseline_and_this_tree_alternately(tmp_path, monkeypatch):
    script = load_script("before_after")
    calls = []
    monkeypatch.setattr(script, "worktree", lambda commit, folder: folder)
    monkeypatch.setattr(script, "remove_worktree", lambda folder: calls.append(("removed", folder.name)))
    monkeypatch.setattr(script, "commit_of", lambda tree: "abc1234")
    monkeypatch.setattr(script, "REPO", tmp_path / "this")
    for tree in ("this", "scratch/baseline"):
        (tmp_path / tree / "benchmarks" / "results").mkdir(parents=True)
        (tmp_path / tree / "benchmarks" / "speed.py").write_text("")

    def fake_run(tree, script_args, out):
        calls.append((tree.name, tuple(script_args), out.name))
        return {"report": {"tree": tree.name}}

    monkeypatch.setattr(script, "run_script", fake_run)
    monkeypatch.setattr(script.tempfile, "TemporaryDirectory", lambda: _Here(tmp_path / "scratch"))
    assert script.main(["--baseline", "HEAD~1", "--rounds", "2", "--tag", "t", "--", "speed.py", "--n", "3"]) == 0
    runs = [c for c in calls if c[0] != "removed"]
    assert [c[0] for c in runs] == ["baseline", "this", "baseline", "this"]
    assert all(c[1] == ("speed.py", "--n", "3") for c in runs)
    assert calls[-1] == ("removed", "baseline")
    report = (tmp_path / "this" / "benchmarks" / "results" / "before_after_t.json").read_text()
    assert '"baseline": "abc1234"' in report


class _Here:
    """A TemporaryDirectory stand-in that hands out an existing folder."""

    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> str:
        return str(self.path)

    def __exit__(self, *exc) -> None:
        return None


def test_outside_scan_chooses_its_limit_on_correct_training_frames_only():
    script = load_script("outside_scan")
    rows = [
        {"outside_scan_fraction": 0.0, "hc_error_mm": 1.0, "reference_hc_mm": 200.0},
        {"outside_scan_fraction": 0.108, "hc_error_mm": -2.0, "reference_hc_mm": 200.0},
        {"outside_scan_fraction": 0.5, "hc_error_mm": 30.0, "reference_hc_mm": 200.0},  # 15% off: not correct
        {"outside_scan_fraction": None, "hc_error_mm": None, "reference_hc_mm": 200.0},  # no ellipse
    ]
    assert script.choose_limit(rows) == (0.14, 2)  # 0.108 x 1.25 = 0.135, up to 0.01
    summary = script.summary(
        [
            {
                "passed_without_rule": True,
                "passed_with_rule": False,
                "hc_error_mm": -9.0,
                "rule": "outside_scan",
                "outside_scan_fraction": 0.3,
            },
            {
                "passed_without_rule": True,
                "passed_with_rule": True,
                "hc_error_mm": 1.0,
                "rule": None,
                "outside_scan_fraction": 0.0,
            },
        ]
    )
    assert summary["without_rule"] == {"measured": 2, "hc_mae_mm": 5.0, "hc_abs_error_max_mm": 9.0, "over_5_mm": 1}
    assert summary["with_rule"]["measured"] == 1 and summary["refused_by_outside_scan"] == 1


def test_frame_filling_carries_the_reference_ellipse_past_the_frame_and_bins_by_clipped_share():
    """The reference outline in the rendered frame is the original one moved and scaled by
    the style's map, so its share outside the frame is known even where the mask is cut."""
    import numpy as np

    from fetometry.biometry.ellipse import Ellipse
    from fetometry.biometry.quality import clipped_fraction

    script = load_script("frame_filling")
    original = Ellipse(300.0, 200.0, 150.0, 100.0, 0.0)
    mask = original.to_mask((540, 800))
    moved = script.reference_in_frame(mask, 2.0, (540, 800))
    assert (moved.center_x_px, moved.center_y_px) == pytest.approx((400, 270), abs=0.6)
    assert (moved.semi_major_px, moved.semi_minor_px) == pytest.approx((300, 200), abs=1.5)
    assert clipped_fraction(moved, (540, 800)) == 0.0
    assert clipped_fraction(script.reference_in_frame(mask, 3.0, (540, 800)), (540, 800)) > 0.2
    rows = [
        {"clipped_fraction": 0.0, "rule": None, "status": "ok", "hc_any_mm": 101.0, "ref_hc_mm": 100.0},
        {"clipped_fraction": 0.12, "rule": "clipped", "status": "refused", "hc_any_mm": 97.0, "ref_hc_mm": 100.0},
        {"clipped_fraction": 0.13, "rule": "clipped", "status": "refused", "hc_any_mm": 105.0, "ref_hc_mm": 100.0},
        {"clipped_fraction": None, "rule": "no_head", "status": "refused", "hc_any_mm": None, "ref_hc_mm": 100.0},
    ]
    bins = {b["clipped_from"]: b for b in script.by_clipped_fraction(rows)}
    assert bins[0.0]["n"] == 1 and bins[0.0]["mae_mm"] == 1.0 and bins[0.0]["measured"] == 1
    assert bins[0.10]["n"] == 2 and bins[0.10]["refused_clipped"] == 2
    assert bins[0.10]["mae_mm"] == 4.0 and bins[0.10]["bias_mm"] == 1.0 and bins[0.10]["worst_abs_mm"] == 5.0
    assert bins[0.05] == {"clipped_from": 0.05, "clipped_to": 0.10, "refused_clipped": 0, "measured": 0, "n": 0}
    assert np.isclose(sum(b["n"] for b in bins.values()), 3)


def test_stream_speed_compares_two_streams_frame_by_frame():
    script = load_script("stream_speed")
    fp32 = [
        {"status": "ok", "accepted": "1", "hc_mm": "100.0"},
        {"status": "ok", "accepted": "1", "hc_mm": "110.0"},
        {"status": "refused", "accepted": "0", "hc_mm": ""},
    ]
    int8 = [
        {"status": "ok", "accepted": "1", "hc_mm": "100.5"},
        {"status": "ok", "accepted": "0", "hc_mm": "108.0"},
        {"status": "ok", "accepted": "1", "hc_mm": "90.0"},
    ]
    agreement = script.frame_agreement(fp32, int8, ("fp32", "int8"))
    assert agreement["frames"] == 3 and agreement["same_status"] == 2 and agreement["same_accepted"] == 1
    assert agreement["frames_measured_both"] == 2
    assert agreement["hc_abs_diff_mm_median"] == 1.25 and agreement["hc_abs_diff_mm_max"] == 2.0
    assert agreement["hc_median_mm_fp32"] == 105.0 and agreement["hc_median_mm_int8"] == 104.25


def test_wall_echo_finds_the_walls_a_ring_image_has_lost_and_its_faintest_tenth():
    """A bright skull ring on a darker brain: every outline point has echo; with the ring
    erased within 30 degrees of horizontal, the lateral points have none and the poles keep
    theirs, and the outline without echo is about that erased share."""
    import cv2
    import numpy as np

    from fetometry.biometry.ellipse import Ellipse

    script = load_script("wall_echo")
    head = Ellipse(400.0, 270.0, 180.0, 140.0, 0.0)
    image = np.full((540, 800), 0.2, np.float32)
    cv2.ellipse(image, (400, 270), (180, 140), 0.0, 0, 360, 0.9, 8)
    whole = script.echo_contrast(image, head)[0]
    assert np.nanmin(whole) > 0.8

    y, x = np.mgrid[0:540, 0:800]
    lateral = np.degrees(np.arctan2(np.abs(y - 270), np.abs(x - 400))) <= 30
    erased = np.where(lateral & (image > 0.5), 0.2, image).astype(np.float32)
    contrast, arc, angle = script.echo_contrast(erased, head)
    assert np.nanmedian(contrast[angle <= 20]) < 0.1
    assert np.nanmedian(contrast[angle >= 70]) > 0.8
    unseen = arc[contrast < script.UNSEEN_CONTRAST].sum() / arc.sum()
    erased_share = arc[angle <= 30].sum() / arc.sum()
    assert unseen == pytest.approx(erased_share, abs=0.05)

    rows = [
        {"lateral_contrast": c, "hc_error_mm": e, "reference_hc_mm": 100.0}
        for c, e in [(-0.1, 6.0), (0.5, 1.0)] + [(0.3, 1.0)] * 18
    ]
    tenth = script.faintest_tenth(rows)
    assert tenth == {"heads": 2, "lateral_contrast_at_most": 0.3, "hc_mae_mm": 3.5, "within_5_percent": 1}


def test_wall_loss_sweep_darkens_more_wall_at_a_wider_angle_and_band():
    """Each setting of the sweep takes more of a ring's wall to black as its angle or band
    grows, and keeps the mask and pixel size."""
    import cv2
    import numpy as np

    from fetometry.evaluation.cross_scanner import wall_loss

    script = load_script("wall_loss_sweep")
    image = np.full((540, 800), 0.2, np.float32)
    # A ring wider than the widest band (16% of the 280-pixel minor diameter: 45 px).
    cv2.ellipse(image, (400, 270), (180, 140), 0.0, 0, 360, 0.9, 60)
    mask = np.zeros((540, 800), np.float32)
    cv2.ellipse(mask, (400, 270), (180, 140), 0.0, 0, 360, 1.0, -1)

    def lost(angle, band):
        out, kept, pixel = wall_loss(angle, band)(image, mask, 0.2)
        assert kept is mask and pixel == 0.2
        return np.count_nonzero((image > 0.5) & (out < 0.5))

    assert 0 < lost(30, 0.08) < lost(60, 0.08) < lost(85, 0.08)
    assert lost(60, 0.04) < lost(60, 0.08) < lost(60, 0.16)
    assert (60, 0.08) in script.SETTINGS
