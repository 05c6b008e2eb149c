"""Stream speed: frames per second end to end on an 800x540 cine loop, PyTorch vs onnxruntime
(float32, and int8 quantised).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/stream_speed.py [--model unext] [--frames 60]
        [--backends torch,onnx,onnx-int8] [--plane off,1,8,8:fixed] [--track on,off] [--fresh 3]

``--track on,off`` runs the stream with and without its window tracking (one network pass
per frame instead of the still image's two when the head is small) and compares the two
frame by frame (tracking_agreement). ``--plane`` adds variants with the plane check (SonoNet-16 on every k-th frame and on
any frame whose view changed, the frames between carrying its verdict; "k:fixed" without
the view rule); "off" is the stream without it.

End to end = what `fetometry stream` does after the model is loaded: open and decode the
loop (MJPG AVI, or a DICOM cine with --format dicom), segment (Predictor.predict_batch),
fit the ellipse, measure, quality gate, temporal consistency and smoothing, write
frames.csv and best_frame.png. The loop is a synthetic phantom head (fetometry.data.
synthetic) drifting and growing over the frames. Both backends run in the same process on
the same file, median of --repeats runs each; the ratio onnx / torch is of those medians.
"torch" is the Predictor as shipped: PyTorch eager (no compilation), bf16 autocast,
channels_last; "torch-fp32" the same without autocast (plain fp32 eager); "onnx-int8" the
shipped onnxruntime predictor over the graph quantised as ``benchmarks/quantize.py`` does
(static QDQ int8, calibrated on 64 canvases of the model's training split in --data), with
its frames compared to onnx's one by one (int8_agreement). A per-stage breakdown
(sequential, no threads) shows where the time goes.

``--fresh N`` also times the default command from a fresh process, start-up included:
``fetometry stream LOOP --pixel-size MM --out DIR`` (the default model, backend and plane
schedule), N times; frames / wall time of the whole process is the rate "from start-up".

The machine's state is recorded honestly: threads used, CPU affinity and load averages
before and after (other processes, e.g. training, share the cores).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from fetometry.data.hc18 import load_hc18
from fetometry.data.synthetic import make_phantom
from fetometry.inference.backend import build_predictor
from fetometry.inference.predictor import Predictor
from fetometry.io.video import open_source
from fetometry.pipeline import plane_checker_for, result_from_prediction
from fetometry.resources import SAMPLES_DIR
from fetometry.stream.plane_schedule import DEFAULT_MAX_VIEW_CHANGE
from fetometry.stream.processor import assess_frame, run_stream
from fetometry.training.trainer import hardware_description

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from quantize import int8_stream_predictor  # noqa: E402

HEIGHT, WIDTH = 540, 800
PIXEL_SIZE_MM = 0.15
#: The bundled HC18 sample of ``--loop held`` (a 120 mm second-trimester head).
HELD_SAMPLE = "164_2HC.png"


class Fp32Predictor(Predictor):
    """The shipped Predictor without bf16 autocast: plain PyTorch eager in fp32."""

    @torch.no_grad()
    def _probabilities(self, canvases: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(canvases)[:, None].contiguous(memory_format=torch.channels_last)
        return self._forward_proba(x)[:, 0].numpy()


def make_predictor(model: str, backend: str, data: str, work: Path) -> Predictor:
    """torch (as shipped: bf16 autocast), torch-fp32 (no autocast), onnx, or onnx-int8
    (its graph quantised into ``work``, calibrated on training images in ``data``)."""
    if backend == "onnx-int8":
        return int8_stream_predictor(model, data, work)
    if backend == "torch-fp32":
        shipped = build_predictor(model, "torch")
        return Fp32Predictor(
            shipped.model, canvas_hw=shipped.canvas_hw, threshold=shipped.threshold, config=shipped.config
        )
    return build_predictor(model, backend)


def phantom_loop(n_frames: int, *, seed: int = 0) -> np.ndarray:
    """(N, 540, 800) float32: one head drifting right and growing by about 10% over the loop."""
    frames = []
    for i in range(n_frames):
        t = i / max(1, n_frames - 1)
        phantom = make_phantom(
            height=HEIGHT,
            width=WIDTH,
            rng_or_seed=seed,
            semi_major_px=150.0 * (1 + 0.1 * t),
            semi_minor_px=118.0 * (1 + 0.1 * t),
            angle_rad=0.25,
            center=(360.0 + 80.0 * t, 290.0),
            pixel_size_mm=PIXEL_SIZE_MM,
        )
        frames.append(phantom.image)
    return np.stack(frames)


def held_head_loop(head: np.ndarray, n_frames: int, *, seed: int = 0) -> np.ndarray:
    """(N, 540, 800) float32: a real head under a probe held by hand: fresh speckle every
    frame (multiplicative, SD 0.5 blurred at 1 px), a sway of 20 px over 3 s and a turn of
    3 degrees over 4 s at 30 frames/s (up to 1.4 px and 0.16 degrees a frame)."""
    rng = np.random.default_rng(seed)
    head = cv2.resize(head.astype(np.float32), (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    frames = []
    for t in range(n_frames):
        matrix = cv2.getRotationMatrix2D((WIDTH / 2, HEIGHT / 2), 3.0 * np.sin(2 * np.pi * t / 120), 1.0)
        matrix[0, 2] += 20.0 * np.sin(2 * np.pi * t / 90)
        frames.append(with_fresh_speckle(cv2.warpAffine(head, matrix, (WIDTH, HEIGHT)), rng))
    return np.stack(frames)


def with_fresh_speckle(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A frame as the next acquisition sees it: multiplicative speckle, SD 0.5 blurred at 1 px."""
    speckle = cv2.GaussianBlur(rng.standard_normal(frame.shape).astype(np.float32), (0, 0), 1.0)
    return np.clip(frame * (1 + 0.5 * speckle), 0, 1)


