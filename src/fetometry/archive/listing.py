"""Streaming listings of many inputs: a folder tree, a list file or a glob.

Every listing yields paths one at a time in a fixed, sorted order (a folder's entries by
name, its files before its sub-folders), so a run listed twice lists the same inputs in
the same order, and a flat folder lists exactly what the local engine's ``collect_inputs``
lists. Nothing here holds the whole listing in memory, except a glob on Python < 3.13,
which sorts the matches (``glob.translate``, which streams, arrived in 3.13).
"""

from __future__ import annotations

import glob
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from fetometry.io.archive_input import INPUT_SUFFIXES

#: A file with one of these suffixes is a list of inputs, one path a line.
LIST_SUFFIXES = (".txt", ".lst", ".list")
GLOB_CHARACTERS = frozenset("*?[")


def is_glob(source: str | Path) -> bool:
    """A pattern, not a path: it holds a glob character and names nothing that exists."""
    text = str(source)
    return bool(GLOB_CHARACTERS & set(text)) and not Path(text).exists()


def is_list_file(source: str | Path) -> bool:
    path = Path(source)
    return path.is_file() and path.suffix.lower() in LIST_SUFFIXES


def wanted(path: Path) -> bool:
    """An image or DICOM file, not an HC18 annotation."""
    return path.suffix.lower() in INPUT_SUFFIXES and "_Annotation" not in path.stem


def iter_folder(root: str | Path, *, recursive: bool = True) -> Iterator[Path]:
    """Images and DICOMs under ``root``: each folder's files by name, then its sub-folders."""
    with os.scandir(root) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    folders = []
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            folders.append(entry.path)
        elif entry.is_file() and wanted(Path(entry.path)):
            yield Path(entry.path)
    if recursive:
        for folder in folders:
            yield from iter_folder(folder, recursive=True)


def iter_list_file(list_path: str | Path) -> Iterator[Path]:
    """One path a line; blank lines and lines starting with # are skipped; relative paths
    are relative to the list file's folder. Every line is an input, whatever its suffix:
    a file that is no image gets an ``unreadable`` row, as a bad file in a folder would."""
    list_path = Path(list_path)
    with list_path.open(encoding="utf-8") as handle:
        for line in handle:
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            path = Path(text)
            yield path if path.is_absolute() else list_path.parent / path


def iter_glob(pattern: str) -> Iterator[Path]:
    """Files matching ``pattern`` (``**`` spans folders), sorted as a folder walk is."""
    if sys.version_info < (3, 13):
        yield from (Path(p) for p in sorted(glob.iglob(pattern, recursive=True)) if Path(p).is_file())
        return
    regex = re.compile(glob.translate(pattern, recursive=True, include_hidden=False))
    root = _glob_root(pattern)
    if not root.is_dir():
        return
    for path in iter_folder(root, recursive=True):
        if regex.fullmatch(str(path)):
            yield path


def _glob_root(pattern: str) -> Path:
    """The deepest folder of ``pattern`` that holds no glob character."""
    parts = Path(pattern).parts
    fixed = []
    for part in parts[:-1]:
        if GLOB_CHARACTERS & set(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")


def iter_input_paths(source: str | Path) -> Iterator[Path]:
    """A folder tree, a list file or a glob -> input paths, streamed.

    Raises FileNotFoundError when ``source`` is none of them."""
    if is_glob(source):
        return iter_glob(str(source))
    path = Path(source)
    if is_list_file(path):
        return iter_list_file(path)
    if path.is_dir():
        return iter_folder(path, recursive=True)
    if path.is_file():
        return iter([path])
    raise FileNotFoundError(f"{source}: no such file, folder or matching glob")
