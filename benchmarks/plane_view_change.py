"""How far a picture may move before the plane verdict it carries can be wrong: the limit of
the stream's plane schedule (``fetometry.stream.plane_schedule``).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/plane_view_change.py [--heads 40]
        [--out benchmarks/results/plane_view_change.json]

1. **Where verdicts change.** Sequences of frames through which SonoNet's verdict changes:
   - fades from each of ``--heads`` HC18 validation heads (the default model's split) to
     each of SonoNet's 11 non-head example planes (the authors' crop, resized to 800x540),
     in 20 steps;
   - the same heads sliding out of the frame (left and down, 40 px a step, the vacated part
     black) and zooming in about their centre (to 2x, in 10 steps).
   From each end of a sequence that SonoNet calls a head plane, the view change to every
   frame of it that it does not (decided without a head size) is where the head plane's
   verdict, carried while the probe moves away, would be wrong. The other way round, a
   carried "not a head plane" only refuses a head a few frames longer. The smallest such view change over all sequences is the bound; the limit is
   half of it, rounded down to 0.01.
2. **What it costs.** The view change between each frame and the frames 1-7 after it in
   loops a stream sees while the probe holds a head: the benchmark's phantom loop
   (``stream_speed.phantom_loop``, a head drifting and growing) and HC18 heads under a
   probe held by hand (``stream_speed.held_head_loop``: fresh speckle every frame, a sway
   of 20 px and a turn of 3 degrees). For each,
   the share of frames the schedule (every 8th frame, and at the limit) sends to the plane
   check, and its carried verdicts against the plane check on every frame.
3. **What it buys.** Sweeps from ``--sweep-heads`` held heads to each non-head plane (16
   frames of the head, an 8-frame fade, 8 of the other plane): the frames that carry a
   head plane's verdict the check on every frame would not give, every 8th frame with and
   without the view rule.
4. **Its price.** The thumbnail's median time per 800x540 frame, beside the one-step resize
   it avoids.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import cv2
import numpy as np

from fetometry.data.hc18 import load_hc18
from fetometry.data.splits import model_split
from fetometry.inference.plane import PlaneChecker
from fetometry.io.images import read_image
from fetometry.machine import hardware_description
from fetometry.resources import resolve_weights
from fetometry.stream.plane_schedule import (
    DEFAULT_PLANE_EVERY,
    THUMBNAIL_HW,
    PlaneSchedule,
    thumbnail,
    view_change,
)

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO / "benchmarks"))
from convert_sononet import EXAMPLE_CROP, EXAMPLE_LABELS  # noqa: E402
from stream_speed import held_head_loop, phantom_loop, with_fresh_speckle  # noqa: E402

HEIGHT, WIDTH = 540, 800
FADE_STEPS = 20
SLIDE_STEP_PX = 40
ZOOMS = np.linspace(1.0, 2.0, 11)
#: The limit is this share of the smallest view change seen with a different verdict.
SAFETY_FACTOR = 0.5


def non_head_planes() -> dict[str, np.ndarray]:
    frames = SHARED / "sononet" / "example_frames"
    planes = {}
    for stem in EXAMPLE_LABELS:
        if stem.startswith("BRAIN"):
            continue
        crop = read_image(frames / f"{stem}.png")[EXAMPLE_CROP]
        planes[stem] = cv2.resize(crop, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)
    return planes


def validation_heads(count: int) -> list[tuple[str, np.ndarray, float]]:
    """(name, 800x540 image, reference HC mm) of the default model's first validation heads."""
    samples = load_hc18(SHARED / "hc18")
    chosen = model_split(resolve_weights("unext-scanners"), source="split.json").validation(samples)[:count]
    return [
        (s.name, cv2.resize(s.load_image(), (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA), float(s.hc_mm))
        for s in chosen
    ]


def slid(image: np.ndarray, dx: int, dy: int) -> np.ndarray:
    return cv2.warpAffine(image, np.float32([[1, 0, dx], [0, 1, dy]]), (WIDTH, HEIGHT))


def zoomed(image: np.ndarray, factor: float) -> np.ndarray:
    matrix = cv2.getRotationMatrix2D((WIDTH / 2, HEIGHT / 2), 0.0, float(factor))
    return cv2.warpAffine(image, matrix, (WIDTH, HEIGHT))


def sequences(heads, planes):
    """(kind, name, reference HC mm, frames) of every sequence of part 1."""
    for name, head, hc_mm in heads:
        for other_name, other in planes.items():
            alphas = np.linspace(0.0, 1.0, FADE_STEPS + 1, dtype=np.float32)
            yield "fade", f"{name}->{other_name}", hc_mm, [(1 - a) * head + a * other for a in alphas]
        yield "slide_left", name, hc_mm, [slid(head, -d, 0) for d in range(0, WIDTH, SLIDE_STEP_PX)]
        yield "slide_down", name, hc_mm, [slid(head, 0, d) for d in range(0, HEIGHT, SLIDE_STEP_PX)]
        yield "zoom", name, hc_mm, [zoomed(head, z) for z in ZOOMS]


def walk(checker: PlaneChecker, frames: list[np.ndarray], hc_mm: float) -> dict:
    """One sequence: its verdicts (H: head plane; decided with the head's reference HC, as
    the pipeline decides with the measured one), the head end's head-plane probability, and
    the smallest view change from the head end to a frame that is not a head plane."""
    results = [r.decide(hc_mm) for r in checker.check_batch(frames)]
    thumbs = [thumbnail(f) for f in frames]
    changes = [view_change(thumbs[0], thumbs[j]) for j, r in enumerate(results) if not r.head_plane]
    return {
        "verdicts": "".join("H" if r.head_plane else "." for r in results),
        "head_end_head_probability": round(results[0].head_probability, 4),
        "head_end_is_head_plane": results[0].head_plane,
        "flip_change": round(min(changes), 4) if changes and results[0].head_plane else None,
    }


def summarise(records: list[dict]) -> tuple[dict, float, str | None]:
    """Per kind of sequence: how many, how many start on a head plane, how many of those
    leave it, and the smallest view change at which they do; then the smallest overall."""
    by_kind: dict[str, dict] = {}
    bound, at = math.inf, None
    for record in records:
        entry = by_kind.setdefault(
            record["kind"], {"sequences": 0, "from_a_head_plane": 0, "leaving_it": 0, "smallest_flip_change": None}
        )
        entry["sequences"] += 1
        entry["from_a_head_plane"] += record["head_end_is_head_plane"]
        change = record["flip_change"]
        if change is None:
            continue
        entry["leaving_it"] += 1
        if entry["smallest_flip_change"] is None or change < entry["smallest_flip_change"]:
            entry["smallest_flip_change"] = change
        if change < bound:
            bound, at = change, f"{record['kind']} {record['name']}"
    return by_kind, bound, at


def motion(loop: list[np.ndarray], limit: float) -> dict:
    thumbs = [thumbnail(f) for f in loop]
    by_lag = {
        lag: [view_change(thumbs[i], thumbs[i + lag]) for i in range(len(thumbs) - lag)]
        for lag in range(1, DEFAULT_PLANE_EVERY)
    }
    schedule = PlaneSchedule(every=DEFAULT_PLANE_EVERY, max_view_change=limit)
    checked = sum(schedule.due(f) for f in loop)
    return {
        "frames": len(loop),
        "view_change_by_lag": {
            lag: {"median": round(float(np.median(v)), 4), "max": round(float(np.max(v)), 4)}
            for lag, v in by_lag.items()
        },
        "checked": checked,
        "checked_for_change": schedule.checked_for_change,
        "checked_share": round(checked / len(loop), 3),
    }


def carried(checker: PlaneChecker, loop: list[np.ndarray], hc_mm: float | None, schedule: PlaneSchedule) -> dict:
    """The verdicts the schedule's frames carry against the plane check on every frame:
    frames that carry a head plane the check would not give (``wrong_head_plane``, the
    unsafe way) and frames that carry a refusal of a head plane (``late_head_plane``)."""
    every_frame = [r.decide(hc_mm).head_plane for r in checker.check_batch(loop)]
    carried_verdicts, verdict = [], None
    for frame, actual in zip(loop, every_frame):
        if schedule.due(frame):
            verdict = actual
        carried_verdicts.append(verdict)
    pairs = list(zip(carried_verdicts, every_frame))
    return {
        "checked": schedule.checked,
        "wrong_head_plane": sum(c and not a for c, a in pairs),
        "late_head_plane": sum(a and not c for c, a in pairs),
    }


def sweep(head: np.ndarray, other: np.ndarray, seed: int) -> list[np.ndarray]:
    """The probe leaves a head for another plane: 16 frames of the held head, an 8-frame
    fade, 8 frames of the other plane (fresh speckle throughout)."""
    held = list(held_head_loop(head, 16, seed=seed))
    rng = np.random.default_rng(seed + 1)
    after = []
    for step in range(16):
        alpha = min(1.0, (step + 1) / 8)
        after.append(with_fresh_speckle((1 - alpha) * held[-1] + alpha * other, rng))
    return held + after


def sweeps(checker: PlaneChecker, heads, planes, limit: float) -> dict:
    """Part 3: every 8th frame with and without the view rule, over heads x planes sweeps."""
    totals = {rule: {"checked": 0, "wrong_head_plane": 0, "late_head_plane": 0} for rule in ("fixed", "view_rule")}
    loops = 0
    for i, (_, head, hc_mm) in enumerate(heads):
        for other in planes.values():
            loop = sweep(head, other, seed=i)
            loops += 1
            for rule, max_view_change in (("fixed", None), ("view_rule", limit)):
                schedule = PlaneSchedule(every=DEFAULT_PLANE_EVERY, max_view_change=max_view_change)
                for key, value in carried(checker, loop, hc_mm, schedule).items():
                    totals[rule][key] += value
    return {"loops": loops, "frames_per_loop": 32, **totals}


def thumbnail_cost(repeats: int = 300) -> dict:
    """Median ms per 800x540 frame of ``thumbnail`` and of the one-step resize it avoids."""
    frame = np.random.default_rng(0).random((HEIGHT, WIDTH), dtype=np.float32)
    height, width = THUMBNAIL_HW

    def median_ms(work) -> float:
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            work()
            times.append(time.perf_counter() - started)
        return round(statistics.median(times) * 1000, 3)

    return {
        "thumbnail_ms": median_ms(lambda: thumbnail(frame)),
        "one_step_resize_ms": median_ms(lambda: cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", type=int, default=40)
    parser.add_argument("--loop-frames", type=int, default=120)
    parser.add_argument("--sweep-heads", type=int, default=5, help="heads of part 3, each swept to every plane")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "plane_view_change.json"))
    args = parser.parse_args(argv)

    checker = PlaneChecker.from_weights()
    heads = validation_heads(args.heads)
    planes = non_head_planes()
    records = [
        {"kind": kind, "name": name, "hc_mm": hc_mm, **walk(checker, frames, hc_mm)}
        for kind, name, hc_mm, frames in sequences(heads, planes)
    ]
    by_kind, bound, at = summarise(records)
    limit = math.floor(bound * SAFETY_FACTOR * 100) / 100 if math.isfinite(bound) else None
    print(f"smallest view change from a head plane to a frame that is not: {bound:.3f} ({at}); limit {limit}")
    for kind, entry in by_kind.items():
        print(kind, entry)

    loops = {"phantom_loop": [f for f in phantom_loop(args.loop_frames)]}
    for i, (name, head, _) in enumerate(heads[:5]):
        loops[f"held_{name}"] = list(held_head_loop(head, args.loop_frames, seed=i))
    costs = {name: motion(loop, limit) for name, loop in loops.items()}
    hc_by_loop = {f"held_{name}": hc_mm for name, _, hc_mm in heads[:5]}
    for name, loop in loops.items():
        schedule = PlaneSchedule(every=DEFAULT_PLANE_EVERY, max_view_change=limit)
        costs[name]["against_every_frame"] = carried(checker, loop, hc_by_loop.get(name), schedule)
    for name, cost in costs.items():
        print(
            name,
            cost["checked"],
            "checked of",
            cost["frames"],
            "lag 1/7 max",
            cost["view_change_by_lag"][1]["max"],
            cost["view_change_by_lag"][7]["max"],
        )

    swept = sweeps(checker, heads[: args.sweep_heads], planes, limit)
    print("sweeps", swept)
    cost = thumbnail_cost()
    print("cost", cost)

    result = {
        "date": datetime.now().strftime("%Y-%m-%d %H:%M"),
        "hardware": hardware_description(),
        "heads": [name for name, _, _ in heads],
        "non_head_planes": sorted(planes),
        "thumbnail": "28x36, standardised (fetometry.stream.plane_schedule.thumbnail)",
        "by_kind": by_kind,
        "smallest_flip_change": round(bound, 4),
        "smallest_flip_at": at,
        "safety_factor": SAFETY_FACTOR,
        "limit": limit,
        "cost": costs,
        "sweeps": swept,
        "view_change_cost": cost,
        "sequences": records,
    }
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print("wrote", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
