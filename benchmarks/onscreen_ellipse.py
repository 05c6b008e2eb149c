"""A real head from another centre against its sonographer's own ellipse.

    .venv/bin/python benchmarks/onscreen_ellipse.py [--models unext-scanners,attention-unet,...]

SonoNet's example frame ``BRAIN-TV.png`` (../shared/data/sononet: a UK centre, GE Voluson
E8, a full-screen capture) shows the HC ellipse its sonographer placed, as yellow dots on
the grey image, and the BPD line. That is a reference outline on a real scan from a centre
and scanner that HC18 does not hold. The frame has no pixel size, so everything is in
pixels, and the HC difference is relative (a ratio of perimeters does not need one).

1. The sonographer's ellipse: the coloured pixels (ultrasound grey has R = G = B) below the
   vendor header and right of the grey-scale bar, one point per dot; a robust fit
   (``biometry.ellipse.fit_ellipse``) to them, then a plain one to the dots within 3% of
   its outline (the BPD line's dots lie inside it).
2. The dots and the line are inpainted away (``cv2.inpaint``), so that no model follows
   the sonographer's marks instead of the skull (the first model is also run on the frame
   with its marks, to show whether they would).
3. Each model measures the frame as ``fetometry measure`` does (plane check and quality
   gate on; no pixel size, so no mm). Its HC in pixels is the perimeter of its ellipse with
   its own boundary offset (``measure_ellipse``'s convention: the offset comes off both
   semi-axes), compared with the sonographer's perimeter.

Writes benchmarks/results/onscreen_ellipse.json and an overlay per model
(results/onscreen_ellipse/MODEL.jpg: the sonographer's ellipse in yellow, the model's in
green, around the head). One frame is one head: this is a check that the outline sits where a sonographer
of another centre puts the calipers, not an accuracy figure.
"""

from __future__ import annotations

import argparse
import json
from datetime import date
from pathlib import Path

import cv2
import numpy as np

from fetometry.biometry.ellipse import Ellipse, fit_ellipse
from fetometry.biometry.measures import measure_ellipse
from fetometry.inference.backend import build_predictor
from fetometry.machine import hardware_description
from fetometry.pipeline import measure_batch, plane_checker_for

REPO = Path(__file__).resolve().parents[1]
FRAME = REPO.parent / "shared" / "data" / "sononet" / "example_frames" / "BRAIN-TV.png"
MODELS = "unext-scanners,attention-unet,unext,transunet,duck-net,unext-gpu,attention-unet-gpu,transunet-gpu"
#: The Voluson screen's vendor header (rows above) and grey-scale bar (columns left of it)
#: hold coloured UI marks of their own.
HEADER_ROWS = 75
BAR_COLUMNS = 60
#: Dots within this share of the robust fit's outline are the ellipse's, not the BPD line's.
ON_OUTLINE = 0.03


def marks(rgb: np.ndarray, *, header_rows: int = HEADER_ROWS, bar_columns: int = BAR_COLUMNS) -> np.ndarray:
    """(H, W) bool: the on-screen caliper marks (yellow: red and green well above blue)."""
    pixels = rgb.astype(np.int32)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    coloured = (red > 120) & (green > 120) & (blue < 0.6 * np.minimum(red, green))
    coloured[:header_rows] = False
    coloured[:, :bar_columns] = False
    return coloured


def onscreen_ellipse(rgb: np.ndarray, **layout) -> tuple[Ellipse, dict]:
    """The sonographer's ellipse drawn on ``rgb`` (H, W, 3 RGB), and how it was found."""
    found = marks(rgb, **layout)
    count, _, _, centroids = cv2.connectedComponentsWithStats(found.astype(np.uint8), connectivity=8)
    dots = centroids[1:]
    if len(dots) < 10:
        raise ValueError(f"{len(dots)} coloured marks found: no on-screen ellipse to read")
    robust = fit_ellipse(dots)
    on_outline = np.abs(robust.normalised_radius(dots[:, 0], dots[:, 1]) - 1.0) <= ON_OUTLINE
    ellipse = fit_ellipse(dots[on_outline])
    residual = np.abs(ellipse.normalised_radius(dots[on_outline, 0], dots[on_outline, 1]) - 1.0)
    return ellipse, {
        "marks": int(len(dots)),
        "dots_on_the_ellipse": int(on_outline.sum()),
        "dot_residual_max_fraction": round(float(residual.max()), 4),
    }


