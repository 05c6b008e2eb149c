"""Data sets (HC18, a clinic's folder, synthetic phantoms) and subject-grouped splits."""

from fetometry.data.folder import load_folder
from fetometry.data.hc18 import load_hc18
from fetometry.data.sample import Sample
from fetometry.data.splits import kfold_subjects, split_samples, subject_id

__all__ = ["Sample", "kfold_subjects", "load_folder", "load_hc18", "split_samples", "subject_id"]
