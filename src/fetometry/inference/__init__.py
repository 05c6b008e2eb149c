"""Predictor: wraps a network; returns probability maps on the ORIGINAL pixel grid.

``Predictor`` and ``Prediction`` load lazily, so a CLI parser can read ``inference.backend.BACKENDS``
without importing torch.
"""

__all__ = ["Prediction", "Predictor"]


def __getattr__(name: str):
    if name in __all__:
        from fetometry.inference import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
