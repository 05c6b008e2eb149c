"""Predictor: wraps a network; returns probability maps on the ORIGINAL pixel grid."""

from fetometry.inference.predictor import Prediction, Predictor

__all__ = ["Prediction", "Predictor"]
