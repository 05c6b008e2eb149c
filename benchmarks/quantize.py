"""Does int8 quantisation pay? onnxruntime static QDQ int8 against the fp32 graph of one
model: network speed, and the validation Dice and HC MAE both ways.

    .venv/bin/python benchmarks/quantize.py --model unext-scanners [--calibration 64] [--threads 1]

The int8 graph is calibrated on canvases of the model's TRAINING split (MinMax, per
channel) and scored on its validation split through the one measurement path
(pipeline.predict_images, no gate). The project's rule (the "Every scale" issue): ship a
quantised model only if the validation HC MAE moves by <= 0.05 mm and the Dice by <=
0.001. Writes benchmarks/results/quantize_<model>.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from fetometry.data.loaders import load
from fetometry.data.splits import model_split
from fetometry.data.transforms import letterbox
from fetometry.evaluation.benchmark import score_predictor
from fetometry.inference.backend import build_predictor, cached_onnx
from fetometry.inference.onnx_backend import load_onnx_model
from fetometry.inference.predictor import Predictor
from fetometry.machine import hardware_description

KEYS = ("dice", "hc_mae_mm", "hc_measured")


def quantize(fp32_path: Path, out_path: Path, canvases: np.ndarray) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Canvases(CalibrationDataReader):
        def __init__(self):
            self._items = iter(canvases[:, None, None].astype(np.float32))

        def get_next(self):
            item = next(self._items, None)
            return None if item is None else {"images": item}

    quantize_static(
        str(fp32_path),
        str(out_path),
        Canvases(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    return out_path


def calibration_canvases(predictor: Predictor, data: str | Path, count: int) -> np.ndarray:
    """Up to ``count`` canvases of the model's TRAINING split, evenly spaced over it."""
    train = model_split(predictor.config, source="recipe").select(load(data))["train"]
    return np.stack([letterbox(s.load_image(), predictor.canvas_hw)[0] for s in train[:: max(1, len(train) // count)]])


def int8_stream_predictor(model: str, data: str | Path, work: Path, count: int = 64):
    """The shipped onnxruntime predictor of ``model`` with its graph quantised to int8
    (calibrated as ``main`` does): the one OnnxPredictor class, the default threads."""
    from fetometry.inference.onnx_session import OnnxPredictor, create_session

    fp32 = build_predictor(model, "onnx")
    graph = quantize(cached_onnx(fp32.config.weights_dir), work / "int8.onnx", calibration_canvases(fp32, data, count))
    config = fp32.config.replace(backend="onnxruntime-int8", onnx_path=str(graph))
    return OnnxPredictor(create_session(graph), canvas_hw=fp32.canvas_hw, threshold=fp32.threshold, config=config)


def forward_ms(predictor: Predictor, canvas: np.ndarray, repeats: int = 30) -> float:
    predictor._probabilities(canvas[None])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor._probabilities(canvas[None])
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="unext-scanners")
    parser.add_argument("--data", default="../shared/data/hc18")
    parser.add_argument("--calibration", type=int, default=64, help="training canvases for the int8 ranges")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()

    fp32 = build_predictor(args.model, "onnx")
    val = model_split(fp32.config, source="recipe").select(load(args.data))["val"]
    canvases = calibration_canvases(fp32, args.data, args.calibration)
    with tempfile.TemporaryDirectory() as scratch:
        int8_path = quantize(cached_onnx(fp32.config.weights_dir), Path(scratch) / "int8.onnx", canvases)
        int8 = Predictor(
            load_onnx_model(int8_path, threads=args.threads),
            canvas_hw=fp32.canvas_hw,
            threshold=fp32.threshold,
            config={**fp32.config, "backend": "onnxruntime-int8"},
        )
        fp32 = build_predictor(args.model, "onnx")
        rows = {}
        for name, predictor in (("onnx fp32", fp32), ("onnx int8", int8)):
            summary = score_predictor(predictor, val, progress=True)["summary"]
            rows[name] = {key: summary[key] for key in KEYS} | {"forward_ms": forward_ms(predictor, canvases[0])}
    change = {key: rows["onnx int8"][key] - rows["onnx fp32"][key] for key in ("dice", "hc_mae_mm")}
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "model": args.model,
        "validation_images": len(val),
        "calibration_canvases": len(canvases),
        "threads": args.threads,
        "hardware": hardware_description(),
        "rows": rows,
        "change": change,
        "passes_rule": abs(change["hc_mae_mm"]) <= 0.05 and abs(change["dice"]) <= 0.001,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"quantize_{Path(args.model).name}.json"
    path.write_text(json.dumps(report, indent=2))
    for name, row in rows.items():
        print(
            f"| {name} | {row['dice']:.4f} | {row['hc_mae_mm']:.3f} | {row['hc_measured']} | {row['forward_ms']:.1f} |"
        )
    print("change:", change, "passes:", report["passes_rule"], "->", path)


if __name__ == "__main__":
    main()
