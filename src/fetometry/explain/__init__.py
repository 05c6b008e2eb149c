"""Explainability: class-activation maps, occlusion, uncertainty and their checks.

- ``cam``: Grad-CAM, Grad-CAM++, HiResCAM (own hooks) and occlusion for any registered
  segmentation network, on the predicted head region or its boundary band.
- ``uncertainty``: test-time augmentation, MC dropout and diffusion samples carried to
  the head circumference (value +/- spread in mm) and a per-image confidence.
- ``quality``: sanity and faithfulness measured: model-parameter randomisation,
  deletion / insertion curves, localisation; ``evaluate_explanations`` over a data set.
- ``figures``: the blended map with the predicted ellipse and a colour bar.
- ``command``: the ``fetometry explain`` verb.
"""

from fetometry.explain.cam import CAM_METHODS, METHODS, Explainer, ExplainError, explain_image

__all__ = ["CAM_METHODS", "METHODS", "ExplainError", "Explainer", "explain_image"]
