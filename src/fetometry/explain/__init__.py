"""Explainability: class-activation maps, occlusion, uncertainty and their checks.

- ``cam``: Grad-CAM, Grad-CAM++, HiResCAM (own hooks) and occlusion for any registered
  segmentation network, on the predicted head region or its boundary band.
- ``uncertainty``: test-time augmentation, MC dropout and diffusion samples carried to
  the head circumference (value +/- spread in mm) and a per-image confidence.
- ``quality``: sanity and faithfulness measured: model-parameter randomisation,
  deletion / insertion curves, localisation; ``evaluate_explanations`` over a data set.
- ``figures``: the blended map with the predicted ellipse and a colour bar.
- ``jobs``: the work behind ``fetometry explain`` (the verb is ``fetometry.cli.explain``).
- ``methods``: the method names, importable without torch.
"""

from fetometry.explain.methods import CAM_METHODS, MAP_METHODS

__all__ = ["CAM_METHODS", "MAP_METHODS", "METHODS", "ExplainError", "Explainer", "explain_image"]


def __getattr__(name: str):
    # The CAM code needs torch; importing the package (for its method names) should not.
    if name in ("METHODS", "ExplainError", "Explainer", "explain_image"):
        from fetometry.explain import cam

        return getattr(cam, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
