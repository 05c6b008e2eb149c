"""`fetometry demo`: the default model on the bundled HC18 samples.

Writes the predict outputs (measurements.csv, masks/), an overlay figure and a Markdown
table comparing the predicted HC with the sonographer's reference HC.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fetometry import DISCLAIMER
from fetometry.data.hc18 import load_hc18
from fetometry.formatting import fmt, markdown_table
from fetometry.inference.predictor import Predictor
from fetometry.pipeline import ImageInput, predict_images, write_predictions
from fetometry.report.figures import save_overlay_grid
from fetometry.resources import SAMPLES_DIR

log = logging.getLogger(__name__)


def run_demo(out_dir: str | Path, *, model: str | None = None, progress: bool = True) -> dict:
    out_dir = Path(out_dir)
    samples = load_hc18(SAMPLES_DIR)
    predictor = Predictor.from_weights(model)
    inputs = [ImageInput.from_sample(s) for s in samples]
    results = predict_images(predictor, inputs, progress=progress)
    write_predictions(results, out_dir)
    references = [s.hc_mm for s in samples]
    images = [s.load_image() for s in samples]
    figure = save_overlay_grid(
        images,
        results,
        references,
        out_dir / "demo_overlay.png",
        title=f"fetometry demo: {predictor.name} on HC18 samples (CC BY 4.0)",
    )
    table = _markdown_table(results, references)
    (out_dir / "demo_table.md").write_text(table + "\n\n" + DISCLAIMER + "\n")
    return {"table": table, "figure": figure, "results": results}


def _markdown_table(results, references) -> str:
    header = ["image", "HC mm", "reference HC mm", "error mm", "BPD mm", "OFD mm", "CI", "status"]
    rows, errors = [], []
    for result, reference in zip(results, references):
        m = result.measurement
        if m is None:
            rows.append([result.filename, "", fmt(reference, 1, missing=""), "", "", "", "", result.status])
            continue
        error = m.hc_mm - reference if reference is not None else None
        if error is not None:
            errors.append(abs(error))
        values = (m.hc_mm, reference, None, m.bpd_mm, m.ofd_mm, m.cephalic_index)
        cells = [fmt(v, 1, missing="") for v in values]
        cells[2] = "" if error is None else f"{error:+.2f}"
        rows.append([result.filename, *cells, result.status])
    table = markdown_table(header, rows)
    if errors:
        table += f"\n\nMean absolute HC error on these {len(errors)} images: {sum(errors) / len(errors):.2f} mm"
    return table
