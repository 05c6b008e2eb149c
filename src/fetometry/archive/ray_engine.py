"""``fetometry predict --engine ray``: an archive of images and DICOMs on a Ray cluster.

    listing (driver, streamed to DIR/_archive/listing.jsonl, frozen for resume)
      -> Ray Data: read the listing, decode each input on a worker (readable or not)
      -> driver: cut the ordered inputs into shards of ``shard_batches`` model batches
      -> actor pool: one model load per actor; each shard through ``pipeline.predict_images``
         (the local engine's own loop), written as Parquet + CSV rows + masks, then renamed
      -> driver: manifest line per shard; at the end measurements.csv and summary.json

Why the driver cuts the shards: a probability map depends (slightly) on which images
share its model batch, and the local engine batches the READABLE inputs in listing order.
A shard therefore closes after exactly ``shard_batches * batch_size`` readable inputs,
so every batch an actor forms is a batch the local engine forms, and the rows agree to
the last digit. Decoding on the workers first is what tells the driver which inputs are
readable; the actors decode again (a cost the benchmark counts) rather than ship pixels
through the driver.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import ray
import ray.data
from tqdm import tqdm

from fetometry.archive.shards import (
    ArchiveLayout,
    Manifest,
    assemble_csv,
    check_complete,
    item_from_line,
    write_listing,
    write_pending,
    write_shard,
)

log = logging.getLogger(__name__)

#: A shard is this many model batches unless told otherwise (64 images at batch size 4).
DEFAULT_SHARD_BATCHES = 16
#: CPU a decode task asks for: small, so decoding never waits for the actors' CPUs.
DECODE_CPUS = 0.25
#: At most this many threads per actor by default; more actors scale better than more threads.
MAX_DEFAULT_THREADS = 4
#: The summary lists at most this many failures by name (all are in the Parquet shards).
MAX_LISTED_FAILURES = 100


@dataclass
class RunOptions:
    """What decides the rows; a resume must use the same."""

    source: str
    model: str | None = None
    tta: bool = False
    plane_check: str = "on"
    pixel_size_mm: float | None = None
    pixel_csv: str | None = None
    shard_batches: int = DEFAULT_SHARD_BATCHES
    backend: str = "auto"


@dataclass
class ArchiveSummary:
    inputs: int
    measured_now: int
    resumed: int
    counts: dict[str, int]
    seconds: float
    images_per_s: float
    actors: int
    threads_per_actor: int
    shard_size: int
    failures: list[list[str]] = field(default_factory=list)
    failures_total: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- workers


@ray.remote
class ShardWorker:
    """One model (and plane checker) per actor; measures shards with the local engine's loop."""

    def __init__(self, out_dir: str, model: str | None, tta: bool, plane_check: str, threads: int, backend: str):
        from fetometry.inference.backend import build_predictor
        from fetometry.pipeline import plane_checker_for
        from fetometry.threads import set_network_threads

        set_network_threads(threads)
        self.layout = ArchiveLayout(out_dir)
        self.predictor = build_predictor(model, backend, tta=tta)
        self.plane_checker = plane_checker_for(plane_check)

    def batch_size(self) -> int:
        return self.predictor.batch_size

    def measure(self, first: int, lines: list[str]) -> dict:
        from fetometry.pipeline import predict_images

        inputs = [item_from_line(line)[1] for line in lines]
        started = time.perf_counter()
        results = predict_images(self.predictor, inputs, progress=False, plane_checker=self.plane_checker)
        entry = write_shard(self.layout, first, inputs, results)
        entry["seconds"] = round(time.perf_counter() - started, 3)
        return entry


def _decode(batch: dict) -> dict:
    """Ray Data stage: which listed inputs decode (the same reader the actors use)."""
    from fetometry.io.archive_input import read_input
    from fetometry.io.images import ImageReadError

    readable = []
    for line in batch["text"]:
        try:
            read_input(item_from_line(str(line))[1].path)
            readable.append(True)
        except (ImageReadError, OSError, ValueError):
            readable.append(False)
    return {"text": batch["text"], "readable": readable}


