"""Extending fetometry without touching it: a new model and a new data-set layout, each
registered in this module alone, run through ``fetometry.data.load``, the one Predictor
and ``fetometry.pipeline.measure_batch``."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import fetometry.data
from fetometry.data import loaders
from fetometry.data.sample import Sample
from fetometry.inference.predictor import Predictor
from fetometry.models import create_model, register_model, registry
from fetometry.models.base import SegmentationNetwork
from fetometry.pipeline import OK, measure_batch

TOY_MODEL = ("toy-bright-is-head", "tiny")
TOY_LAYOUT = "toy-scans"


class BrightIsHead(SegmentationNetwork):
    """Toy feed-forward segmenter: logits = 8 x - 4 (bright pixels are head)."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(1, 1, 1)
        with torch.no_grad():
            self.head.weight.fill_(8.0)
            self.head.bias.fill_(-4.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 1, H, W) -> logits (B, 1, H, W)."""
        return self.head(images)


def _is_toy_layout(root: Path) -> bool:
    return (root / "frames").is_dir() and (root / "frames.tsv").is_file()


def load_toy_scans(root, *, require_masks: bool = False) -> list[Sample]:
    """frames/*.png with a frames.tsv of name<TAB>pixel size (mm)."""
    root = Path(root)
    with (root / "frames.tsv").open() as handle:
        sizes = {row[0]: float(row[1]) for row in csv.reader(handle, delimiter="\t")}
    if require_masks:
        raise FileNotFoundError(f"{root}: the toy layout has no masks")
    return [
        Sample(name=p.name, image_path=p, subject=p.stem, pixel_size_mm=sizes.get(p.name), source=TOY_LAYOUT)
        for p in sorted((root / "frames").glob("*.png"))
    ]


@pytest.fixture
def toy_registrations():
    """Register the toy model and the toy layout; remove both afterwards."""
    register_model(*TOY_MODEL, size_divisor=1)(BrightIsHead)
    loaders.register_loader(TOY_LAYOUT, detect=_is_toy_layout, needs="frames/*.png and frames.tsv")(load_toy_scans)
    try:
        yield
    finally:
        registry._REGISTRY.pop(TOY_MODEL, None)
        loaders._LOADERS.pop(TOY_LAYOUT, None)


def _write_toy_dataset(root: Path) -> Path:
    """Two frames with a bright ellipse (the 'head') on a dark background."""
    (root / "frames").mkdir(parents=True)
    rows, cols = np.ogrid[:96, :128]
    lines = []
    for i, (a, b) in enumerate([(40, 28), (34, 24)]):
        head = ((rows - 48) / b) ** 2 + ((cols - 64) / a) ** 2 <= 1
        Image.fromarray(np.where(head, 230, 20).astype(np.uint8)).save(root / "frames" / f"scan{i}.png")
        lines.append(f"scan{i}.png\t0.9")
    (root / "frames.tsv").write_text("\n".join(lines) + "\n")
    return root


def test_a_registered_layout_and_model_measure_through_the_one_pipeline(toy_registrations, tmp_path):
    root = _write_toy_dataset(tmp_path / "toy")
    assert fetometry.data.detect_layout(root) == TOY_LAYOUT
    samples = fetometry.data.load(root)
    assert [s.name for s in samples] == ["scan0.png", "scan1.png"]
    assert all(s.pixel_size_mm == 0.9 and s.source == TOY_LAYOUT for s in samples)

    predictor = Predictor(
        create_model(*TOY_MODEL), canvas_hw=(96, 128), config={"model": TOY_MODEL[0], "variant": TOY_MODEL[1]}
    )
    images = [s.load_image() for s in samples]
    results = measure_batch(
        predictor,
        images,
        filenames=[s.name for s in samples],
        pixel_sizes_mm=[s.pixel_size_mm for s in samples],
        plane_checker=None,
    )
    assert [r.status for r in results] == [OK, OK], [r.detail for r in results]
    for result, (a, b) in zip(results, [(40, 28), (34, 24)]):
        expected_hc_mm = np.pi * (3 * (a + b) - np.sqrt((3 * a + b) * (a + 3 * b))) * 0.9
        assert result.measurement.hc_mm == pytest.approx(expected_hc_mm, rel=0.05)


def test_registrations_are_gone_after_the_test(tmp_path):
    assert TOY_MODEL not in registry._REGISTRY
    assert TOY_LAYOUT not in [spec.name for spec in fetometry.data.registered_loaders()]
    root = _write_toy_dataset(tmp_path / "toy")
    with pytest.raises(ValueError, match="hc18: .*folder: "):
        fetometry.data.load(root)
