"""Where a benchmark script leaves its results: one JSON report, and its Markdown table beside it."""

from __future__ import annotations

import json
from pathlib import Path


def write_results(path: Path, report: dict, *, markdown: str | None = None, indent: int = 2) -> Path:
    """``report`` as JSON at ``path`` (its folder made), and ``markdown`` at the same name
    with ``.md`` when given; prints the table (if any) and where the report went."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=indent) + "\n")
    if markdown is not None:
        path.with_suffix(".md").write_text(markdown + "\n")
        print(markdown)
    print("->", path)
    return path
