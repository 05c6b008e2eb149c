"""fetometry.data: HC18 and folder loaders, subject-grouped splits, augmentation."""

from __future__ import annotations

import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

from fetometry.data.augment import Augmenter, AugmentError
from fetometry.data.folder import FolderDatasetError, load_folder
from fetometry.data.hc18 import is_hc18_layout, load_hc18
from fetometry.data.splits import kfold_subjects, split_samples, subject_id
from fetometry.data.synthetic import make_phantom, write_phantom_dataset

SHARED_HC18 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hc18"


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


# --------------------------------------------------------------------------- HC18


@pytest.fixture(scope="module")
def hc18_pair(tmp_path_factory):
    """The same 4 phantoms written twice: filled annotations and 2-px outlines."""
    base = tmp_path_factory.mktemp("hc18")
    filled = write_phantom_dataset(base / "filled", 4, seed=21, outline=False)
    outline = write_phantom_dataset(base / "outline", 4, seed=21, outline=True)
    return filled, outline


def test_hc18_filled_and_outline_annotations_give_the_same_mask(hc18_pair):
    filled_root, outline_root = hc18_pair
    filled, outline = load_hc18(filled_root, require_masks=True), load_hc18(outline_root, require_masks=True)
    assert (
        [s.name for s in filled]
        == [s.name for s in outline]
        == ["000_HC.png", "001_2HC.png", "001_HC.png", "002_HC.png"]
    )
    assert not any(s.mask_is_outline for s in filled)
    assert all(s.mask_is_outline for s in outline)
    for f, o in zip(filled, outline):
        mask_f, mask_o = f.load_mask(), o.load_mask()
        raw_outline = cv2.imread(str(o.mask_path), cv2.IMREAD_UNCHANGED) > 0
        assert raw_outline.sum() < 0.1 * mask_f.sum()  # the file really is a thin curve
        assert _iou(mask_f, mask_o) > 0.97
        # The disagreement is a band at most 2 px wide along the edge (the drawn line).
        disagree = (mask_f ^ mask_o).astype(np.uint8)
        near_edge = cv2.dilate(mask_f.astype(np.uint8), np.ones((5, 5), np.uint8)) - cv2.erode(
            mask_f.astype(np.uint8), np.ones((5, 5), np.uint8)
        )
        assert not (disagree & (1 - near_edge)).any()


def test_hc18_samples_carry_csv_values_and_subjects(hc18_pair):
    filled_root, _ = hc18_pair
    samples = {s.name: s for s in load_hc18(filled_root)}
    rows = (filled_root / "training_set_pixel_size_and_HC.csv").read_text().splitlines()[1:]
    for row in rows:
        name, pixel_size, hc = row.split(",")
        assert samples[name].pixel_size_mm == pytest.approx(float(pixel_size))
        assert samples[name].hc_mm == pytest.approx(float(hc))
    assert samples["001_2HC.png"].subject == samples["001_HC.png"].subject == "001"
    assert samples["000_HC.png"].source == "hc18"
    image = samples["000_HC.png"].load_image()
    assert image.shape == (540, 800) and image.dtype == np.float32
    assert is_hc18_layout(filled_root)


def test_hc18_csv_missing_an_image_gives_no_pixel_size(tmp_path, hc18_pair):
    root = tmp_path / "hc18"
    shutil.copytree(hc18_pair[0], root)
    csv_path = root / "training_set_pixel_size_and_HC.csv"
    lines = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(line for line in lines if not line.startswith("002_HC.png")) + "\n")
    samples = {s.name: s for s in load_hc18(root)}
    assert samples["002_HC.png"].pixel_size_mm is None and samples["002_HC.png"].hc_mm is None
    assert samples["000_HC.png"].pixel_size_mm is not None


def test_hc18_missing_annotation(tmp_path, hc18_pair):
    root = tmp_path / "hc18"
    shutil.copytree(hc18_pair[0], root)
    (root / "training_set" / "002_HC_Annotation.png").unlink()
    assert {s.name: s.mask_path for s in load_hc18(root)}["002_HC.png"] is None
    with pytest.raises(FileNotFoundError, match="002_HC_Annotation.png"):
        load_hc18(root, require_masks=True)


