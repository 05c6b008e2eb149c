"""``fetometry serve``: the web app and REST API (the server is ``fetometry.serve``)."""

from __future__ import annotations

from fetometry.serve.command import register as add_parser
from fetometry.serve.command import run_serve as run

__all__ = ["add_parser", "run"]
