"""Where shipped weights and bundled sample images are found.

Weights live in the repository's ``weights/`` folder (override with the environment
variable FETOMETRY_WEIGHTS); the demo's HC18 samples ship inside the package.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLES_DIR = PACKAGE_DIR / "assets" / "samples"
DEFAULT_MODEL = "unext-scanners"


def weights_root() -> Path:
    env = os.environ.get("FETOMETRY_WEIGHTS")
    if env:
        return Path(env)
    return PACKAGE_DIR.parents[1] / "weights"  # src/fetometry -> repository root


def shipped_models(kind: str | None = "segmenter") -> list[str]:
    """Names of the weights folders under weights_root() holding models of ``kind``
    (config.json "kind"; a folder without one holds a segmenter), sorted; ``kind=None``:
    every folder, the plane classifier included."""
    from fetometry.weights_config import WeightsConfig

    folders = [folder for folder in sorted(weights_root().glob("*")) if (folder / "config.json").is_file()]
    return [folder.name for folder in folders if kind is None or WeightsConfig.read(folder).kind == kind]


def resolve_weights(name_or_path: str | Path | None) -> Path:
    """A shipped model name (``attention-unet``) or a weights folder -> that folder."""
    candidate = Path(name_or_path or DEFAULT_MODEL)
    if candidate.is_dir() and (candidate / "config.json").is_file():
        return candidate
    folder = weights_root() / str(name_or_path or DEFAULT_MODEL)
    if (folder / "config.json").is_file():
        return folder
    shipped = shipped_models(kind=None)
    raise FileNotFoundError(
        f"no model {str(name_or_path)!r}: give a shipped name ({', '.join(shipped) or 'none found'}) "
        "or a folder holding model.safetensors + config.json"
    )


def calibrated_ensemble(member_folders: list[str | Path | None]) -> tuple[str | None, dict | None]:
    """(key, entry) of weights/ensembles.json for these member folders (the sorted
    folder names, when every member is a shipped folder), or (key or None, None) when
    the set is not listed."""
    root = weights_root().resolve()
    folders = [Path(f).resolve() if f else None for f in member_folders]
    if not all(f is not None and f.parent == root for f in folders):
        return None, None
    key = ",".join(sorted(f.name for f in folders))
    listing = root / "ensembles.json"
    listed = json.loads(listing.read_text(encoding="utf-8")).get("ensembles", {}) if listing.is_file() else {}
    return key, listed.get(key)


def weights_digest(weights_dir: str | Path) -> str:
    """The sha256 (hex) of a model's safetensors weights: what an SR or audit log cites.

    ``weights_dir``: a weights folder or a shipped model name (``resolve_weights``). One
    ``*.safetensors`` file: its plain sha256 (the same as ``sha256sum model.safetensors``).
    Several (e.g. a plane classifier with its head embedding): the sha256 of the
    ``sha256sum``-style listing ``"<hex>  <name>\\n"`` of every file, sorted by name.
    Raises FileNotFoundError when the folder holds no safetensors file.
    """
    folder = Path(weights_dir)
    if not folder.is_dir():
        folder = resolve_weights(weights_dir)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.safetensors file to take the digest of")
    if len(files) == 1:
        return file_sha256(files[0])
    listing = "".join(f"{file_sha256(path)}  {path.name}\n" for path in files)
    return hashlib.sha256(listing.encode("utf-8")).hexdigest()


def file_sha256(path: str | Path) -> str:
    """The sha256 (hex) of a file, read in 1 MiB blocks (weights files are tens of MB)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
