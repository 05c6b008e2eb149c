"""A clinic's own data: a plain folder of images, optional masks and an optional CSV.

Layout of a folder ROOT::

    ROOT/images/<stem>.{png,jpg,jpeg,bmp,tif,tiff}
    ROOT/masks/<stem>.png  or  ROOT/masks/<stem>_mask.png      (optional, per image)
    ROOT/<anything>.csv                                          (optional, at most one)

Masks may be filled head regions or thin drawn outlines (filled on load, per mask).
The CSV uses the HC18 columns ``filename,pixel size(mm)[,head circumference (mm)]`` plus
an optional ``subject`` column; without it the subject comes from the file name
(``010_2HC.png`` -> ``010``, any other name is its own subject). Images that the CSV
does not list get ``pixel_size_mm=None``: reported later, per image, never guessed.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fetometry.data.loaders import register_loader
from fetometry.data.outline import looks_like_outline
from fetometry.data.sample import Sample
from fetometry.data.splits import subject_id
from fetometry.io.images import IMAGE_SUFFIXES, read_mask
from fetometry.io.pixel_size import read_hc18_csv

log = logging.getLogger(__name__)

IMAGES_DIR = "images"
MASKS_DIR = "masks"
MASK_SUFFIX = "_mask"


class FolderDatasetError(ValueError):
    """The folder does not follow the ``images/`` (+ ``masks/`` + CSV) layout."""


def _find_csv(root: Path, csv_path: str | Path | None) -> Path | None:
    if csv_path is not None:
        path = Path(csv_path)
        if not path.is_file():
            raise FolderDatasetError(f"{path}: no such CSV file; pass an existing CSV or none")
        return path
    csvs = sorted(root.glob("*.csv"))
    if len(csvs) > 1:
        raise FolderDatasetError(
            f"{root}: found {len(csvs)} CSV files ({', '.join(p.name for p in csvs)}); "
            "keep one (filename,pixel size(mm)[,head circumference (mm)][,subject]) "
            "or pass csv_path="
        )
    return csvs[0] if csvs else None


def _find_mask(masks_dir: Path, stem: str) -> Path | None:
    for name in (f"{stem}.png", f"{stem}{MASK_SUFFIX}.png"):
        candidate = masks_dir / name
        if candidate.is_file():
            return candidate
    return None


def is_folder_dataset(root: str | Path) -> bool:
    """True if ROOT holds an ``images/`` folder (the clinic folder layout)."""
    return (Path(root) / IMAGES_DIR).is_dir()


@register_loader(
    "folder",
    detect=is_folder_dataset,
    needs=f"{IMAGES_DIR}/ with the images (optional {MASKS_DIR}/ and one CSV of pixel sizes)",
)
def load_folder(root: str | Path, *, csv_path: str | Path | None = None, require_masks: bool = False) -> list[Sample]:
    """List the samples of a clinic's folder, sorted by file name.

    Args:
        root: the folder holding ``images/`` (and optionally ``masks/`` and a CSV).
        csv_path: the pixel-size CSV; by default the one ``*.csv`` file in ``root``.
        require_masks: raise if an image has no mask (for training).

    Raises:
        FolderDatasetError: no ``images/`` folder, no images in it, two images with the
            same stem, several CSVs, or a missing mask with ``require_masks``.
    """
    root = Path(root)
    if not root.is_dir():
        raise FolderDatasetError(f"{root}: not a folder; give the folder that holds {IMAGES_DIR}/")
    images_dir = root / IMAGES_DIR
    if not images_dir.is_dir():
        raise FolderDatasetError(
            f"{root}: no '{IMAGES_DIR}/' folder; put the images in {images_dir} "
            f"(and optional masks in {root / MASKS_DIR})"
        )
    images = sorted(
        (p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
        key=lambda p: p.name,
    )
    if not images:
        raise FolderDatasetError(f"{images_dir}: no images found; supported types are {', '.join(IMAGE_SUFFIXES)}")
    stems: dict[str, str] = {}
    for image in images:
        if image.stem in stems:
            raise FolderDatasetError(
                f"{images_dir}: {stems[image.stem]} and {image.name} share the stem '{image.stem}', "
                "so their masks cannot be told apart; rename one of them"
            )
        stems[image.stem] = image.name

    csv_file = _find_csv(root, csv_path)
    table = read_hc18_csv(csv_file) if csv_file else {}
    if csv_file is not None:
        unknown = sorted(set(table) - set(stems.values()))
        if unknown:
            log.warning("%s lists %d file(s) not in %s, e.g. %s", csv_file.name, len(unknown), images_dir, unknown[0])

    masks_dir = root / MASKS_DIR
    samples, missing_rows, outlines = [], [], 0
    for image in images:
        mask_path = _find_mask(masks_dir, image.stem) if masks_dir.is_dir() else None
        if mask_path is None and require_masks:
            raise FolderDatasetError(
                f"{image.name}: no mask; expected {masks_dir / (image.stem + '.png')} "
                f"or {masks_dir / (image.stem + MASK_SUFFIX + '.png')}"
            )
        # Clinic data may mix filled masks and drawn outlines: decide per mask.
        is_outline = bool(mask_path is not None and looks_like_outline(read_mask(mask_path)))
        outlines += is_outline
        row = table.get(image.name)
        if row is None:
            missing_rows.append(image.name)
            row = {}
        samples.append(
            Sample(
                name=image.name,
                image_path=image,
                subject=row.get("subject") or subject_id(image.name),
                mask_path=mask_path,
                mask_is_outline=is_outline,
                pixel_size_mm=row.get("pixel_size_mm"),
                hc_mm=row.get("hc_mm"),
                source="folder",
            )
        )
    if missing_rows and csv_file is not None:
        log.warning(
            "%s: %d image(s) have no CSV row (no pixel size), e.g. %s",
            csv_file.name,
            len(missing_rows),
            missing_rows[0],
        )
    log.info(
        "folder %s: %d images, %d with masks (%d outlines), CSV %s",
        root,
        len(samples),
        sum(s.mask_path is not None for s in samples),
        outlines,
        csv_file.name if csv_file else "none",
    )
    return samples