def bundled_head(name: str = HELD_SAMPLE) -> tuple[np.ndarray, float]:
    """(image, pixel size mm) of one of the HC18 samples shipped with the package."""
    sample = next(s for s in load_hc18(SAMPLES_DIR) if s.name == name)
    return sample.load_image(), float(sample.pixel_size_mm)


def write_loop(frames: np.ndarray, folder: Path, kind: str, pixel_size_mm: float = PIXEL_SIZE_MM) -> Path:
    if kind == "dicom":
        from fetometry.io.dicom import write_ultrasound_dicom

        return write_ultrasound_dicom(folder / "loop.dcm", frames, pixel_size_mm=pixel_size_mm, frame_time_ms=1000 / 30)
    path = folder / "loop.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (WIDTH, HEIGHT), False)
    for frame in frames:
        writer.write(np.round(frame * 255).astype(np.uint8))
    writer.release()
    return path


def stream_once(
    predictor: Predictor,
    loop: Path,
    backend: str,
    plane: str = "off",
    *,
    track: bool = True,
    rows: list | None = None,
    pixel_size_mm: float = PIXEL_SIZE_MM,
) -> tuple[float, float, dict]:
    """One end-to-end pass: open + run_stream (read, segment, [plane check], fit, measure,
    gate, write). ``plane``: "off"; k, the plane classifier on every k-th frame and on any
    frame whose view changed (``stream.plane_schedule``, as `fetometry stream` runs it);
    or "k:fixed", on every k-th frame only;
    ``track``: the stream's window tracking; ``rows``: filled with frames.csv's rows.

    Returns (wall s, CPU s of this process, summary)."""
    checker = None if plane == "off" else plane_checker_for("on")
    every, _, view_rule = plane.partition(":")
    with tempfile.TemporaryDirectory() as out:
        wall, cpu = time.perf_counter(), time.process_time()
        with open_source(loop, pixel_size_mm=pixel_size_mm) as source:
            summary = run_stream(
                source,
                predictor,
                out,
                backend=backend,
                progress=False,
                plane_checker=checker,
                plane_every=1 if plane == "off" else int(every),
                max_view_change=None if view_rule == "fixed" else DEFAULT_MAX_VIEW_CHANGE,
                track=track,
            )
        elapsed = time.perf_counter() - wall, time.process_time() - cpu
        if rows is not None:
            with open(Path(out) / "frames.csv", newline="") as handle:
                rows.extend(csv.DictReader(handle))
        return *elapsed, summary


