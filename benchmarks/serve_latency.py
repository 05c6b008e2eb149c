"""Latency of `POST /api/measure` (and `/api/report`) with the default model on this CPU.

    OMP_NUM_THREADS=1 taskset -c 1 .venv/bin/python benchmarks/serve_latency.py [--repeats 30]

The server runs in its own process (uvicorn, 127.0.0.1, the app of `fetometry serve`);
the model is loaded before timing starts. Each timed request is measured at the client
from sending the request to having the whole response, so a latency INCLUDES: the HTTP
round trip on loopback, the multipart upload of the bundled HC18 sample (345_HC.png,
800x540 PNG, 146 KB), content sniffing and PNG decoding, letterboxing and the model's
forward pass, the probability map back on the original grid, the robust ellipse fit,
HC/BPD/OFD, the clinical summary (GA estimates; centile when a GA is sent) and the JSON
response. It EXCLUDES loading the model and starting the server. Requests are sent one
at a time (no queueing). Writes benchmarks/results/serve_latency.json and prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

from fetometry import __version__
from fetometry.resources import SAMPLES_DIR

SAMPLE = SAMPLES_DIR / "training_set" / "345_HC.png"
SAMPLE_PIXEL_MM = "0.130960682505"
SERVER = """
import sys, uvicorn
from fetometry.serve.app import ServeSettings, create_app
app = create_app(ServeSettings(model=sys.argv[2] or None))
app.state.service.cache.get(app.state.service.cache.default_model)
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
"""
CASES = {
    "measure": ("/api/measure", {"pixel_size_mm": SAMPLE_PIXEL_MM}),
    "measure + GA (centile)": ("/api/measure", {"pixel_size_mm": SAMPLE_PIXEL_MM, "ga_weeks": "20"}),
    "measure + Grad-CAM": ("/api/measure", {"pixel_size_mm": SAMPLE_PIXEL_MM, "explain": "gradcam"}),
    "report (PDF)": ("/api/report", {"pixel_size_mm": SAMPLE_PIXEL_MM, "ga_weeks": "20"}),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(model: str | None) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-c", SERVER, str(port), model or ""])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with status {process.returncode}")
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return process, url
        except httpx.TransportError:
            time.sleep(0.2)
    process.terminate()
    raise RuntimeError("the server did not answer within 180 s")


def time_case(client: httpx.Client, path: str, fields: dict, repeats: int, warmup: int) -> list[float]:
    content = SAMPLE.read_bytes()
    latencies = []
    for i in range(warmup + repeats):
        started = time.perf_counter()
        response = client.post(path, files={"file": (SAMPLE.name, content, "image/png")}, data=fields)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:300]}")
        if i >= warmup:
            latencies.append(elapsed * 1000)
    return latencies


def summarise(latencies: list[float]) -> dict:
    ordered = sorted(latencies)
    return {
        "n": len(ordered),
        "median_ms": round(statistics.median(ordered), 1),
        "p90_ms": round(ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))], 1),
        "mean_ms": round(statistics.fmean(ordered), 1),
        "min_ms": round(ordered[0], 1),
        "max_ms": round(ordered[-1], 1),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="shipped model name (default: the default model)")
    parser.add_argument("--repeats", type=int, default=30, help="timed requests for 'measure' (others: a third)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "serve_latency.json")
    args = parser.parse_args()

    process, url = start_server(args.model)
    try:
        results = {}
        with httpx.Client(base_url=url, timeout=300) as client:
            for name, (path, fields) in CASES.items():
                repeats = args.repeats if name == "measure" else max(5, args.repeats // 3)
                results[name] = summarise(time_case(client, path, fields, repeats, args.warmup))
                print(f"{name}: {results[name]}", file=sys.stderr)
    finally:
        process.terminate()
        process.wait(30)
    record = {
        "benchmark": "serve_latency",
        "what": "client-side wall time per request on loopback; includes upload, decode, model, ellipse fit, "
        "measurement, clinical summary and response; excludes model loading (see the script docstring)",
        "model": args.model or "attention-unet (default)",
        "image": f"{SAMPLE.name} (800x540 PNG, {SAMPLE.stat().st_size // 1024} KB)",
        "results": results,
        "hardware": {
            "cpu": platform.processor() or platform.machine(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "cpu_affinity": sorted(os.sched_getaffinity(0)),
            "cpu_count": os.cpu_count(),
            "load_average_1min": round(os.getloadavg()[0], 2),
            "python": platform.python_version(),
        },
        "fetometry": __version__,
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print("| request | median ms | p90 ms | n |\n|---|---|---|---|")
    for name, row in results.items():
        print(f"| {name} | {row['median_ms']} | {row['p90_ms']} | {row['n']} |")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