def test_hc18_test_set_layout_without_annotations(tmp_path):
    test_dir = tmp_path / "test_set"
    test_dir.mkdir()
    for i in range(3):
        phantom = make_phantom(rng_or_seed=i, height=64, width=96)
        assert cv2.imwrite(str(test_dir / f"{i:03d}_HC.png"), np.round(phantom.image * 255).astype(np.uint8))
    (tmp_path / "test_set_pixel_size.csv").write_text(
        "filename,pixel size(mm)\n000_HC.png,0.1\n001_HC.png,0.2\n002_HC.png,0.3\n"
    )
    samples = load_hc18(tmp_path)
    assert [s.name for s in samples] == ["000_HC.png", "001_HC.png", "002_HC.png"]
    assert [s.pixel_size_mm for s in samples] == [0.1, 0.2, 0.3]
    assert all(s.mask_path is None and s.hc_mm is None for s in samples)
    with pytest.raises(ValueError, match="no annotation"):
        samples[0].load_mask()
    with pytest.raises(FileNotFoundError, match="Annotation"):
        load_hc18(tmp_path, require_masks=True)


def test_hc18_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load_hc18(tmp_path / "absent")
    (tmp_path / "training_set").mkdir()
    with pytest.raises(FileNotFoundError, match="no HC18 images"):
        load_hc18(tmp_path)
    assert not is_hc18_layout(tmp_path)


# --------------------------------------------------------------------------- splits


@dataclass(frozen=True)
class Item:
    name: str
    subject: str


def _items(n_subjects: int = 120) -> list[Item]:
    items = []
    for i in range(n_subjects):
        items.append(Item(f"{i:03d}_HC.png", subject_id(f"{i:03d}_HC.png")))
        for k in range(2, 2 + i % 3):  # a third of the subjects have 2 images, a third 3
            items.append(Item(f"{i:03d}_{k}HC.png", subject_id(f"{i:03d}_{k}HC.png")))
    return items


@pytest.mark.parametrize(
    ("filename", "subject"),
    [
        ("010_HC.png", "010"),
        ("010_2HC.png", "010"),
        ("010_3HC_Annotation.png", "010"),
        ("training_set/010_2HC.png", "010"),
        ("patient_7.jpg", "patient_7"),
        ("010_HCX.png", "010_HCX"),
    ],
)
def test_subject_id(filename, subject):
    assert subject_id(filename) == subject


def test_split_keeps_subjects_together_and_is_deterministic():
    items = _items()
    splits = split_samples(items, seed=3)
    assert set(splits) == {"train", "val"}
    train_subjects = {i.subject for i in splits["train"]}
    val_subjects = {i.subject for i in splits["val"]}
    assert not train_subjects & val_subjects
    assert "010" in train_subjects | val_subjects
    assert sorted(i.name for s in splits.values() for i in s) == sorted(i.name for i in items)
    assert 0.1 < len(val_subjects) / 120 < 0.3
    shuffled = items[:]
    random.Random(0).shuffle(shuffled)
    again = split_samples(shuffled, seed=3)
    for name in ("train", "val"):
        assert {i.name for i in again[name]} == {i.name for i in splits[name]}
    other = split_samples(items, seed=4)
    assert {i.name for i in other["val"]} != {i.name for i in splits["val"]}


def test_split_is_stable_when_subjects_are_added():
    items = _items(60)
    more = _items(120)
    val = {i.name for i in split_samples(items, seed=0)["val"]}
    val_more = {i.name for i in split_samples(more, seed=0)["val"]}
    assert val == {n for n in val_more if int(n[:3]) < 60}


def test_kfold_every_subject_validated_exactly_once():
    items = _items()
    folds = kfold_subjects(items, k=5, seed=1)
    assert len(folds) == 5
    seen: list[str] = []
    for train, val in folds:
        train_subjects, val_subjects = {i.subject for i in train}, {i.subject for i in val}
        assert not train_subjects & val_subjects
        assert len(train) + len(val) == len(items)
        assert len(val_subjects) in (24,)  # 120 subjects / 5 folds
        seen.extend(val_subjects)
    assert sorted(seen) == sorted({i.subject for i in items})
    # Input order does not matter; a second call gives the same folds.
    shuffled = items[:]
    random.Random(1).shuffle(shuffled)
    for (_, val_a), (_, val_b) in zip(folds, kfold_subjects(shuffled, k=5, seed=1)):
        assert {i.name for i in val_a} == {i.name for i in val_b}
    with pytest.raises(ValueError, match="k >= 2"):
        kfold_subjects(items, k=1)