def variant_name(backend: str, plane: str, track: bool) -> str:
    return backend + ("" if plane == "off" else f"+plane/{plane}") + ("" if track else "+untracked")


def end_to_end(
    predictors: dict[str, Predictor],
    loop: Path,
    repeats: int,
    planes: tuple[str, ...] = ("off",),
    tracks: tuple[bool, ...] = (True,),
    pixel_size_mm: float = PIXEL_SIZE_MM,
) -> dict[str, dict]:
    """Median over repeats per backend, plane and tracking setting; runs interleave
    (torch, onnx, torch, ...) so that a change of load on the machine hits every variant alike."""
    variants = {
        variant_name(name, plane, track): (name, plane, track)
        for name in predictors
        for plane in planes
        for track in tracks
    }
    runs: dict[str, list] = {key: [] for key in variants}
    for _ in range(repeats):
        for key, (name, plane, track) in variants.items():
            runs[key].append(stream_once(predictors[name], loop, name, plane, track=track, pixel_size_mm=pixel_size_mm))
    results = {}
    for name, passes in runs.items():
        wall = statistics.median(p[0] for p in passes)
        cpu = statistics.median(p[1] for p in passes)
        summary = passes[-1][2]
        results[name] = {
            "runs_s": [round(p[0], 3) for p in passes],
            "median_s": round(wall, 3),
            "fps": round(summary["frames"] / wall, 2),
            # CPU seconds of this process per frame: what a dedicated core would need
            # (an estimate; contention also slows the CPU work itself through caches).
            "cpu_ms_per_frame": round(cpu * 1000 / summary["frames"], 1),
            "frames": summary["frames"],
            "frames_accepted": summary["frames_accepted"],
            "frames_tracked": summary["frames_tracked"],
            "frames_plane_checked": summary["frames_plane_checked"],
            "frames_plane_checked_for_view_change": summary["frames_plane_checked_for_view_change"],
            "hc_mm_median_accepted": summary["hc_mm_median_accepted"],
        }
    return results


def tracking_agreement(predictor: Predictor, loop: Path, pixel_size_mm: float = PIXEL_SIZE_MM) -> dict:
    """Per frame, the tracked stream against the untracked one (every frame as a still
    image): HC difference (mm) and status agreement."""
    tracked, untracked = [], []
    stream_once(predictor, loop, "agreement", track=True, rows=tracked, pixel_size_mm=pixel_size_mm)
    stream_once(predictor, loop, "agreement", track=False, rows=untracked, pixel_size_mm=pixel_size_mm)
    return frame_agreement(tracked, untracked, ("tracked", "untracked"))


def int8_agreement(fp32: Predictor, int8: Predictor, loop: Path, pixel_size_mm: float = PIXEL_SIZE_MM) -> dict:
    """Per frame, the int8 graph's stream against the float32 one's (both tracked, no plane check)."""
    rows_fp32, rows_int8 = [], []
    stream_once(fp32, loop, "agreement", rows=rows_fp32, pixel_size_mm=pixel_size_mm)
    stream_once(int8, loop, "agreement", rows=rows_int8, pixel_size_mm=pixel_size_mm)
    return frame_agreement(rows_fp32, rows_int8, ("fp32", "int8"))


