"""Where shipped weights and bundled sample images are found.

Weights live in the repository's ``weights/`` folder (override with the environment
variable FETOMETRY_WEIGHTS); the demo's HC18 samples ship inside the package.
"""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
SAMPLES_DIR = PACKAGE_DIR / "assets" / "samples"
DEFAULT_MODEL = "attention-unet"


def weights_root() -> Path:
    env = os.environ.get("FETOMETRY_WEIGHTS")
    if env:
        return Path(env)
    return PACKAGE_DIR.parents[1] / "weights"  # src/fetometry -> repository root


def shipped_models() -> list[str]:
    """Names of the weights folders under weights_root(), sorted."""
    return sorted(p.name for p in weights_root().glob("*") if (p / "config.json").is_file())


def resolve_weights(name_or_path: str | Path | None) -> Path:
    """A shipped model name (``attention-unet``) or a weights folder -> that folder."""
    candidate = Path(name_or_path or DEFAULT_MODEL)
    if candidate.is_dir() and (candidate / "config.json").is_file():
        return candidate
    folder = weights_root() / str(name_or_path or DEFAULT_MODEL)
    if (folder / "config.json").is_file():
        return folder
    shipped = shipped_models()
    raise FileNotFoundError(
        f"no model {str(name_or_path)!r}: give a shipped name ({', '.join(shipped) or 'none found'}) "
        "or a folder holding model.safetensors + config.json"
    )
