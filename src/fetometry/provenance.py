"""Which model produced a result: its name, the fetometry version and the sha256 of its weights.

A DICOM SR, a FHIR Observation and the audit log all cite the same three values, so a
result can be traced to the exact weights that produced it.
"""

from __future__ import annotations

from dataclasses import dataclass

from fetometry import __version__


@dataclass(frozen=True)
class ModelIdentity:
    name: str
    version: str
    weights_sha256: str

    def as_kwargs(self) -> dict:
        """The keyword arguments of ``report.dicom_sr.build_sr`` / ``write_sr``."""
        return {"model_name": self.name, "model_version": self.version, "weights_sha256": self.weights_sha256}


def model_identity(predictor) -> ModelIdentity:
    """The identity of a Predictor loaded from a weights folder or an ensemble of them.

    An ensemble's digest is the members' digests joined by ``+`` in member order, so each
    member can still be checked on its own. A predictor with no weights folder (an ONNX
    graph, a test double) gets ``"unknown"`` rather than an invented digest.
    """
    from fetometry.resources import weights_digest

    config = predictor.config
    folders = config.members or ([config.weights_dir] if config.weights_dir else [])
    try:
        digest = "+".join(weights_digest(folder) for folder in folders) or "unknown"
    except FileNotFoundError:
        digest = "unknown"
    return ModelIdentity(predictor.name, __version__, digest)
