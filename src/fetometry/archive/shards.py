"""An archive run's files: the frozen listing, shards written then renamed, the manifest.

    DIR/_archive/run.json          the run's options (a resume must use the same ones)
    DIR/_archive/listing.jsonl     every input, numbered, with its stated pixel size
    DIR/_archive/manifest.jsonl    one line per finished shard: its input range and counts
    DIR/_archive/rows/part-<first input>.csv    a shard's measurements.csv rows
    DIR/shards/part-<first input>.parquet        a shard's rows, typed (pyarrow.parquet.read_table(DIR/shards))
    DIR/measurements.csv, DIR/masks/, DIR/summary.json

A shard is two files, each written under a temporary name and renamed, and only then
recorded in the manifest, so a killed run leaves shards that are either whole and
recorded, whole and unrecorded (measured again on resume, into the same file names), or
temporary (ignored). Nothing is counted twice and nothing is lost. The manifest is JSON
lines appended by the driver alone; a torn last line (a kill mid-write) is ignored.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

from fetometry.pipeline import CSV_COLUMNS, UNREADABLE, ImageInput, ImageResult, csv_rows, write_masks

ARCHIVE_DIR = "_archive"
#: Columns whose values are text or a flag; every other measurements.csv column is a float.
TEXT_COLUMNS = ("filename", "model", "status", "detail", "quality_rule", "plane_label")
BOOL_COLUMNS = ("head_plane",)


class ArchiveLayout:
    """Where an archive run under ``out_dir`` keeps its files."""

    def __init__(self, out_dir: str | Path):
        self.out_dir = Path(out_dir)
        self.root = self.out_dir / ARCHIVE_DIR
        self.run = self.root / "run.json"
        self.listing = self.root / "listing.jsonl"
        self.manifest = self.root / "manifest.jsonl"
        self.rows = self.root / "rows"
        self.shards = self.out_dir / "shards"
        self.csv = self.out_dir / "measurements.csv"
        self.summary = self.out_dir / "summary.json"

    def make(self) -> None:
        self.rows.mkdir(parents=True, exist_ok=True)
        self.shards.mkdir(parents=True, exist_ok=True)

    def shard_path(self, first: int, suffix: str) -> Path:
        """``.parquet``: DIR/shards/; ``.csv``: DIR/_archive/rows/."""
        return (self.shards if suffix == ".parquet" else self.rows) / f"part-{first:012d}{suffix}"


def temporary(path: Path) -> Path:
    """A hidden name beside ``path``: Parquet readers skip names starting with a dot."""
    return path.with_name(f".{path.name}.tmp")


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``path`` under a temporary name, then rename: readers see all or nothing."""
    tmp = temporary(path)
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- listing


def listing_line(index: int, item: ImageInput) -> str:
    return json.dumps(
        {"i": index, "path": str(item.path), "mm": item.pixel_size_mm, "problem": item.pixel_size_problem}
    )


def item_from_line(line: str) -> tuple[int, ImageInput]:
    record = json.loads(line)
    return record["i"], ImageInput(Path(record["path"]), record["mm"], record["problem"])


def write_listing(items: Iterable[ImageInput], path: Path) -> int:
    """Stream the numbered inputs to ``path`` (renamed into place when complete); their count."""
    tmp = temporary(path)
    count = 0
    with tmp.open("w", encoding="utf-8") as handle:
        for count, item in enumerate(items, start=1):
            handle.write(listing_line(count - 1, item) + "\n")
    os.replace(tmp, path)
    return count


def write_pending(listing: Path, done: Sequence[tuple[int, int]], pending: Path) -> int:
    """The listing's lines no finished shard covers, in order; their count."""
    count = 0
    ranges = sorted(done)
    with listing.open(encoding="utf-8") as source, pending.open("w", encoding="utf-8") as handle:
        at = 0
        for line in source:
            index = json.loads(line)["i"]
            while at < len(ranges) and ranges[at][1] < index:
                at += 1
            if at < len(ranges) and ranges[at][0] <= index <= ranges[at][1]:
                continue
            handle.write(line)
            count += 1
    return count


# --------------------------------------------------------------------------- shards


def parquet_schema():
    """The Parquet schema of a shard: the input's number and path, then measurements.csv's columns."""
    import pyarrow as pa

    fields = [pa.field("input_index", pa.int64()), pa.field("path", pa.string())]
    for column in CSV_COLUMNS:
        if column in TEXT_COLUMNS:
            kind = pa.string()
        elif column in BOOL_COLUMNS:
            kind = pa.bool_()
        else:
            kind = pa.float64()
        fields.append(pa.field(column, kind))
    return pa.schema(fields)


