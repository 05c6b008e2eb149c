"""ONNX export: a shipped model (or a weights folder) -> ONNX file(s) for onnxruntime.

    fetometry export --model NAME|FOLDER --format onnx --out FILE

Feed-forward models (attention-unet, unext, transunet, duck-net) become ONE file with
input ``images`` (B, 1, H, W) float32 in [0, 1] and output ``logits`` (B, 1, H, W); the
batch, height and width axes are dynamic (H and W multiples of the model's size divisor,
which the Predictor's letterbox guarantees).

A model that is not one forward pass exports its OWN graphs through its class hook
``export_onnx_graphs`` (``fetometry.models.base``): MedSegDiff-V2 becomes TWO graphs, a
condition and a denoiser, and its sampler stays in Python
(``fetometry.models.medsegdiff_v2_onnx``). The pair is named ``<out stem>_condition.onnx``
and ``<out stem>_denoiser.onnx``, or, when ``--out`` is a folder (an existing one, or a
path without a suffix), ``condition.onnx`` and ``denoiser.onnx`` inside it
(``medsegdiff_paths``); such models use this module's helpers below.

Every file carries the weights folder's config (canvas size, threshold, HC offset) in
its ONNX metadata (``fetometry_config``), so ``onnx_backend.load_onnx_predictor(file)``
needs nothing else. The export is traced at the canvas size plus one size step, so that
size shortcuts (TransUNet's position embeddings at the construction grid) take the
general path and the graph serves every size, and it is VERIFIED: onnxruntime must agree
with PyTorch (float32) on an ultrasound-like phantom at two sizes, or ``ExportError``.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from fetometry import __version__
from fetometry.inference.onnx_session import CONFIG_KEY, MODEL_INFO_KEY, PLANE_CLASSIFIER, ROLE_KEY, SEGMENTER
from fetometry.models.base import own_onnx_export

log = logging.getLogger(__name__)

#: ONNX opset of the exported graphs (onnxruntime >= 1.12 runs it).
OPSET = 17
#: Largest |ONNX - PyTorch| / max |PyTorch| accepted by the export's own check.
VERIFY_RELATIVE_TOLERANCE = 1e-3


class ExportError(ValueError):
    """The model cannot be exported, or the exported graph disagrees with PyTorch."""


# --------------------------------------------------------------------------- public API


def export_onnx(name_or_folder: str | Path | None, out_path: str | Path, *, verify: bool = True) -> list[Path]:
    """Export a shipped model (name) or a weights folder to ONNX; returns the files written.

    One file for a feed-forward model; a model's own graphs (MedSegDiff-V2: condition and
    denoiser) where its class defines ``export_onnx_graphs``.
    """
    from fetometry.models import create_model
    from fetometry.models.weights import load_weights
    from fetometry.resources import resolve_weights
    from fetometry.weights_config import WeightsConfig

    folder = resolve_weights(name_or_folder)
    config = WeightsConfig.read(folder)
    model = create_model(config.model, config.variant, **config.model_kwargs)
    load_weights(model, folder / "model.safetensors")
    return export_model(model, out_path, config=config.to_dict(), verify=verify)


def export_model(model: nn.Module, out_path: str | Path, *, config: dict, verify: bool = True) -> list[Path]:
    """Export any registered model instance; ``config`` (a weights folder's config.json)
    is stored in the files and, for a segmenter, needs ``model``, ``variant`` and
    ``canvas_hw``. A plane classifier becomes one graph images -> (logits, embedding) at
    its ``input_hw``. The model is put in float32 eval mode (in place)."""
    from fetometry.models.base import PlaneClassifierNetwork

    model = model.float().eval()
    config = {key: value for key, value in config.items() if key != "weights_dir"}
    if isinstance(model, PlaneClassifierNetwork):
        return [_export_plane_classifier(model, Path(out_path), config, verify)]
    for key in ("model", "variant", "canvas_hw"):
        if key not in config:
            raise ExportError(f"config needs {key!r} (as in a weights folder's config.json) to export a model")
    if own_onnx_export(model):  # e.g. a sampler that stays in Python over several graphs
        paths = model.export_onnx_graphs(out_path, config=config, verify=verify)
        log.info("exported %s to %s", config["model"], " and ".join(str(path) for path in paths))
        return paths
    return [_export_segmenter(model, Path(out_path), config, verify)]


def medsegdiff_paths(out_path: str | Path) -> tuple[Path, Path]:
    """(condition, denoiser) file paths of a two-graph (MedSegDiff-V2) export to ``out_path``."""
    out_path = Path(out_path)
    if out_path.is_dir() or not out_path.suffix:
        return out_path / "condition.onnx", out_path / "denoiser.onnx"
    stem = out_path.with_suffix("")
    return Path(f"{stem}_condition.onnx"), Path(f"{stem}_denoiser.onnx")


# --------------------------------------------------------------------------- helpers (also for models' own graphs)


def _size_divisor(config: dict) -> int:
    from fetometry.models import get_spec

    return get_spec(config["model"], config["variant"]).size_divisor


def trace_hw(config: dict) -> tuple[int, int]:
    """The canvas plus one size step (see the module docstring for why not the canvas)."""
    divisor = _size_divisor(config)
    height, width = config["canvas_hw"]
    return height + divisor, width + divisor


def check_hw(config: dict) -> list[tuple[int, int]]:
    """Sizes the export is verified at: the canvas and a different one."""
    divisor = _size_divisor(config)
    height, width = config["canvas_hw"]
    return [(height, width), (height + 2 * divisor, max(divisor, width - divisor))]


def phantom_batch(hw: tuple[int, int], batch: int = 1, *, seed: int = 0) -> torch.Tensor:
    """(batch, 1, H, W) ultrasound-like phantoms (speckle, skull ring, shadow) in [0, 1]."""
    from fetometry.data.synthetic import make_phantom

    images = [make_phantom(height=hw[0], width=hw[1], rng_or_seed=seed + i).image for i in range(batch)]
    return torch.from_numpy(np.stack(images).astype(np.float32))[:, None]


def torch_export(
    module: nn.Module, args: tuple, path: Path, names_in: list[str], names_out: list[str], dynamic: dict
) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter is the one that needs no extra package (onnxscript);
        # its deprecation and tracer warnings (shape checks frozen at trace time) are
        # expected: the Predictor guarantees valid sizes.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module,
            args,
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=names_in,
            output_names=names_out,
            dynamic_axes=dynamic,
        )


def write_metadata(path: Path, role: str, config: dict, model_info: dict | None = None) -> None:
    import onnx

    proto = onnx.load(str(path))
    entries = {ROLE_KEY: role, CONFIG_KEY: json.dumps(config, sort_keys=True), "fetometry_version": __version__}
    if model_info is not None:
        entries[MODEL_INFO_KEY] = json.dumps(model_info, sort_keys=True)
    del proto.metadata_props[:]
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def verification_session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def relative_difference(reference: np.ndarray, candidate: np.ndarray) -> float:
    """max |candidate - reference| / max(|reference|, 1e-6): scale-free agreement."""
    scale = max(float(np.abs(reference).max()), 1e-6)
    return float(np.abs(candidate - reference).max()) / scale


def require_agreement(what: str, reference: torch.Tensor, candidate: np.ndarray) -> None:
    difference = relative_difference(reference.numpy(), candidate)
    log.debug("export check %s: relative difference %.2e", what, difference)
    if not difference <= VERIFY_RELATIVE_TOLERANCE:
        raise ExportError(
            f"the exported {what} disagrees with PyTorch (relative difference {difference:.2e} > "
            f"{VERIFY_RELATIVE_TOLERANCE:g}); the architecture uses an operation the ONNX exporter "
            "does not translate faithfully"
        )


# --------------------------------------------------------------------------- feed-forward


def _export_segmenter(model: nn.Module, path: Path, config: dict, verify: bool) -> Path:
    if path.suffix != ".onnx":
        raise ExportError(f"{path}: give an output file name ending in .onnx")
    axes = {0: "batch", 2: "height", 3: "width"}
    torch_export(
        model, (phantom_batch(trace_hw(config)),), path, ["images"], ["logits"], {"images": axes, "logits": axes}
    )
    write_metadata(path, SEGMENTER, config)
    if verify:
        session = verification_session(path)
        for index, hw in enumerate(check_hw(config)):
            images = phantom_batch(hw, batch=1 + index, seed=index)
            with torch.no_grad():
                reference = model(images).float()
            require_agreement(
                f"{config['model']} at {hw[0]}x{hw[1]}", reference, session.run(None, {"images": images.numpy()})[0]
            )
    log.info("exported %s to %s", config["model"], path)
    return path


# --------------------------------------------------------------------------- plane classifier


class _ClassifyGraph(nn.Module):
    """A plane classifier's ``classify`` as a module: images -> (logits, embedding)."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.network.classify(images)


def _standardised_phantoms(hw: tuple[int, int], batch: int, seed: int) -> torch.Tensor:
    """Phantoms in a plane classifier's input convention (``inference.plane.preprocess``)."""
    from fetometry.inference.plane import preprocess

    images = phantom_batch(hw, batch, seed=seed)[:, 0].numpy()
    return torch.from_numpy(np.stack([preprocess(image, hw) for image in images]))[:, None]


def _export_plane_classifier(model: nn.Module, path: Path, config: dict, verify: bool) -> Path:
    """One graph at the classifier's ``input_hw`` (the checker always resizes to it), any
    batch; its labels and input size in the metadata, so onnxruntime needs nothing else."""
    if path.suffix != ".onnx":
        raise ExportError(f"{path}: give an output file name ending in .onnx")
    hw = tuple(model.input_hw)
    batch = {0: "batch"}
    torch_export(
        _ClassifyGraph(model).eval(),
        (_standardised_phantoms(hw, 2, seed=0),),
        path,
        ["images"],
        ["logits", "embedding"],
        {"images": batch, "logits": batch, "embedding": batch},
    )
    info = {
        "labels": list(model.labels),
        "head_labels": list(model.head_labels),
        "background_label": model.background_label,
        "input_hw": list(hw),
    }
    write_metadata(path, PLANE_CLASSIFIER, config, info)
    if verify:
        images = _standardised_phantoms(hw, 3, seed=5)
        with torch.no_grad():
            expected = model.classify(images)
        got = verification_session(path).run(None, {"images": images.numpy()})
        for name, reference, candidate in zip(("logits", "embedding"), expected, got):
            require_agreement(f"plane classifier {name}", reference, candidate)
    log.info("exported %s to %s", config.get("model"), path)
    return path
