"""Helpers several test modules share: the text of a PDF, and how the browser tests start Chromium."""

from __future__ import annotations

import base64
import re
import zlib
from pathlib import Path

#: Debian's Chromium (Playwright never downloads a browser here).
CHROMIUM = Path("/usr/bin/chromium")
#: No sandbox (root in a container) and no background connections (the network is closed).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def pdf_text(data: bytes) -> str:
    """The text a reportlab PDF shows: every (string) Tj operand of every content stream,
    after undoing the stream filters (ASCII85 and Flate); whitespace collapsed."""
    chunks = []
    for header, body in re.findall(rb"<<(.*?)>>\s*stream\r?\n(.*?)endstream", data, re.S):
        if b"/Subtype /Image" in header:
            continue
        if b"/ASCII85Decode" in header:
            body = base64.a85decode(body.strip().removesuffix(b"~>"))
        if b"/FlateDecode" in header:
            body = zlib.decompress(body)
        for literal in re.findall(rb"\(((?:\\.|[^\\)])*)\)\s*Tj", body):
            chunks.append(re.sub(rb"\\(.)", rb"\1", literal).decode("latin-1"))
    return " ".join(" ".join(chunks).split())