# --------------------------------------------------------------------------- driver


def connect(address: str | None) -> None:
    """Join ``address`` (``auto``, ``ray://HOST:PORT``), or start a local Ray; reuse one already up."""
    if ray.is_initialized():
        return
    ray.init(address=address, include_dashboard=False, log_to_driver=False)


def plan_actors(actors: int | None, threads_per_actor: int | None) -> tuple[int, int, float]:
    """Actors, torch threads each, and the CPUs each reserves, from the cluster's CPUs.

    Threads default to the smallest node's CPUs (at most 4); actors fill the cluster. Each
    actor reserves a little under its threads so the decode stage always has CPU to run."""
    total = float(ray.cluster_resources().get("CPU", 1.0))
    node_cpus = [n["Resources"].get("CPU", 0.0) for n in ray.nodes() if n.get("Alive")] or [total]
    threads = threads_per_actor or max(1, min(MAX_DEFAULT_THREADS, int(min(node_cpus))))
    count = actors or max(1, int(total // threads))
    reserve = min(float(threads), max(DECODE_CPUS, (total - 2 * DECODE_CPUS) / count))
    return count, threads, reserve


def list_inputs(source: str, layout: ArchiveLayout, options: RunOptions) -> int:
    """Freeze the inputs into the listing file; a data-set folder or one file goes through
    ``collect_inputs`` (its CSV, its order), a tree, list file or glob streams."""
    from fetometry.archive.listing import is_glob, is_list_file, iter_input_paths
    from fetometry.data.loaders import detect_layout
    from fetometry.io.pixel_size import read_pixel_size_csv, validate_pixel_size
    from fetometry.pipeline import collect_inputs, input_for

    path = Path(source)
    if not (is_glob(source) or is_list_file(path) or (path.is_dir() and detect_layout(path) is None)):
        items = collect_inputs(source, pixel_size_mm=options.pixel_size_mm, pixel_csv=options.pixel_csv)
        return write_listing(items, layout.listing)
    mm = validate_pixel_size(options.pixel_size_mm, source="--pixel-size") if options.pixel_size_mm else None
    table = read_pixel_size_csv(options.pixel_csv) if options.pixel_csv else {}
    items = (input_for(p, pixel_size_mm=mm, table=table) for p in iter_input_paths(source))
    return write_listing(items, layout.listing)


def _start_or_resume(layout: ArchiveLayout, options: RunOptions, resume: bool) -> tuple[int, list[dict]]:
    """The listing's size and the shards already finished (none for a new run)."""
    recorded = json.dumps(asdict(options), sort_keys=True)
    if layout.run.exists() and not resume:
        raise FileExistsError(f"{layout.root} holds an earlier run: --resume continues it; a new run needs a new --out")
    if resume and layout.run.exists():
        if layout.run.read_text() != recorded:
            raise ValueError(f"--resume with other options than the run in {layout.root} ({layout.run.read_text()})")
        if layout.listing.exists():
            with layout.listing.open(encoding="utf-8") as handle:
                total = sum(1 for _ in handle)
            return total, Manifest(layout.manifest).entries()
    layout.make()
    total = list_inputs(options.source, layout, options)
    layout.run.write_text(recorded)
    return total, []


def _shards(rows, shard_size: int):
    """Ordered (line, readable) rows -> (first index, lines): a shard closes after
    ``shard_size`` readable inputs, or where the pending inputs skip finished ones."""
    lines: list[str] = []
    first = previous = -1
    readable = 0
    for row in rows:
        line = str(row["text"])
        index = json.loads(line)["i"]
        if lines and index != previous + 1:
            yield first, lines
            lines, readable = [], 0
        if not lines:
            first = index
        lines.append(line)
        previous = index
        readable += bool(row["readable"])
        if readable == shard_size:
            yield first, lines
            lines, readable = [], 0
    if lines:
        yield first, lines


def run_archive(
    source: str | Path,
    out_dir: str | Path,
    *,
    address: str | None = None,
    model: str | None = None,
    tta: bool = False,
    plane_check: str = "on",
    pixel_size_mm: float | None = None,
    pixel_csv: str | Path | None = None,
    resume: bool = False,
    shard_batches: int = DEFAULT_SHARD_BATCHES,
    actors: int | None = None,
    threads_per_actor: int | None = None,
    progress: bool = True,
    backend: str = "auto",
) -> ArchiveSummary:
    """Measure every input under ``source`` on Ray into ``out_dir`` (the local engine's
    measurements.csv and masks/, plus Parquet shards and summary.json)."""
    started = time.perf_counter()
    options = RunOptions(
        str(source),
        model,
        tta,
        str(plane_check),
        pixel_size_mm,
        str(pixel_csv) if pixel_csv else None,
        shard_batches,
        backend,
    )
    layout = ArchiveLayout(out_dir)
    total, done = _start_or_resume(layout, options, resume)
    connect(address)
    count, threads, reserve = plan_actors(actors, threads_per_actor)
    workers = [
        ShardWorker.options(num_cpus=reserve).remote(
            str(layout.out_dir), model, tta, str(plane_check), threads, backend
        )
        for _ in range(count)
    ]
    shard_size = shard_batches * ray.get(workers[0].batch_size.remote())
    log.info("%d inputs, %d done before; %d actors x %d threads", total, sum(e["rows"] for e in done), count, threads)
    measured = _measure_pending(layout, done, workers, shard_size, total, progress)
    entries = Manifest(layout.manifest).entries()
    check_complete(entries, total)
    assemble_csv(layout, entries)
    summary = _summarise(entries, total, measured, time.perf_counter() - started, count, threads, shard_size)
    layout.summary.write_text(json.dumps(summary.to_dict(), indent=2, sort_keys=True) + "\n")
    for worker in workers:
        ray.kill(worker)
    return summary


def _measure_pending(layout: ArchiveLayout, done: list[dict], workers, shard_size: int, total: int, progress: bool):
    """Decode (Ray Data) -> shards -> actors; a manifest line as each shard lands. Rows measured now."""
    from ray.util import ActorPool

    pending = layout.root / "pending.jsonl"
    if write_pending(layout.listing, [(e["first"], e["last"]) for e in done], pending) == 0:
        return 0
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # shards follow the listing's order
    context.enable_progress_bars = False
    rows = (
        ray.data.read_text(str(pending), num_cpus=DECODE_CPUS)
        .map_batches(_decode, batch_size=16, num_cpus=DECODE_CPUS)
        .iter_rows()
    )
    manifest = Manifest(layout.manifest)
    pool = ActorPool(workers)
    already = sum(e["rows"] for e in done)
    bar = tqdm(total=total, initial=already, desc="measuring (ray)", unit="img", disable=not progress)
    measured = 0

    def land(entry: dict) -> None:
        nonlocal measured
        manifest.append(entry)
        measured += entry["rows"]
        bar.update(entry["rows"])

    for first, lines in _shards(rows, shard_size):
        while not pool.has_free():
            land(pool.get_next_unordered())
        pool.submit(lambda worker, shard: worker.measure.remote(*shard), (first, lines))
    while pool.has_next():
        land(pool.get_next_unordered())
    bar.close()
    return measured


def _summarise(entries, total, measured, seconds, actors, threads, shard_size) -> ArchiveSummary:
    counts: dict[str, int] = {}
    failures: list[list[str]] = []
    for entry in entries:
        for status, n in entry["counts"].items():
            counts[status] = counts.get(status, 0) + n
        failures.extend(entry["unreadable"])
    return ArchiveSummary(
        inputs=total,
        measured_now=measured,
        resumed=total - measured,
        counts=dict(sorted(counts.items())),
        seconds=round(seconds, 2),
        images_per_s=round(measured / seconds, 3) if seconds > 0 else 0.0,
        actors=actors,
        threads_per_actor=threads,
        shard_size=shard_size,
        failures=failures[:MAX_LISTED_FAILURES],
        failures_total=len(failures),
    )