def frame_agreement(rows_a: list[dict], rows_b: list[dict], names: tuple[str, str]) -> dict:
    """Two streams' frames.csv rows, frame by frame: status and verdict agreement, HC
    |difference| (mm) over the frames both measured."""
    pairs = [(a, b) for a, b in zip(rows_a, rows_b) if a["hc_mm"] and b["hc_mm"]]
    diffs = [abs(float(a["hc_mm"]) - float(b["hc_mm"])) for a, b in pairs]
    return {
        "frames": len(rows_a),
        "same_status": sum(a["status"] == b["status"] for a, b in zip(rows_a, rows_b)),
        "same_accepted": sum(a["accepted"] == b["accepted"] for a, b in zip(rows_a, rows_b)),
        "frames_measured_both": len(pairs),
        "hc_abs_diff_mm_median": round(statistics.median(diffs), 4) if diffs else None,
        "hc_abs_diff_mm_max": round(max(diffs), 4) if diffs else None,
        f"hc_median_mm_{names[0]}": round(statistics.median(float(a["hc_mm"]) for a, _ in pairs), 3) if pairs else None,
        f"hc_median_mm_{names[1]}": round(statistics.median(float(b["hc_mm"]) for _, b in pairs), 3) if pairs else None,
    }


def fresh_process(loop: Path, frames: int, repeats: int, pixel_size_mm: float) -> dict:
    """The default `fetometry stream` command in a new process, start-up included."""
    walls = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as out:
            command = [sys.executable, "-m", "fetometry.cli", "-q", "stream", str(loop)]
            command += ["--pixel-size", str(pixel_size_mm), "--out", out]
            started = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
            walls.append(time.perf_counter() - started)
    wall = statistics.median(walls)
    return {"runs_s": [round(w, 3) for w in walls], "median_s": round(wall, 3), "fps": round(frames / wall, 2)}


def stages(predictor: Predictor, frames: np.ndarray, n: int = 12) -> dict:
    """Sequential wall and CPU ms per frame of each stage, on n frames in batches."""
    images = list(frames[:n])
    n = len(images)
    timings: dict[str, float] = {}

    def timed(name: str, work):
        wall, cpu = time.perf_counter(), time.process_time()
        out = work()
        timings[f"{name}_wall_ms"] = round((time.perf_counter() - wall) * 1000 / n, 1)
        timings[f"{name}_cpu_ms"] = round((time.process_time() - cpu) * 1000 / n, 1)
        return out

    batch = predictor.batch_size
    predictions = timed(
        "segment", lambda: [p for i in range(0, n, batch) for p in predictor.predict_batch(images[i : i + batch])]
    )
    window = predictor.next_window(predictions[0])
    if window is not None:
        timed(
            "segment_tracked",
            lambda: [p for i in range(0, n, batch) for p in predictor.predict_in_window(images[i : i + batch], window)],
        )
    results = timed(
        "fit_measure", lambda: [result_from_prediction(predictor, "f", p, PIXEL_SIZE_MM) for p in predictions]
    )
    timed("quality_gate", lambda: [assess_frame(r, image.shape) for image, r in zip(images, results)])
    return timings


