"""Data sets (HC18, a clinic's folder, synthetic phantoms) and subject-grouped splits."""

from fetometry.data.sample import Sample
from fetometry.data.splits import kfold_subjects, split_samples, subject_id

__all__ = ["Sample", "kfold_subjects", "split_samples", "subject_id"]
