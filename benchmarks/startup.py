"""Start-up: wall time of a fresh process, from launch to its result, for `measure` and `stream`.

    .venv/bin/python benchmarks/startup.py [--repeats 7] [--baseline-src /path/to/other/checkout/src]

Each run is a new Python process, as a user or a script starts it (the default model and
backend, the plane check on; the ONNX graphs already in the cache, as after a first run):
- ``measure``: ``fetometry measure`` of one bundled 800x540 HC18 image with its pixel size, JSON out;
- ``stream``: ``fetometry stream`` of an 800x540 MJPG loop, stopped after 4 frames
  (``--max-frames 4``: the time to the first measured frames, with the outputs written).

``--baseline-src`` runs the same commands with another checkout's ``src`` first on the
path (e.g. a ``git worktree`` of an earlier commit), interleaved with this one's runs, so
that both see the same machine. Each row: median and spread of the wall times, and whether
the process imported PyTorch or SciPy (read from ``python -X importtime``, one extra run).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
SAMPLES = REPO / "src" / "fetometry" / "assets" / "samples"
SAMPLE = SAMPLES / "training_set" / "345_HC.png"  # a mid-pregnancy head (HC 165 mm)


def sample_pixel_mm() -> str:
    """The sample's pixel size, from the bundled HC18 CSV."""
    for line in (SAMPLES / "training_set_pixel_size_and_HC.csv").read_text().splitlines():
        if line.startswith(SAMPLE.name + ","):
            return line.split(",")[1]
    raise FileNotFoundError(f"{SAMPLE.name} is not in the bundled CSV")


def write_loop(path: Path, frames: int = 30) -> Path:
    """An 800x540 MJPG loop of a synthetic head (fetometry.data.synthetic)."""
    from fetometry.data.synthetic import make_phantom

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (800, 540), False)
    for i in range(frames):
        image = make_phantom(height=540, width=800, rng_or_seed=0, center=(380.0 + i, 290.0)).image
        writer.write(np.round(image * 255).astype(np.uint8))
    writer.release()
    return path


def commands(loop: Path, out: Path) -> dict[str, list[str]]:
    cli = [sys.executable, "-m", "fetometry.cli", "-q"]
    return {
        "measure": [*cli, "measure", str(SAMPLE), "--pixel-size", sample_pixel_mm(), "--json"],
        "stream": [*cli, "stream", str(loop), "--pixel-size", "0.15", "--out", str(out), "--max-frames", "4"],
    }


def run_once(command: list[str], src: str | None) -> float:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    started = time.perf_counter()
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    return time.perf_counter() - started


def imported(command: list[str], src: str | None) -> dict[str, bool]:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = src
    timed = [command[0], "-X", "importtime", *command[1:]]
    log = subprocess.run(timed, env=env, check=True, capture_output=True, text=True, cwd=REPO).stderr
    modules = {line.rsplit("|", 1)[-1].strip() for line in log.splitlines() if line.startswith("import time:")}
    return {"torch": "torch" in modules, "scipy": "scipy" in modules}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--baseline-src", help="another checkout's src folder, run interleaved as 'baseline'")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "startup.json")
    args = parser.parse_args(argv)
    trees = {"this": None} | ({"baseline": args.baseline_src} if args.baseline_src else {})
    with tempfile.TemporaryDirectory() as scratch:
        loop = write_loop(Path(scratch) / "loop.avi")
        jobs = commands(loop, Path(scratch) / "stream")
        for tree, src in trees.items():  # warm-up: the ONNX cache filled, files in the page cache
            for command in jobs.values():
                run_once(command, src)
        times: dict[str, dict[str, list[float]]] = {tree: {job: [] for job in jobs} for tree in trees}
        for _ in range(args.repeats):
            for job, command in jobs.items():
                for tree, src in trees.items():
                    times[tree][job].append(run_once(command, src))
        rows = {
            tree: {
                job: {
                    "median_s": round(statistics.median(values), 3),
                    "min_s": round(min(values), 3),
                    "max_s": round(max(values), 3),
                    "imports": imported(jobs[job], trees[tree]),
                }
                for job, values in by_job.items()
            }
            for tree, by_job in times.items()
        }
    report = {
        "date": date.today().isoformat(),
        "repeats": args.repeats,
        "baseline_src": args.baseline_src,
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for tree, by_job in rows.items():
        for job, row in by_job.items():
            print(
                f"{tree:9s} {job:8s} median {row['median_s']:.2f} s  ({row['min_s']:.2f}-{row['max_s']:.2f})  {row['imports']}"
            )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
