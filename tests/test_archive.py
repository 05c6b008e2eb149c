"""``fetometry predict --engine ray``: the local engine's rows, Parquet shards, resume."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from fetometry.archive.shards import ArchiveLayout, Manifest, check_complete, result_offsets, temporary
from fetometry.pipeline import UNREADABLE, ImageInput, ImageResult

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "fetometry" / "assets" / "samples" / "training_set"


# --------------------------------------------------------------------------- no Ray needed


def test_a_torn_manifest_line_is_ignored(tmp_path):
    manifest = Manifest(tmp_path / "manifest.jsonl")
    manifest.append({"first": 4, "last": 7, "rows": 4})
    manifest.append({"first": 0, "last": 3, "rows": 4})
    with manifest.path.open("a") as handle:
        handle.write('{"first": 8, "la')  # killed mid-append
    assert [e["first"] for e in manifest.entries()] == [0, 4]
    check_complete(manifest.entries(), 8)
    with pytest.raises(ValueError, match="cover 8 of 9"):
        check_complete(manifest.entries(), 9)
    manifest.append({"first": 8, "last": 8, "rows": 1})  # the resumed run's entry starts a line of its own
    check_complete(manifest.entries(), 9)


def test_a_gap_between_shards_is_reported():
    with pytest.raises(ValueError, match="inputs 4-7 unmeasured"):
        check_complete([{"first": 0, "last": 3}, {"first": 8, "last": 9}], 10)


def test_result_offsets_follow_the_local_engines_order():
    inputs = [ImageInput(Path(name)) for name in ("a.png", "bad.png", "b.png", "c.png")]
    # Unreadable rows come out at once, readable ones when their batch is full.
    results = [ImageResult("bad.png", UNREADABLE), *(ImageResult(n, "ok") for n in ("a.png", "b.png", "c.png"))]
    assert result_offsets(inputs, results) == [1, 0, 2, 3]


# --------------------------------------------------------------------------- on a local Ray


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray of 2 CPUs for the module; the tests skip without the [ray] extra."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("pyarrow")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    """Six sample images, a corrupt file, two DICOMs, in a tree, with a pixel-size CSV."""
    from fetometry.io.dicom import write_ultrasound_dicom
    from fetometry.io.images import read_image

    root = tmp_path_factory.mktemp("archive")
    images = sorted(SAMPLES.glob("*_HC.png"))
    for path in images[:6]:
        shutil.copy(path, root / path.name)
    (root / "003_broken.png").write_bytes(b"\x89PNG truncated")
    pixels = read_image(images[6])
    write_ultrasound_dicom(root / "300_scan.dcm", pixels, pixel_size_mm=0.15)
    write_ultrasound_dicom(root / "301_loop.dcm", np.stack([pixels, pixels]), pixel_size_mm=0.15)
    with (root / "sizes.csv").open("w") as handle:
        handle.write("filename,pixel size(mm)\n" + "".join(f"{p.name},0.12\n" for p in images[:6]))
    return root


@pytest.fixture(scope="module")
def local_out(archive, tmp_path_factory) -> Path:
    from fetometry.pipeline import predict_path

    out = tmp_path_factory.mktemp("local")
    predict_path(archive, out, pixel_csv=archive / "sizes.csv", progress=False, plane_check="off")
    return out


def _ray_run(archive: Path, out: Path, **options):
    from fetometry.archive import run_archive

    kwargs = dict(pixel_csv=archive / "sizes.csv", plane_check="off", shard_batches=1, actors=2)
    kwargs.update(threads_per_actor=1, progress=False, **options)
    return run_archive(archive, out, **kwargs)


def _masks(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "masks").glob("*.png"))}


def test_ray_rows_are_the_local_engines_rows(local_ray, archive, local_out, tmp_path):
    import pyarrow.parquet as pq

    summary = _ray_run(archive, tmp_path / "ray")
    assert (tmp_path / "ray" / "measurements.csv").read_bytes() == (local_out / "measurements.csv").read_bytes()
    assert _masks(tmp_path / "ray") == _masks(local_out)
    assert summary.inputs == 9 and summary.counts == {"ok": 7, "unreadable": 2}
    assert sorted(name for name, _ in summary.failures) == ["003_broken.png", "301_loop.dcm"]
    table = pq.read_table(ArchiveLayout(tmp_path / "ray").shards).to_pylist()
    assert [row["input_index"] for row in sorted(table, key=lambda r: r["input_index"])] == list(range(9))
    by_name = {row["filename"]: row for row in table}
    assert by_name["300_scan.dcm"]["pixel_size_mm"] == pytest.approx(0.15)  # the DICOM's own calibration
    assert by_name["001_HC.png"]["hc_mm"] > 0 and by_name["001_HC.png"]["path"].endswith("001_HC.png")


@pytest.mark.slow
def test_a_killed_run_resumes_without_duplicates_or_gaps(local_ray, archive, local_out, tmp_path):
    out = tmp_path / "ray"
    _ray_run(archive, out)
    layout = ArchiveLayout(out)
    # What a kill leaves: the last shard written but not recorded, a half-written file, no CSV.
    lines = layout.manifest.read_text().splitlines()
    lost = json.loads(lines[-1])
    layout.manifest.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])
    temporary(layout.shard_path(99, ".parquet")).write_bytes(b"half")
    layout.csv.unlink()
    with pytest.raises(FileExistsError, match="--resume"):
        _ray_run(archive, out)
    summary = _ray_run(archive, out, resume=True)
    assert summary.measured_now == lost["rows"] and summary.resumed == 9 - lost["rows"]
    assert layout.csv.read_bytes() == (local_out / "measurements.csv").read_bytes()
    with layout.csv.open() as handle:
        names = [row["filename"] for row in csv.DictReader(handle)]
    assert len(names) == len(set(names)) == 9


@pytest.mark.slow
def test_cli_ray_engine_on_a_list_file(local_ray, archive, tmp_path, capsys):
    from fetometry.cli import main

    listing = tmp_path / "inputs.txt"
    listing.write_text(f"{archive / '001_HC.png'}\n{archive / 'missing.png'}\n")
    out = tmp_path / "out"
    args = ["-q", "predict", str(listing), "--out", str(out), "--engine", "ray", "--plane-check", "off"]
    assert main([*args, "--pixel-size", "0.12", "--actors", "1", "--threads-per-actor", "1"]) == 0
    text = capsys.readouterr()
    assert "2 images" in text.out and "1 ok, 1 unreadable" in text.out
    assert json.loads((out / "summary.json").read_text())["counts"] == {"ok": 1, "unreadable": 1}