def test_split_fractions_validation():
    with pytest.raises(ValueError, match="non-negative"):
        split_samples(_items(5), {"train": -1.0, "val": 0.5})


# --------------------------------------------------------------------------- folder


def test_folder_dataset_from_phantoms(tmp_path):
    filled = write_phantom_dataset(tmp_path / "filled", 3, seed=4, layout="folder", size=(270, 400))
    outline = write_phantom_dataset(tmp_path / "outline", 3, seed=4, layout="folder", outline=True, size=(270, 400))
    a, b = load_folder(filled), load_folder(outline)
    assert [s.name for s in a] == ["000_HC.png", "001_2HC.png", "001_HC.png"]
    assert [s.subject for s in a] == ["000", "001", "001"]
    assert all(s.source == "folder" and s.pixel_size_mm is not None and s.hc_mm is not None for s in a)
    assert not any(s.mask_is_outline for s in a) and all(s.mask_is_outline for s in b)
    for x, y in zip(a, b):
        assert x.pixel_size_mm == y.pixel_size_mm
        assert _iou(x.load_mask(), y.load_mask()) > 0.95


def test_folder_mask_suffix_jpeg_and_no_csv(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    phantom = make_phantom(rng_or_seed=0, height=96, width=128)
    pixels = np.round(phantom.image * 255).astype(np.uint8)
    assert cv2.imwrite(str(tmp_path / "images" / "scan b.jpg"), pixels)
    assert cv2.imwrite(str(tmp_path / "images" / "scan_a.PNG"), pixels)
    (tmp_path / "images" / "notes.txt").write_text("not an image")
    assert cv2.imwrite(str(tmp_path / "masks" / "scan_a_mask.png"), np.where(phantom.mask, 255, 0).astype(np.uint8))
    samples = load_folder(tmp_path)
    assert [s.name for s in samples] == ["scan b.jpg", "scan_a.PNG"]
    assert [s.subject for s in samples] == ["scan b", "scan_a"]
    assert samples[0].mask_path is None and samples[0].pixel_size_mm is None
    np.testing.assert_array_equal(samples[1].load_mask(), phantom.mask)
    with pytest.raises(FolderDatasetError, match="scan b.jpg: no mask"):
        load_folder(tmp_path, require_masks=True)


def test_folder_csv_with_subject_and_missing_row(tmp_path):
    (tmp_path / "images").mkdir()
    for name in ("a.png", "b.png", "c.png"):
        assert cv2.imwrite(str(tmp_path / "images" / name), np.full((32, 32), 80, np.uint8))
    (tmp_path / "calibration.csv").write_text(
        "filename,pixel size(mm),subject\na.png,0.1,mother1\nb.png,0.15,mother1\nzzz.png,0.2,x\n"
    )
    samples = {s.name: s for s in load_folder(tmp_path)}
    assert samples["a.png"].subject == samples["b.png"].subject == "mother1"
    assert samples["b.png"].pixel_size_mm == 0.15
    assert samples["c.png"].pixel_size_mm is None and samples["c.png"].subject == "c"
    splits = split_samples(list(samples.values()), seed=0)
    for part in splits.values():
        names = {s.name for s in part}
        assert ("a.png" in names) == ("b.png" in names)


def test_folder_mixed_filled_and_outline_masks(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    phantom = make_phantom(rng_or_seed=3, height=200, width=300)
    for stem, annotation in (("a", phantom.mask), ("b", phantom.outline())):
        assert cv2.imwrite(str(tmp_path / "images" / f"{stem}.png"), np.round(phantom.image * 255).astype(np.uint8))
        assert cv2.imwrite(str(tmp_path / "masks" / f"{stem}.png"), np.where(annotation, 255, 0).astype(np.uint8))
    a, b = load_folder(tmp_path)
    assert (a.mask_is_outline, b.mask_is_outline) == (False, True)
    filled, from_outline = a.load_mask(), b.load_mask()
    # The filled outline covers the head and reaches at most one pixel beyond it.
    assert not (filled & ~from_outline).any()
    grown = cv2.dilate(filled.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert not (from_outline & ~grown).any()


def test_folder_errors(tmp_path):
    with pytest.raises(FolderDatasetError, match="not a folder"):
        load_folder(tmp_path / "absent")
    with pytest.raises(FolderDatasetError, match="no 'images/' folder"):
        load_folder(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "readme.txt").write_text("x")
    with pytest.raises(FolderDatasetError, match="no images found; supported types"):
        load_folder(tmp_path)
    for name in ("scan.png", "scan.jpg"):
        assert cv2.imwrite(str(tmp_path / "images" / name), np.zeros((32, 32), np.uint8))
    with pytest.raises(FolderDatasetError, match="share the stem 'scan'"):
        load_folder(tmp_path)
    (tmp_path / "images" / "scan.jpg").unlink()
    (tmp_path / "one.csv").write_text("filename,pixel size(mm)\n")
    (tmp_path / "two.csv").write_text("filename,pixel size(mm)\n")
    with pytest.raises(FolderDatasetError, match="found 2 CSV files"):
        load_folder(tmp_path)
    assert load_folder(tmp_path, csv_path=tmp_path / "one.csv")[0].name == "scan.png"
    assert issubclass(FolderDatasetError, ValueError)


# --------------------------------------------------------------------------- augment


@pytest.fixture(scope="module")
def pair():
    phantom = make_phantom(rng_or_seed=12, height=256, width=384)
    return phantom.image, phantom.mask


def _geometry_only(**probabilities) -> Augmenter:
    aug = Augmenter(strength=1.0)
    for name in ("P_INTENSITY", "P_GAMMA", "P_SPECKLE", "P_BLUR", "P_SHADOW"):
        setattr(aug, name, 0.0)
    for name, value in probabilities.items():
        setattr(aug, name, value)
    return aug


def test_augment_outputs_types_ranges_and_does_not_modify_inputs(pair):
    image, mask = pair
    before = image.copy(), mask.copy()
    aug = Augmenter(strength=1.0)
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(30):
        out_image, out_mask = aug(image, mask, rng)
        assert out_image.shape == out_mask.shape == image.shape
        assert out_image.dtype == out_mask.dtype == np.float32
        assert 0.0 <= out_image.min() and out_image.max() <= 1.0
        assert 0.0 <= out_mask.min() and out_mask.max() <= 1.0
        # Binary-ish: soft values only on a thin edge, not a blurred blob.
        soft = ((out_mask > 0.05) & (out_mask < 0.95)).sum()
        assert soft < 0.1 * max((out_mask > 0.5).sum(), 1)
        changed += not np.array_equal(out_image, image)
    assert changed >= 25
    np.testing.assert_array_equal(image, before[0])
    np.testing.assert_array_equal(mask, before[1])


def test_augment_strength_zero_is_identity(pair):
    image, mask = pair
    out_image, out_mask = Augmenter(strength=0.0)(image, mask, np.random.default_rng(0))
    np.testing.assert_array_equal(out_image, image)
    np.testing.assert_array_equal(out_mask, mask.astype(np.float32))


def test_augment_is_deterministic_for_a_generator(pair):
    image, mask = pair
    aug = Augmenter()
    a = aug(image, mask, np.random.default_rng(5))
    b = aug(image, mask, np.random.default_rng(5))
    c = aug(image, mask, np.random.default_rng(6))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    seeded = Augmenter(seed=3)(image, mask), Augmenter(seed=3)(image, mask)
    np.testing.assert_array_equal(seeded[0][0], seeded[1][0])


def test_augment_moves_image_and_mask_together(pair):
    _, mask = pair
    as_image = mask.astype(np.float32)
    aug = _geometry_only()
    rng = np.random.default_rng(1)
    for _ in range(10):
        out_image, out_mask = aug(as_image, mask, rng)
        np.testing.assert_allclose(out_image, out_mask, atol=1e-6)


def test_augment_flips(pair):
    image, mask = pair
    hflip = _geometry_only(P_AFFINE=0.0, P_HFLIP=1.0, P_VFLIP=0.0)
    out_image, out_mask = hflip(image, mask, np.random.default_rng(0))
    np.testing.assert_array_equal(out_image, image[:, ::-1])
    np.testing.assert_array_equal(out_mask, mask[:, ::-1])
    vflip = _geometry_only(P_AFFINE=0.0, P_HFLIP=0.0, P_VFLIP=1.0)
    np.testing.assert_array_equal(vflip(image, mask, np.random.default_rng(0))[1], mask[::-1])


def test_augment_geometry_stays_in_range(pair):
    _, mask = pair
    area = mask.sum()
    aug = _geometry_only(P_AFFINE=1.0)
    rng = np.random.default_rng(2)
    ratios = [aug(mask.astype(np.float32), mask, rng)[1].sum() / area for _ in range(40)]
    # Scale 0.85-1.15 changes the area by 0.72-1.32 (less where the head leaves the frame).
    assert min(ratios) > 0.5 and max(ratios) < 0.85**-2
    assert np.ptp(ratios) > 0.1  # scaling really happens


def test_augment_keeps_black_outside_the_fan_black():
    image = np.full((64, 96), 0.5, np.float32)
    image[:, :20] = 0.0  # e.g. letterbox padding or outside the fan
    mask = np.zeros_like(image)
    aug = Augmenter(strength=2.0)
    for name in ("P_AFFINE", "P_HFLIP", "P_VFLIP"):
        setattr(aug, name, 0.0)
    rng = np.random.default_rng(3)
    for _ in range(20):
        out, _ = aug(image, mask, rng)
        assert out[:, :20].max() == 0.0
        assert out[:, 20:].min() >= 0.0


def test_augment_shadow_darkens_a_wedge(pair):
    image, mask = pair
    aug = _geometry_only(P_AFFINE=0.0, P_HFLIP=0.0, P_VFLIP=0.0, P_SHADOW=1.0)
    out, _ = aug(image, mask, np.random.default_rng(4))
    assert (out <= image + 1e-6).all()
    assert ((image - out) > 0.02).sum() > 200


def test_augment_input_validation(pair):
    image, mask = pair
    aug = Augmenter()
    with pytest.raises(AugmentError, match="2D"):
        aug(image[None], mask[None], np.random.default_rng(0))
    with pytest.raises(AugmentError, match="differs from image shape"):
        aug(image, mask[:-1], np.random.default_rng(0))
    for bad in (-1.0, float("nan"), 10.0):
        with pytest.raises(AugmentError, match="strength"):
            Augmenter(strength=bad)


def test_augment_is_fast():
    phantom = make_phantom(rng_or_seed=1, height=256, width=384)
    aug = Augmenter(strength=1.0)
    rng = np.random.default_rng(0)
    durations = []
    for _ in range(60):
        start = time.perf_counter()
        aug(phantom.image, phantom.mask, rng)
        durations.append(time.perf_counter() - start)
    assert float(np.median(durations)) < 0.005


# --------------------------------------------------------------------------- real HC18


@pytest.mark.shared
@pytest.mark.skipif(not SHARED_HC18.is_dir(), reason=f"{SHARED_HC18} not present")
def test_shared_hc18_development_set():
    samples = load_hc18(SHARED_HC18, require_masks=True)
    assert len(samples) == 793
    assert all(s.mask_path is not None and s.mask_path.is_file() for s in samples)
    assert all(s.pixel_size_mm is not None and s.hc_mm is not None for s in samples)
    assert not any(s.mask_is_outline for s in samples)  # the shared copy stores filled masks
    assert len({s.subject for s in samples}) == 634
    splits = split_samples(samples, seed=0)
    train = {s.subject for s in splits["train"]}
    val = {s.subject for s in splits["val"]}
    assert train and val and not train & val
    assert len(splits["train"]) + len(splits["val"]) == 793


# --------------------------------------------------------------------------- load (the loader registry)


def test_load_picks_the_loader_of_the_layout(tmp_path):
    from fetometry.data import load

    hc18 = write_phantom_dataset(tmp_path / "hc18", 6, seed=1, size=(64, 96))
    assert load(hc18) == load_hc18(hc18)
    folder = tmp_path / "clinic"
    shutil.copytree(hc18 / "training_set", folder / "images", ignore=shutil.ignore_patterns("*_Annotation.png"))
    assert load(folder) == load_folder(folder)
    assert {s.source for s in load(folder)} == {"folder"}


def test_load_of_an_unknown_layout_lists_the_layouts_and_what_each_needs(tmp_path):
    from fetometry.data import load, registered_loaders

    assert [spec.name for spec in registered_loaders()][:2] == ["hc18", "folder"]  # HC18 is tried first
    (tmp_path / "scan.txt").write_text("not an image")
    with pytest.raises(
        ValueError, match=r"not a known data-set layout; the layouts are hc18: \*_HC.png .*CSV; folder: images/"
    ):
        load(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a folder"):
        load(tmp_path / "missing")


def test_a_layout_registered_twice_is_refused():
    from fetometry.data import register_loader

    with pytest.raises(ValueError, match="registered twice"):
        register_loader("hc18", detect=lambda root: False)(lambda root, *, require_masks=False: [])


# --------------------------------------------------------------------------- model_split


def _weights_folder(path: Path, recipe: dict, split: dict | None = None) -> Path:
    import json

    path.mkdir(parents=True)
    (path / "config.json").write_text(json.dumps({"training": {"recipe": recipe}}))
    if split is not None:
        (path / "split.json").write_text(json.dumps(split))
    return path


def test_model_split_reads_the_split_json_lists(tmp_path):
    from fetometry.data import model_split

    items = _items(20)
    names = [i.name for i in items]
    folder = _weights_folder(tmp_path / "m", {"val_fraction": 0.2}, {"train": names[5:], "val": names[:5]})
    split = model_split(folder)
    assert split.source == "split.json" and split.members_agree
    assert split.validation(list(reversed(items))) == list(reversed(items[:5]))  # the samples' order
    assert split.names() == {**{n: "train" for n in names[5:]}, **{n: "val" for n in names[:5]}}


def test_model_split_of_a_k_fold_model_without_split_json_is_its_fold(tmp_path, caplog):
    from fetometry.data import model_split

    items = _items(30)
    folder = _weights_folder(tmp_path / "fold1", {"folds": 3, "fold": 1, "split_seed": 4, "val_fraction": 0.5})
    split = model_split(folder)
    assert split.source == "recipe" and "no split.json" in caplog.text
    train, val = kfold_subjects(items, 3, seed=4)[1]
    assert split.select(items) == {"train": train, "val": val}  # folds, not val_fraction
    with pytest.raises(FileNotFoundError, match="no split.json"):
        model_split(folder, source="split.json")


def test_model_split_of_a_fixed_recipe_is_the_subject_split(tmp_path):
    from fetometry.data import model_split

    items = _items(30)
    split = model_split({"training": {"recipe": {"val_fraction": 0.3, "split_seed": 2}}})  # a Predictor's config
    assert split.validation(items) == split_samples(items, {"train": 0.7, "val": 0.3}, seed=2)["val"]
    with pytest.raises(ValueError, match="names its images only for a data set"):
        split.names()


def test_model_split_of_an_ensemble_keeps_images_no_member_trained_on(tmp_path):
    from fetometry.data import model_split

    items = _items(30)
    names = [i.name for i in items]
    a = _weights_folder(tmp_path / "a", {}, {"train": names[10:], "val": names[:10]})
    b = _weights_folder(tmp_path / "b", {}, {"train": names[:5] + names[10:], "val": names[5:10]})
    split = model_split([a, b])
    assert not split.members_agree
    assert [s.name for s in split.validation(items)] == names[5:10]  # names[:5] trained b
    assert [s.name for s in split.select(items)["train"]] == names[10:]  # in every member's train
    c = _weights_folder(tmp_path / "c", {}, {"train": names[12:], "val": names[:12]})
    assert [s.name for s in model_split([a, c]).validation(items)] == names[:10]
    assert [s.name for s in model_split([a, c]).select(items)["train"]] == names[12:]
    # k-fold members from their recipes: fold validation sets are disjoint, so none is left
    folds = [_weights_folder(tmp_path / f"f{k}", {"folds": 3, "fold": k}) for k in range(3)]
    fold_split = model_split(folds, source="recipe")
    assert not fold_split.members_agree and fold_split.validation(items) == []
    twins = model_split([folds[0], folds[0]], source="recipe")
    assert twins.members_agree and twins.validation(items) == kfold_subjects(items, 3)[0][1]
