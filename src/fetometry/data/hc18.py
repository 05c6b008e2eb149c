"""The HC18 challenge layout (van den Heuvel et al. 2018, doi 10.5281/zenodo.1327317).

Accepted layouts of a folder ROOT:
- training: ``ROOT/training_set/NNN_HC.png`` + ``NNN_HC_Annotation.png`` and
  ``ROOT/training_set_pixel_size_and_HC.csv``; annotations may be thin outlines (the
  official download) or filled masks (``../shared``): both are detected and filled.
- test: ``ROOT/test_set/NNN_HC.png`` + ``ROOT/test_set_pixel_size.csv`` (no annotations).
- or ROOT itself holding the images and one ``*.csv`` beside them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fetometry.data.loaders import register_loader
from fetometry.data.outline import looks_like_outline
from fetometry.data.sample import Sample
from fetometry.data.splits import subject_id
from fetometry.io.images import read_mask
from fetometry.io.pixel_size import read_hc18_csv

log = logging.getLogger(__name__)

ANNOTATION_SUFFIX = "_Annotation"


def _find_image_dir_and_csv(root: Path) -> tuple[Path, Path | None]:
    for sub, csv_name in (
        ("training_set", "training_set_pixel_size_and_HC.csv"),
        ("test_set", "test_set_pixel_size.csv"),
    ):
        if (root / sub).is_dir():
            csv = root / csv_name
            return root / sub, csv if csv.is_file() else None
    csvs = sorted(root.glob("*.csv"))
    if not csvs and root.parent != root:
        csvs = sorted(root.parent.glob("*.csv"))
    return root, csvs[0] if csvs else None


def is_hc18_layout(root: str | Path) -> bool:
    """True if ROOT is an HC18 folder: *_HC.png images with their pixel-size CSV.

    A folder of images without a CSV is a plain image folder, even when some of its
    file names end in HC.png: every image in it is then processed.
    """
    root = Path(root)
    if not root.is_dir():
        return False
    image_dir, csv_path = _find_image_dir_and_csv(root)
    return csv_path is not None and any(image_dir.glob("*HC.png"))


@register_loader(
    "hc18",
    detect=is_hc18_layout,
    needs="*_HC.png images (in training_set/, test_set/ or the folder itself) with their pixel-size CSV",
)
def load_hc18(root: str | Path, *, require_masks: bool = False) -> list[Sample]:
    """List the samples of an HC18 folder, sorted by file name.

    Images without a CSV row get ``pixel_size_mm=None`` (reported later, per image).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder")
    image_dir, csv_path = _find_image_dir_and_csv(root)
    table = read_hc18_csv(csv_path) if csv_path else {}
    images = sorted(p for p in image_dir.glob("*HC.png") if ANNOTATION_SUFFIX not in p.stem)
    if not images:
        raise FileNotFoundError(f"{image_dir}: no HC18 images (*_HC.png) found")
    outline_form: bool | None = None
    samples = []
    for image in images:
        mask = image.with_name(f"{image.stem}{ANNOTATION_SUFFIX}.png")
        mask_path = mask if mask.is_file() else None
        if mask_path is None and require_masks:
            raise FileNotFoundError(f"{image.name}: annotation {mask.name} is missing")
        if mask_path is not None and outline_form is None:
            # One data set uses one annotation form: decide once, on the first mask.
            outline_form = looks_like_outline(read_mask(mask_path))
            log.info("HC18 annotations are %s", "outlines (filled on load)" if outline_form else "filled masks")
        row = table.get(image.name, {})
        samples.append(
            Sample(
                name=image.name,
                image_path=image,
                subject=subject_id(image.name),
                mask_path=mask_path,
                mask_is_outline=bool(outline_form) if mask_path else False,
                pixel_size_mm=row.get("pixel_size_mm"),
                hc_mm=row.get("hc_mm"),
                source="hc18",
            )
        )
    return samples
