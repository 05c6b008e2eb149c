"""One entry point for every data set: ``load(path)`` picks the loader by the folder's layout.

A data-set format is one module with one loader, registered by a decorator::

    @register_loader("my-layout", detect=lambda root: (root / "scans").is_dir(),
                     needs="scans/*.png and labels.csv")
    def load_my_layout(root, *, require_masks=False) -> list[Sample]: ...

The loader lists the samples sorted by file name; ``detect(root)`` is cheap (a few file
checks) and True only for its own layout. Layouts are tried in registration order (HC18
before the folder data set), so a folder that fits several goes to the first.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from fetometry.data.sample import Sample


@dataclass(frozen=True)
class LoaderSpec:
    """A registered data-set layout: its loader, how it is recognised and what it needs."""

    name: str
    loader: Callable[..., list[Sample]]
    detect: Callable[[Path], bool]
    needs: str


#: name -> spec, in registration order (the order in which layouts are tried).
_LOADERS: dict[str, LoaderSpec] = {}


def register_loader(name: str, *, detect: Callable[[Path], bool], needs: str = ""):
    """Decorator registering ``loader(root, *, require_masks=False) -> list[Sample]`` for
    the layout ``name``; ``detect(root: Path) -> bool`` recognises that layout, ``needs``
    says in a few words what a folder must hold (shown when no layout fits)."""

    def wrap(loader: Callable[..., list[Sample]]) -> Callable[..., list[Sample]]:
        if name in _LOADERS:
            raise ValueError(f"data-set layout {name!r} is registered twice")
        doc = (loader.__doc__ or "").strip().splitlines()
        _LOADERS[name] = LoaderSpec(name, loader, detect, needs or (doc[0] if doc else ""))
        return loader

    return wrap


def registered_loaders() -> list[LoaderSpec]:
    """The registered layouts, in the order they are tried."""
    return list(_LOADERS.values())


def detect_layout(path: str | Path) -> str | None:
    """The name of the first registered layout that recognises ``path``, else None."""
    root = Path(path)
    if not root.is_dir():
        return None
    return next((spec.name for spec in _LOADERS.values() if spec.detect(root)), None)


def load(path: str | Path, *, require_masks: bool = False) -> list[Sample]:
    """The samples of a data-set folder, read by the loader of its layout.

    Raises:
        FileNotFoundError: ``path`` is not a folder.
        ValueError: no registered layout recognises the folder; the message lists the
            layouts and what each needs.
    """
    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a folder; give a data-set folder")
    name = detect_layout(root)
    if name is None:
        known = "; ".join(f"{spec.name}: {spec.needs}" for spec in _LOADERS.values())
        raise ValueError(f"{root}: not a known data-set layout; the layouts are {known}")
    return _LOADERS[name].loader(root, require_masks=require_masks)


def load_annotated(path: str | Path) -> list[Sample]:
    """The samples of ``load(path)`` that have a reference mask."""
    return [s for s in load(path) if s.mask_path is not None]


def load_datasets(paths: str | Path | Sequence[str | Path]) -> list[Sample]:
    """The annotated samples of one data set, or of several combined (e.g. HC18 + a
    clinic's folder data set).

    Combined, every sample carries its data set's folder name as ``source``, and its
    name and subject are prefixed with it: subjects of different centres never merge in
    the subject-grouped splits, and metrics can be reported per source.
    """
    dirs = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if len(dirs) == 1:
        return load_annotated(dirs[0])
    labels = [Path(d).resolve().name for d in dirs]
    if len(set(labels)) < len(labels):  # two folders of the same name: number them
        labels = [f"{label}{i + 1}" for i, label in enumerate(labels)]
    combined = []
    for folder, label in zip(dirs, labels):
        for sample in load_annotated(folder):
            combined.append(
                replace(sample, name=f"{label}/{sample.name}", subject=f"{label}/{sample.subject}", source=label)
            )
    return combined