def _typed(column: str, value):
    if value is None or column in TEXT_COLUMNS:
        return value
    return bool(value) if column in BOOL_COLUMNS else float(value)


def write_shard(
    layout: ArchiveLayout, first: int, inputs: Sequence[ImageInput], results: Sequence[ImageResult]
) -> dict:
    """Masks, then the shard's CSV rows and Parquet table (each renamed into place) -> its manifest entry."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if len(results) != len(inputs):
        raise ValueError(f"shard {first}: {len(inputs)} inputs but {len(results)} results")
    write_masks(results, layout.out_dir)
    text = io.StringIO()
    csv.DictWriter(text, fieldnames=CSV_COLUMNS, lineterminator="\r\n").writerows(csv_rows(results))
    write_atomically(layout.shard_path(first, ".csv"), text.getvalue().encode("utf-8"))
    records = []
    for offset, result in zip(result_offsets(inputs, results), results):
        row = {column: _typed(column, value) for column, value in result.to_dict().items()}
        records.append({"input_index": first + offset, "path": str(inputs[offset].path), **row})
    records.sort(key=lambda record: record["input_index"])
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(records, schema=parquet_schema()), sink)
    write_atomically(layout.shard_path(first, ".parquet"), sink.getvalue().to_pybytes())
    counts: dict[str, int] = {}
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
    return {
        "first": first,
        "last": first + len(results) - 1,
        "rows": len(results),
        "counts": counts,
        "unreadable": [[r.filename, r.detail] for r in results if r.status == "unreadable"],
    }


def result_offsets(inputs: Sequence[ImageInput], results: Sequence[ImageResult]) -> list[int]:
    """Which input each result belongs to. ``predict_images`` writes an unreadable input's
    row at once and a readable one's when its batch is full, so the rows come out of input
    order; within each kind they keep it. The kinds are told apart by name: where one name
    is both readable and not in one shard (two folders), the earlier input is taken as unreadable."""
    unread = [r.filename for r in results if r.status == UNREADABLE]
    offsets_by_kind: dict[bool, list[int]] = {True: [], False: []}
    pending = {name: unread.count(name) for name in set(unread)}
    for offset, item in enumerate(inputs):
        is_unreadable = pending.get(item.path.name, 0) > 0
        if is_unreadable:
            pending[item.path.name] -= 1
        offsets_by_kind[is_unreadable].append(offset)
    readable, unreadable = iter(offsets_by_kind[False]), iter(offsets_by_kind[True])
    return [next(unreadable) if r.status == UNREADABLE else next(readable) for r in results]


# --------------------------------------------------------------------------- manifest


class Manifest:
    """The finished shards, one JSON line each; appended by the driver only."""

    def __init__(self, path: Path):
        self.path = path

    def entries(self) -> list[dict]:
        """Every whole line, sorted by first input; a torn last line is skipped."""
        if not self.path.exists():
            return []
        found = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue  # a kill in the middle of an append
            found[entry["first"]] = entry  # a shard recorded twice (never expected) counts once
        return sorted(found.values(), key=lambda e: e["first"])

    def append(self, entry: dict) -> None:
        # A torn last line (a kill mid-append) must not swallow the next entry.
        torn = self.path.exists() and self.path.stat().st_size > 0 and not self._ends_with_newline()
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(("\n" if torn else "") + json.dumps(entry, sort_keys=True) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as handle:
            handle.seek(-1, os.SEEK_END)
            return handle.read(1) == b"\n"


def check_complete(entries: Sequence[dict], total: int) -> None:
    """The shards tile inputs 0..total-1 exactly: no gap, no overlap."""
    expected = 0
    for entry in entries:
        if entry["first"] != expected:
            raise ValueError(f"shards leave inputs {expected}-{entry['first'] - 1} unmeasured; rerun with --resume")
        expected = entry["last"] + 1
    if expected != total:
        raise ValueError(f"shards cover {expected} of {total} inputs; rerun with --resume")


def iter_csv_parts(layout: ArchiveLayout, entries: Sequence[dict]) -> Iterator[bytes]:
    for entry in entries:
        yield layout.shard_path(entry["first"], ".csv").read_bytes()


def assemble_csv(layout: ArchiveLayout, entries: Sequence[dict]) -> Path:
    """measurements.csv: the local engine's header, then every shard's rows in input order."""
    tmp = temporary(layout.csv)
    header = io.StringIO()
    csv.DictWriter(header, fieldnames=CSV_COLUMNS, lineterminator="\r\n").writeheader()
    with tmp.open("wb") as handle:
        handle.write(header.getvalue().encode("utf-8"))
        for part in iter_csv_parts(layout, entries):
            handle.write(part)
    os.replace(tmp, layout.csv)
    return layout.csv
