"""One benchmark script, run from another commit's checkout and from this one, alternately.

    .venv/bin/python benchmarks/before_after.py --baseline 2436e67 --rounds 2 \\
        --tag plane_beside -- measure_predict_speed.py --configs unext-scanners:onnx --repeats 2

The baseline commit is checked out into a temporary git worktree. Each round runs the
script from the baseline's tree with the baseline's code (``PYTHONPATH`` puts its
``src`` first), then the same script from this tree with this tree's code, each in a
fresh process with ``--out`` pointing at a scratch file. A machine whose load drifts
then drifts over both columns alike. The reports are collected, as the scripts wrote
them, in ``benchmarks/results/before_after_TAG.json``; the script's own table is printed
after each run.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fetometry.machine import hardware_description

REPO = Path(__file__).resolve().parents[1]


def worktree(commit: str, folder: Path) -> Path:
    """A detached checkout of ``commit`` at ``folder`` (removed by ``remove_worktree``)."""
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(folder), commit], check=True)
    return folder


def remove_worktree(folder: Path) -> None:
    subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(folder)], check=False)


def run_script(tree: Path, script_args: list[str], out: Path) -> dict:
    """``tree``'s benchmarks/SCRIPT with ``tree``'s src first on the path -> its report."""
    env = dict(os.environ, PYTHONPATH=str(tree / "src"))
    script, *rest = script_args
    command = [sys.executable, str(tree / "benchmarks" / script), *rest, "--out", str(out)]
    started = time.perf_counter()
    completed = subprocess.run(command, env=env, cwd=tree, check=True, capture_output=True, text=True)
    print(completed.stdout[-1500:], flush=True)
    return {
        "seconds": round(time.perf_counter() - started, 1),
        "load_avg_after": os.getloadavg(),
        "report": json.loads(out.read_text()),
    }


def commit_of(tree: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", required=True, help="the commit to compare with (a hash, tag or branch)")
    parser.add_argument("--rounds", type=int, default=2, help="baseline, this; repeated ROUNDS times")
    parser.add_argument("--tag", required=True, help="names the results file: results/before_after_TAG.json")
    parser.add_argument("script", nargs=argparse.REMAINDER, help="-- SCRIPT.py [its arguments, without --out]")
    args = parser.parse_args(argv)
    script = [a for a in args.script if a != "--"]
    if not script or not (REPO / "benchmarks" / script[0]).is_file():
        parser.error("give the script after --, e.g. -- measure_predict_speed.py --repeats 2")
    runs: dict[str, list[dict]] = {"baseline": [], "this": []}
    with tempfile.TemporaryDirectory() as scratch:
        baseline = worktree(args.baseline, Path(scratch) / "baseline")
        try:
            if not (baseline / "benchmarks" / script[0]).is_file():
                parser.error(f"{script[0]} does not exist at {args.baseline}")
            for round_ in range(args.rounds):
                for name, tree in (("baseline", baseline), ("this", REPO)):
                    print(f"round {round_ + 1}/{args.rounds}: {name}", flush=True)
                    runs[name].append(run_script(tree, script, Path(scratch) / f"{name}_{round_}.json"))
            commits = {"baseline": commit_of(baseline), "this": commit_of(REPO)}
        finally:
            remove_worktree(baseline)
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "src"], capture_output=True, text=True)
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "hardware": hardware_description(),
        "what": f"benchmarks/{' '.join(script)}, run from a checkout of {commits['baseline']} (baseline) and "
        f"of this tree, alternately, {args.rounds} rounds",
        "commits": commits,
        "this_tree_had_uncommitted_src_changes": bool(dirty.stdout.strip()),
        "runs": runs,
    }
    out = REPO / "benchmarks" / "results" / f"before_after_{args.tag}.json"
    out.write_text(json.dumps(report, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
