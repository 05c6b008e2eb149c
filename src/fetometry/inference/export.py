"""ONNX export: a shipped model (or a weights folder) -> ONNX file(s) for onnxruntime.

    fetometry export --model NAME|FOLDER --format onnx --out FILE

Feed-forward models (attention-unet, unext, transunet, duck-net) become ONE file with
input ``images`` (B, 1, H, W) float32 in [0, 1] and output ``logits`` (B, 1, H, W); the
batch, height and width axes are dynamic (H and W multiples of the model's size divisor,
which the Predictor's letterbox guarantees).

MedSegDiff-V2 is not one forward pass: its DDIM sampler is a Python loop. It becomes TWO
graphs, and the sampler stays in Python (``MedSegDiffV2.sample``, run by
``onnx_backend`` over the two sessions):

- ``<out stem>_condition.onnx``: ``images`` -> ``logits`` (the condition network's), the
  U-SA-relaxed anchors ``anchor_0 ..`` and the semantic ``embedding`` (run once per image);
- ``<out stem>_denoiser.onnx``: ``x_t``, ``images``, ``t`` (int64), the anchors and the
  embedding -> ``output``, the diffusion U-Net's raw output F (run at every step).

When ``--out`` is a folder (an existing one, or a path without a suffix), the two files
are ``condition.onnx`` and ``denoiser.onnx`` inside it.

Every file carries the weights folder's config (canvas size, threshold, HC offset) in
its ONNX metadata (``fetometry_config``), so ``onnx_backend.load_onnx_predictor(file)``
needs nothing else. The export is traced at the canvas size plus one size step, so that
size shortcuts (TransUNet's position embeddings at the construction grid) take the
general path and the graph serves every size, and it is VERIFIED: onnxruntime must agree
with PyTorch (float32) on an ultrasound-like phantom at two sizes, or ``ExportError``.

The spectral attention of MedSegDiff-V2 uses complex FFTs, which ONNX cannot express
(no complex tensors). During its export only, ``torch.fft`` and ``torch.view_as_*`` are
replaced, inside the model's module, by exact real-valued DFTs (matrix products with
cosine and sine tables built from the traced sizes); ``spectral_stand_ins`` is tested
against ``torch.fft``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from fetometry import __version__
from fetometry.models.base import is_sampled

log = logging.getLogger(__name__)

#: ONNX opset of the exported graphs (onnxruntime >= 1.12 runs it).
OPSET = 17
#: Metadata keys of an exported file.
ROLE_KEY = "fetometry_role"
CONFIG_KEY = "fetometry_config"
MODEL_INFO_KEY = "fetometry_model"
#: ``fetometry_role`` values.
SEGMENTER, CONDITION, DENOISER = "segmenter", "condition", "denoiser"
#: Largest |ONNX - PyTorch| / max |PyTorch| accepted by the export's own check.
VERIFY_RELATIVE_TOLERANCE = 1e-3
FORMATS = ("onnx",)


class ExportError(ValueError):
    """The model cannot be exported, or the exported graph disagrees with PyTorch."""


# --------------------------------------------------------------------------- public API


def export_onnx(name_or_folder: str | Path | None, out_path: str | Path, *, verify: bool = True) -> list[Path]:
    """Export a shipped model (name) or a weights folder to ONNX; returns the files written.

    One file for a feed-forward model; two (condition, denoiser) for MedSegDiff-V2,
    named as the module docstring says.
    """
    from fetometry.models import create_model
    from fetometry.models.weights import load_weights, read_config
    from fetometry.resources import resolve_weights

    folder = resolve_weights(name_or_folder)
    config = read_config(folder)
    model = create_model(config["model"], config["variant"], **config.get("model_kwargs", {}))
    load_weights(model, folder / "model.safetensors")
    return export_model(model, out_path, config=config, verify=verify)


def export_model(model: nn.Module, out_path: str | Path, *, config: dict, verify: bool = True) -> list[Path]:
    """Export any registered model instance; ``config`` needs ``model``, ``variant`` and
    ``canvas_hw`` (a weights folder's config.json has them) and is stored in the files.
    The model is put in float32 eval mode (in place)."""
    for key in ("model", "variant", "canvas_hw"):
        if key not in config:
            raise ExportError(f"config needs {key!r} (as in a weights folder's config.json) to export a model")
    model = model.float().eval()
    config = {key: value for key, value in config.items() if key != "weights_dir"}
    if is_sampled(model):  # the sampler stays in Python: its networks become two graphs
        return _export_medsegdiff(model, out_path, config, verify)
    return [_export_segmenter(model, Path(out_path), config, verify)]


def medsegdiff_paths(out_path: str | Path) -> tuple[Path, Path]:
    """(condition, denoiser) file paths for a MedSegDiff-V2 export to ``out_path``."""
    out_path = Path(out_path)
    if out_path.is_dir() or not out_path.suffix:
        return out_path / "condition.onnx", out_path / "denoiser.onnx"
    stem = out_path.with_suffix("")
    return Path(f"{stem}_condition.onnx"), Path(f"{stem}_denoiser.onnx")


# --------------------------------------------------------------------------- helpers


def _size_divisor(config: dict) -> int:
    from fetometry.models import get_spec

    return get_spec(config["model"], config["variant"]).size_divisor


def _trace_hw(config: dict) -> tuple[int, int]:
    """The canvas plus one size step (see the module docstring for why not the canvas)."""
    divisor = _size_divisor(config)
    height, width = config["canvas_hw"]
    return height + divisor, width + divisor


def _check_hw(config: dict) -> list[tuple[int, int]]:
    """Sizes the export is verified at: the canvas and a different one."""
    divisor = _size_divisor(config)
    height, width = config["canvas_hw"]
    return [(height, width), (height + 2 * divisor, max(divisor, width - divisor))]


def phantom_batch(hw: tuple[int, int], batch: int = 1, *, seed: int = 0) -> torch.Tensor:
    """(batch, 1, H, W) ultrasound-like phantoms (speckle, skull ring, shadow) in [0, 1]."""
    from fetometry.data.synthetic import make_phantom

    images = [make_phantom(height=hw[0], width=hw[1], rng_or_seed=seed + i).image for i in range(batch)]
    return torch.from_numpy(np.stack(images).astype(np.float32))[:, None]


def _torch_export(
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


def _write_metadata(path: Path, role: str, config: dict, model_info: dict | None = None) -> None:
    import onnx

    proto = onnx.load(str(path))
    entries = {ROLE_KEY: role, CONFIG_KEY: json.dumps(config, sort_keys=True), "fetometry_version": __version__}
    if model_info is not None:
        entries[MODEL_INFO_KEY] = json.dumps(model_info, sort_keys=True)
    del proto.metadata_props[:]
    for key, value in entries.items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def relative_difference(reference: np.ndarray, candidate: np.ndarray) -> float:
    """max |candidate - reference| / max(|reference|, 1e-6): scale-free agreement."""
    scale = max(float(np.abs(reference).max()), 1e-6)
    return float(np.abs(candidate - reference).max()) / scale


def _require_agreement(what: str, reference: torch.Tensor, candidate: np.ndarray) -> None:
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
    _torch_export(
        model, (phantom_batch(_trace_hw(config)),), path, ["images"], ["logits"], {"images": axes, "logits": axes}
    )
    _write_metadata(path, SEGMENTER, config)
    if verify:
        session = _session(path)
        for index, hw in enumerate(_check_hw(config)):
            images = phantom_batch(hw, batch=1 + index, seed=index)
            with torch.no_grad():
                reference = model(images).float()
            _require_agreement(
                f"{config['model']} at {hw[0]}x{hw[1]}", reference, session.run(None, {"images": images.numpy()})[0]
            )
    log.info("exported %s to %s", config["model"], path)
    return path


# --------------------------------------------------------------------------- MedSegDiff-V2


class ConditionGraph(nn.Module):
    """images -> (condition logits, anchor_0 .. anchor_k, embedding): the condition
    network plus the U-SA relaxation, exactly ``diffusion.prepare(condition(images))``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.model.condition(images)
        prepared = self.model.diffusion.prepare(output, first_anchor_level=self.model.first_anchor_level)
        return (output.logits, *prepared.anchors, prepared.embedding)


class DenoiserGraph(nn.Module):
    """(x_t, images, t, anchors.., embedding) -> the diffusion U-Net's raw output F."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(
        self, x_t: torch.Tensor, images: torch.Tensor, t: torch.Tensor, *condition: torch.Tensor
    ) -> torch.Tensor:
        from fetometry.models.medsegdiff_v2 import PreparedCondition

        return self.model.diffusion(x_t, images, t, PreparedCondition(list(condition[:-1]), condition[-1]))


def _export_medsegdiff(model: nn.Module, out_path: str | Path, config: dict, verify: bool) -> list[Path]:
    condition_path, denoiser_path = medsegdiff_paths(out_path)
    condition_graph, denoiser_graph = ConditionGraph(model).eval(), DenoiserGraph(model).eval()
    images = phantom_batch(_trace_hw(config))
    with torch.no_grad():
        condition = condition_graph(images)
    anchor_names = [f"anchor_{i}" for i in range(len(condition) - 2)]
    image_axes = {0: "batch", 2: "height", 3: "width"}
    condition_axes = {
        name: {0: "batch", 2: f"{name}_height", 3: f"{name}_width"} for name in [*anchor_names, "embedding"]
    }
    _torch_export(
        condition_graph,
        (images,),
        condition_path,
        ["images"],
        ["logits", *anchor_names, "embedding"],
        {"images": image_axes, "logits": image_axes, **condition_axes},
    )
    x_t = torch.randn(images.shape, generator=torch.Generator().manual_seed(0))
    t = torch.full((images.shape[0],), model.timesteps // 2, dtype=torch.long)
    with spectral_stand_ins():
        _torch_export(
            denoiser_graph,
            (x_t, images, t, *condition[1:]),
            denoiser_path,
            ["x_t", "images", "t", *anchor_names, "embedding"],
            ["output"],
            {"x_t": image_axes, "images": image_axes, "t": {0: "batch"}, "output": image_axes, **condition_axes},
        )
    model_info = {
        "timesteps": model.timesteps,
        "default_steps": model.default_steps,
        "default_ensemble": model.default_ensemble,
        "eta": model.eta,
        "noise_skip": model.noise_skip,
        "anchors": len(anchor_names),
    }
    _write_metadata(condition_path, CONDITION, config, model_info)
    _write_metadata(denoiser_path, DENOISER, config, model_info)
    if verify:
        _verify_medsegdiff(condition_graph, denoiser_graph, condition_path, denoiser_path, config, model.timesteps)
    log.info("exported %s to %s and %s", config["model"], condition_path, denoiser_path)
    return [condition_path, denoiser_path]


def _verify_medsegdiff(
    condition_graph, denoiser_graph, condition_path: Path, denoiser_path: Path, config: dict, timesteps: int
) -> None:
    condition_session, denoiser_session = _session(condition_path), _session(denoiser_path)
    generator = torch.Generator().manual_seed(1)
    for index, hw in enumerate(_check_hw(config)):
        images = phantom_batch(hw, batch=1 + index, seed=index)
        with torch.no_grad():
            reference = condition_graph(images)
        outputs = condition_session.run(None, {"images": images.numpy()})
        for name, expected, got in zip(["logits", "anchors/embedding"], reference, outputs):
            _require_agreement(f"condition network ({name}) at {hw[0]}x{hw[1]}", expected, got)
        x_t = torch.randn(images.shape, generator=generator)
        t = torch.randint(0, timesteps, (images.shape[0],), generator=generator)
        with torch.no_grad():
            expected = denoiser_graph(x_t, images, t, *reference[1:])
        feeds = {"x_t": x_t.numpy(), "images": images.numpy(), "t": t.numpy()}
        feeds.update(
            {node.name: value.numpy() for node, value in zip(denoiser_session.get_inputs()[3:], reference[1:])}
        )
        _require_agreement(f"denoiser at {hw[0]}x{hw[1]}", expected, denoiser_session.run(None, feeds)[0])


# --------------------------------------------------------------------------- real-valued FFTs


def _dft_tables(
    n: torch.Tensor | int, bins: torch.Tensor | int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, bins) cos and sin of 2 pi k m / n; the phase index k m is reduced mod n in
    integers first, so large sizes keep float32 precision."""
    m = torch.arange(n, device=device)[:, None]
    k = torch.arange(bins, device=device)[None, :]
    angle = (m * k).remainder(n).float() * (2 * math.pi / n)
    return torch.cos(angle), torch.sin(angle)


def _ortho_scale(height, width, device: torch.device) -> torch.Tensor:
    """1 / sqrt(H W) as a tensor op (sizes are traced tensors during export: Python's
    math would freeze them into constants)."""
    return torch.rsqrt(torch.ones((), device=device) * (height * width))


def _check_ortho(norm: str | None) -> None:
    if norm != "ortho":
        raise ExportError(f"the ONNX export's real-valued FFT supports norm='ortho' only, got {norm!r}")


class _RealFFT:
    """``torch.fft`` stand-ins on real tensors whose last axis holds (real, imaginary)."""

    @staticmethod
    def rfft2(z: torch.Tensor, norm: str | None = None) -> torch.Tensor:
        """(..., H, W) real -> (..., H, W//2+1, 2), as view_as_real(torch.fft.rfft2(z, norm="ortho"))."""
        _check_ortho(norm)
        height, width = z.shape[-2], z.shape[-1]
        cos_w, sin_w = _dft_tables(width, width // 2 + 1, z.device)
        cos_h, sin_h = _dft_tables(height, height, z.device)
        real, imag = z @ cos_w, -(z @ sin_w)  # real FFT along W (e^{-i theta})
        # Complex FFT along H: (C - iS)(A + iB) = (CA + SB) + i(CB - SA).
        out_real, out_imag = cos_h @ real + sin_h @ imag, cos_h @ imag - sin_h @ real
        return torch.stack([out_real, out_imag], dim=-1) * _ortho_scale(height, width, z.device)

    @staticmethod
    def irfft2(spectrum: torch.Tensor, s: tuple, norm: str | None = None) -> torch.Tensor:
        """(..., H, W//2+1, 2) -> (..., H, W) real, as torch.fft.irfft2(complex, s=(H, W), norm="ortho")."""
        _check_ortho(norm)
        height, width = s
        real, imag = spectrum[..., 0], spectrum[..., 1]
        bins = spectrum.shape[-2]
        cos_h, sin_h = _dft_tables(height, height, spectrum.device)
        # Inverse complex FFT along H: (C + iS)(P + iQ) = (CP - SQ) + i(CQ + SP).
        row_real, row_imag = cos_h @ real - sin_h @ imag, cos_h @ imag + sin_h @ real
        # Hermitian inverse along W: bins other than DC and Nyquist count twice; the
        # imaginary parts of DC and Nyquist meet sin = 0 and drop out, as in torch.
        k = torch.arange(bins, device=spectrum.device)
        weight = torch.where((k == 0) | (2 * k == width), torch.ones_like(k), 2 * torch.ones_like(k)).float()
        cos_w, sin_w = _dft_tables(width, bins, spectrum.device)
        out = (row_real * weight) @ cos_w.transpose(0, 1) - (row_imag * weight) @ sin_w.transpose(0, 1)
        return out * _ortho_scale(height, width, spectrum.device)

    @staticmethod
    def fftfreq(n, d: float = 1.0, *, device=None) -> torch.Tensor:
        k = torch.arange(n, device=device)
        return torch.where(k < (n + 1) // 2, k, k - n).float() / (n * d)

    @staticmethod
    def rfftfreq(n, d: float = 1.0, *, device=None) -> torch.Tensor:
        return torch.arange(n // 2 + 1, device=device).float() / (n * d)


class _TorchWithRealFFT:
    """``torch`` as seen by the model's module during export: real-valued FFTs, and
    ``view_as_real`` / ``view_as_complex`` as identities (spectra are already real pairs)."""

    fft = _RealFFT

    @staticmethod
    def view_as_real(z: torch.Tensor) -> torch.Tensor:
        return z

    @staticmethod
    def view_as_complex(z: torch.Tensor) -> torch.Tensor:
        return z

    def __getattr__(self, name: str):
        return getattr(torch, name)


@contextlib.contextmanager
def spectral_stand_ins():
    """Inside: ``fetometry.models.medsegdiff_v2`` computes its FFTs as real DFTs."""
    from fetometry.models import medsegdiff_v2

    original = medsegdiff_v2.torch
    medsegdiff_v2.torch = _TorchWithRealFFT()
    try:
        yield
    finally:
        medsegdiff_v2.torch = original


# --------------------------------------------------------------------------- CLI


def register(subparsers) -> None:
    """Add the `export` verb to the CLI's subparsers."""
    p = subparsers.add_parser("export", help="export a model to ONNX for onnxruntime")
    p.add_argument("--model", default=None, help="shipped model name or weights folder (default: the default model)")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="export format")
    p.add_argument(
        "--out",
        required=True,
        type=Path,
        help="output .onnx file (MedSegDiff-V2: <stem>_condition/_denoiser.onnx, or a folder)",
    )
    p.add_argument("--no-verify", action="store_true", help="skip the onnxruntime-vs-PyTorch agreement check")
    p.set_defaults(func=run_command)


def run_command(args) -> int:
    paths = export_onnx(args.model, args.out, verify=not args.no_verify)
    for path in paths:
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")
    print("verified against PyTorch on phantoms" if not args.no_verify else "not verified (--no-verify)")
    return 0
