"""``fetometry predict`` (the local engine) reads DICOMs, list files and globs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from fetometry.archive.listing import iter_folder, iter_input_paths
from fetometry.io.archive_input import read_input
from fetometry.io.dicom import write_ultrasound_dicom
from fetometry.io.images import ImageReadError, read_image
from fetometry.pipeline import NO_PIXEL_SIZE, OK, UNREADABLE, collect_inputs, predict_path

SAMPLES = Path(__file__).resolve().parents[1] / "src" / "fetometry" / "assets" / "samples" / "training_set"


def _sample(index: int = 0) -> Path:
    return sorted(SAMPLES.glob("*_HC.png"))[index]


def test_single_frame_dicom_reads_with_its_pixel_size(tmp_path):
    pixels = read_image(_sample())
    read = read_input(write_ultrasound_dicom(tmp_path / "a.dcm", pixels, pixel_size_mm=0.15))
    assert read.kind == "dicom" and read.pixel_size_mm == pytest.approx(0.15)
    assert read.pixels.shape == pixels.shape


def test_multi_frame_dicom_is_refused_with_a_reason(tmp_path):
    path = write_ultrasound_dicom(tmp_path / "loop.dcm", np.zeros((3, 64, 64), np.float32), pixel_size_mm=0.15)
    with pytest.raises(ImageReadError, match="multi-frame DICOM .3 frames.*fetometry stream"):
        read_input(path)


def test_predict_measures_dicoms_beside_images(tmp_path):
    pixels = read_image(_sample())
    shutil.copy(_sample(), tmp_path / _sample().name)
    write_ultrasound_dicom(tmp_path / "b_scan.dcm", pixels, pixel_size_mm=0.15)
    write_ultrasound_dicom(tmp_path / "c_nocal.dcm", pixels)
    write_ultrasound_dicom(tmp_path / "d_loop.dcm", np.stack([pixels, pixels]), pixel_size_mm=0.15)
    results = {r.filename: r for r in predict_path(tmp_path, tmp_path / "out", progress=False, plane_check="off")}
    assert results["b_scan.dcm"].status == OK and results["b_scan.dcm"].pixel_size_mm == pytest.approx(0.15)
    assert results["c_nocal.dcm"].status == NO_PIXEL_SIZE and "DICOM" in results["c_nocal.dcm"].detail
    assert results["d_loop.dcm"].status == UNREADABLE and "multi-frame" in results["d_loop.dcm"].detail
    png = results[_sample().name]
    # The same pixels measure the same in px, whichever file carries them.
    assert png.ellipse.semi_major_px == pytest.approx(results["b_scan.dcm"].ellipse.semi_major_px, abs=0.05)


def test_a_stated_pixel_size_overrides_the_dicom_header(tmp_path):
    write_ultrasound_dicom(tmp_path / "a.dcm", read_image(_sample()), pixel_size_mm=0.15)
    (result,) = predict_path(tmp_path / "a.dcm", tmp_path / "out", pixel_size_mm=0.2, progress=False, plane_check="off")
    assert result.pixel_size_mm == pytest.approx(0.2)


def test_list_file_and_glob_inputs(tmp_path):
    (tmp_path / "sub").mkdir()
    for name in ("b.png", "a.png", "sub/c.png", "sub/note.md"):
        (tmp_path / name).write_bytes(b"x")
    listing = tmp_path / "inputs.txt"
    listing.write_text("# scans\nsub/c.png\n\na.png\nmissing.png\n")
    assert [p.name for p in iter_input_paths(listing)] == ["c.png", "a.png", "missing.png"]
    assert [i.path.name for i in collect_inputs(listing)] == ["c.png", "a.png", "missing.png"]
    assert [p.name for p in iter_input_paths(str(tmp_path / "**" / "*.png"))] == ["a.png", "b.png", "c.png"]
    # A flat folder lists what the local engine lists; a tree adds its sub-folders after.
    assert [p.name for p in iter_folder(tmp_path)] == ["a.png", "b.png", "c.png"]
    assert [i.path.name for i in collect_inputs(tmp_path)] == ["a.png", "b.png"]


def test_a_listed_file_that_is_missing_gets_an_unreadable_row(tmp_path):
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"{_sample()}\n{tmp_path / 'gone.png'}\n")
    results = predict_path(listing, tmp_path / "out", progress=False, plane_check="off")
    assert {r.filename: r.status for r in results}["gone.png"] == UNREADABLE
