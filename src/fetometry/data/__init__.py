"""Data sets (HC18, a clinic's folder, synthetic phantoms) and subject-grouped splits.

``load(path)`` reads any registered data-set layout (``register_loader``); a new format
is one module with one loader. ``model_split(weights)`` says which images a model
never trained on.
"""

from fetometry.data.loaders import (
    detect_layout,
    load,
    load_annotated,
    load_datasets,
    register_loader,
    registered_loaders,
)

from fetometry.data.hc18 import load_hc18  # isort: skip  (registers "hc18" first: tried before "folder")
from fetometry.data.folder import load_folder  # isort: skip
from fetometry.data.sample import Sample
from fetometry.data.splits import ModelSplit, kfold_subjects, model_split, recipe_split, split_samples, subject_id

__all__ = [
    "ModelSplit",
    "Sample",
    "detect_layout",
    "kfold_subjects",
    "load",
    "load_annotated",
    "load_datasets",
    "load_folder",
    "load_hc18",
    "model_split",
    "recipe_split",
    "register_loader",
    "registered_loaders",
    "split_samples",
    "subject_id",
]
