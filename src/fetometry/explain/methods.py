"""The explanation method names, in one place that imports nothing heavy (CLI parsers and forms read them)."""

#: Class-activation maps computed from a layer's activations and gradients (``explain.cam``).
CAM_METHODS = ("gradcam", "gradcampp", "hirescam")
#: Every saliency-map method: the CAM family and occlusion.
MAP_METHODS = (*CAM_METHODS, "occlusion")
#: What ``fetometry explain`` accepts: the maps and the per-pixel uncertainty of the members.
VERB_METHODS = (*MAP_METHODS, "uncertainty")
