"""Soft targets from teacher models: knowledge distillation for segmentation.

Hinton, Vinyals and Dean, "Distilling the knowledge in a neural network" (NIPS 2014 deep
learning workshop, arXiv 1503.02531): a student trained towards a teacher's soft outputs
learns what the teacher knows beyond the hard labels. Here the teacher is one model or
an ensemble (their probabilities averaged, ``Predictor.from_ensemble``), run once on every
training canvas before the first epoch, and each target becomes

    target = (1 - weight) x reference mask + weight x teacher probability.

Dice + BCE are then taken against that blend. BCE is linear in its target, so its part is
exactly (1 - weight) x BCE(reference) + weight x BCE(teacher); the soft Dice is of the
blend. The blend is made before augmentation, so every geometric transform moves it with
the image, as it moves the mask. Validation stays against the reference masks.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
from tqdm import tqdm

from fetometry.training.config import check_distill_weight
from fetometry.training.dataset import SegmentationDataset

log = logging.getLogger(__name__)


def blend_teacher_targets(
    dataset: SegmentationDataset,
    teachers: Sequence[str],
    weight: float,
    *,
    batch_size: int = 8,
    progress: bool = True,
) -> None:
    """Replace ``dataset``'s targets by the blend of its masks and the teachers' averaged
    probability on the same canvases (module docstring). Teachers are shipped model names
    or weights folders on the dataset's canvas."""
    from fetometry.inference.predictor import Predictor

    weight = check_distill_weight(weight)
    if not teachers or weight == 0.0:
        return
    teacher = Predictor.from_weights(",".join(str(t) for t in teachers))
    if tuple(teacher.canvas_hw) != tuple(dataset.canvas_hw):
        raise ValueError(
            f"the teachers segment on a {teacher.canvas_hw} canvas, this run on {dataset.canvas_hw}: use one canvas"
        )
    log.info("distilling from %s (weight %.2f) on %d canvases", teacher.name, weight, len(dataset))
    for start in tqdm(range(0, len(dataset), batch_size), desc="teacher targets", disable=not progress, leave=False):
        indices = range(start, min(start + batch_size, len(dataset)))
        canvases = [dataset.images[i].astype(np.float32) / 255.0 for i in indices]
        # A canvas is its own letterbox: the teacher's maps come back on the same grid.
        for i, prediction in zip(indices, teacher.predict_batch(canvases)):
            mask = dataset.masks[i].astype(np.float32) / 255.0
            target = (1.0 - weight) * mask + weight * prediction.probability
            dataset.masks[i] = np.round(np.clip(target, 0.0, 1.0) * 255).astype(np.uint8)