def machine_state() -> dict:
    return {
        "load_avg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "cpu_affinity": sorted(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="unext")
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--format", choices=("avi", "dicom"), default="avi")
    parser.add_argument(
        "--loop",
        choices=("phantom", "held"),
        default="phantom",
        help=f"phantom: a synthetic head drifting and growing; held: the bundled HC18 sample {HELD_SAMPLE} under a "
        "hand-held probe (fresh speckle every frame, a sway and a turn)",
    )
    parser.add_argument(
        "--backends", default="torch,torch-fp32,onnx", help="comma-separated: torch, torch-fp32, onnx, onnx-int8"
    )
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "hc18"), help="HC18 (onnx-int8)")
    parser.add_argument("--fresh", type=int, default=0, help="also time N fresh `fetometry stream` processes")
    parser.add_argument(
        "--plane",
        default="off",
        help="comma-separated plane-check settings: off; k (classifier on every k-th frame and on any frame whose "
        "view changed, as `fetometry stream`); k:fixed (every k-th frame only), e.g. off,1,8,8:fixed",
    )
    parser.add_argument(
        "--track", default="on", help="comma-separated tracking settings of the stream: on, off (e.g. on,off)"
    )
    parser.add_argument("--note", default="", help="free text stored in the JSON (e.g. what else ran)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "stream_speed.json"))
    args = parser.parse_args(argv)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "hardware": hardware_description(),
        "model": args.model,
        "loop": {"height": HEIGHT, "width": WIDTH, "frames": args.frames, "format": args.format, "kind": args.loop},
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "note": args.note,
        "machine_before": machine_state(),
        "backends": {},
    }
    if args.loop == "held":
        head, pixel_size_mm = bundled_head()
        frames = held_head_loop(head, args.frames)
    else:
        frames, pixel_size_mm = phantom_loop(args.frames), PIXEL_SIZE_MM
    with tempfile.TemporaryDirectory() as work:
        loop = write_loop(frames, Path(work), args.format, pixel_size_mm)
        predictors = {}
        for backend in args.backends.split(","):
            try:
                predictors[backend] = make_predictor(args.model, backend, args.data, Path(work))
            except (ImportError, FileNotFoundError) as error:
                report["backends"][backend] = {"error": f"backend unavailable: {error}"}
                continue
            predictors[backend].predict_batch(list(frames[: predictors[backend].batch_size]))  # warm-up
        tracks = tuple(value == "on" for value in args.track.split(","))
        variants = end_to_end(predictors, loop, args.repeats, tuple(args.plane.split(",")), tracks, pixel_size_mm)
        if len(tracks) > 1:
            first = next(iter(predictors.values()))
            report["tracking_agreement"] = tracking_agreement(first, loop, pixel_size_mm)
            print(f"tracked vs untracked: {report['tracking_agreement']}", flush=True)
        if "onnx" in predictors and "onnx-int8" in predictors:
            report["int8_agreement"] = int8_agreement(predictors["onnx"], predictors["onnx-int8"], loop, pixel_size_mm)
            print(f"int8 vs fp32: {report['int8_agreement']}", flush=True)
        if args.fresh:
            report["fresh_process"] = fresh_process(loop, args.frames, args.fresh, pixel_size_mm)
            print(f"fresh `fetometry stream` process: {report['fresh_process']}", flush=True)
        for backend, result in variants.items():
            result["stages_sequential"] = stages(predictors[backend.split("+")[0]], frames)
            report["backends"][backend] = result
            print(
                f"{backend}: {result['fps']} fps end to end (runs {result['runs_s']} s, {result['cpu_ms_per_frame']} CPU ms/frame), stages {result['stages_sequential']}",
                flush=True,
            )
    report["machine_after"] = machine_state()
    fps = {name: r.get("fps") for name, r in report["backends"].items()}
    if fps.get("torch") and fps.get("onnx"):
        report["onnx_over_torch_fps"] = round(fps["onnx"] / fps["torch"], 3)
        cpu = {name: report["backends"][name]["cpu_ms_per_frame"] for name in ("torch", "onnx")}
        report["torch_over_onnx_cpu_ms_per_frame"] = round(cpu["torch"] / cpu["onnx"], 3)
    if fps.get("onnx-int8") and fps.get("onnx"):
        report["int8_over_fp32_fps"] = round(fps["onnx-int8"] / fps["onnx"], 3)
    if fps.get("torch-fp32") and fps.get("onnx"):
        report["onnx_over_torch_fp32_fps"] = round(fps["onnx"] / fps["torch-fp32"], 3)
    report["target_fps"] = 60
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(json.dumps({k: report[k] for k in ("machine_before", "machine_after")}, indent=None))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    sys.exit(main())