def without_marks(rgb: np.ndarray, **layout) -> np.ndarray:
    """(H, W) float32 grey image in [0, 1] with the caliper marks inpainted away."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    # Two pixels around each mark: the dots carry a dark rim.
    around = cv2.dilate(marks(rgb, **layout).astype(np.uint8), np.ones((5, 5), np.uint8))
    return cv2.inpaint(grey, around, 3, cv2.INPAINT_TELEA).astype(np.float32) / 255.0


def hc_px(ellipse: Ellipse, offset_px: float = 0.0) -> float:
    """The ellipse's HC in pixels with ``offset_px`` off both semi-axes: the one measurement
    path (``measure_ellipse``) at one mm per pixel."""
    return measure_ellipse(ellipse, 1.0, offset_px=offset_px).hc_mm


def compare(predictor, image: np.ndarray, reference: Ellipse, checker) -> tuple[dict, Ellipse | None]:
    """One model on the frame as ``fetometry measure`` runs it (``checker``: the plane check,
    or None; the gate on; no pixel size), and its HC in pixels against ``reference``'s."""
    result = measure_batch(predictor, [image], filenames=[FRAME.name], pixel_sizes_mm=[None], plane_checker=checker)[0]
    row = {"status": result.status, "detail": result.detail[:100]}
    if result.ellipse is None:
        return row, None
    e, reference_hc = result.ellipse, hc_px(reference)
    model_hc = hc_px(e, predictor.boundary_offset_px(result.prediction))
    row.update(
        hc_px=round(model_hc, 1),
        hc_difference_percent=round(100 * (model_hc / reference_hc - 1), 2),
        hc_difference_without_offset_percent=round(100 * (hc_px(e) / reference_hc - 1), 2),
        centre_offset_px=round(
            float(np.hypot(e.center_x_px - reference.center_x_px, e.center_y_px - reference.center_y_px)), 1
        ),
        semi_axes_px=[round(e.semi_major_px, 1), round(e.semi_minor_px, 1)],
        confidence=round(result.prediction.confidence, 4),
    )
    return row, e


def draw(image: np.ndarray, reference: Ellipse, model_ellipse: Ellipse | None, path: Path) -> None:
    overlay = cv2.cvtColor((image * 255).astype(np.uint8), cv2.COLOR_GRAY2BGR)
    for ellipse, colour in ((reference, (0, 255, 255)), (model_ellipse, (0, 255, 0))):
        if ellipse is not None:
            centre = (round(ellipse.center_x_px), round(ellipse.center_y_px))
            axes = (round(ellipse.semi_major_px), round(ellipse.semi_minor_px))
            cv2.ellipse(overlay, centre, axes, float(np.degrees(ellipse.angle_rad)), 0, 360, colour, 1, cv2.LINE_AA)
    reach = round(reference.semi_major_px * 1.15)
    x, y = round(reference.center_x_px), round(reference.center_y_px)
    crop = overlay[max(y - reach, 0) : y + reach, max(x - reach, 0) : x + reach]
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), crop, [cv2.IMWRITE_JPEG_QUALITY, 85])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frame", type=Path, default=FRAME)
    parser.add_argument("--models", default=MODELS)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "onscreen_ellipse.json")
    args = parser.parse_args(argv)
    rgb = cv2.cvtColor(cv2.imread(str(args.frame), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    reference, found = onscreen_ellipse(rgb)
    image = without_marks(rgb)
    checker = plane_checker_for("on")
    rows = []
    predictors = [build_predictor(model, "auto") for model in args.models.split(",")]
    for model, predictor in zip(args.models.split(","), predictors):
        row, ellipse = compare(predictor, image, reference, checker)
        draw(image, reference, ellipse, args.out.with_suffix("") / f"{model}.jpg")
        rows.append({"model": model, **row})
        print(json.dumps(row))
    # Whether the marks themselves steer the outline: the first model on the frame as captured.
    marked = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    row, _ = compare(predictors[0], marked, reference, checker)
    rows.append({"model": f"{rows[0]['model']} (marks kept)", **row})
    print(json.dumps(rows[-1]))
    report = {
        "date": date.today().isoformat(),
        "hardware": hardware_description(),
        "frame": str(args.frame.name),
        "sonographer_ellipse": {
            **found,
            "hc_px": round(hc_px(reference), 1),
            "semi_axes_px": [round(reference.semi_major_px, 1), round(reference.semi_minor_px, 1)],
        },
        "models": rows,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
