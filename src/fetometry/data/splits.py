"""Deterministic, subject-grouped splits.

HC18 stores several images of one fetus as ``010_HC.png``, ``010_2HC.png``,
``010_3HC.png``: they must land in the same split, or validation scores leak.
Assignment hashes the subject id with a seed, so it does not depend on file order
and a subject keeps its split when new subjects are added.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

_HC18_NAME = re.compile(r"^(?P<subject>\d+)_(?:\d+)?HC(?:_Annotation)?$", re.IGNORECASE)


def subject_id(filename: str) -> str:
    """Subject of an image file name: ``010_2HC.png`` -> ``010``.

    Names outside the HC18 pattern count as their own subject (their stem), unless a
    data set supplies subjects explicitly.
    """
    stem = filename.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    match = _HC18_NAME.match(stem)
    return match.group("subject") if match else stem


def _unit_hash(subject: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{subject}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_subjects(subjects: Sequence[str], fractions: dict[str, float], seed: int = 0) -> dict[str, str]:
    """Map each subject to a split name; ``fractions`` like {"train": .8, "val": .2}."""
    total = sum(fractions.values())
    if total <= 0 or any(f < 0 for f in fractions.values()):
        raise ValueError(f"split fractions must be non-negative and sum > 0, got {fractions}")
    edges, acc = [], 0.0
    for name, frac in fractions.items():
        acc += frac / total
        edges.append((acc, name))
    out = {}
    for subject in set(subjects):
        u = _unit_hash(subject, seed)
        out[subject] = next((name for edge, name in edges if u < edge), edges[-1][1])
    return out


def split_samples(samples: Sequence[T], fractions: dict[str, float] | None = None, seed: int = 0) -> dict[str, list[T]]:
    """Split samples (anything with a ``subject`` attribute) by subject.

    Default fractions: 80% train, 20% validation.
    """
    fractions = fractions or {"train": 0.8, "val": 0.2}
    assignment = assign_subjects([s.subject for s in samples], fractions, seed)
    out: dict[str, list[T]] = {name: [] for name in fractions}
    for sample in samples:
        out[assignment[sample.subject]].append(sample)
    return out


def kfold_subjects(samples: Sequence[T], k: int = 5, seed: int = 0) -> list[tuple[list[T], list[T]]]:
    """k (train, val) pairs; every subject is validated in exactly one fold."""
    if k < 2:
        raise ValueError(f"k-fold needs k >= 2, got {k}")
    subjects = sorted({s.subject for s in samples}, key=lambda s: _unit_hash(s, seed))
    fold_of = {subject: i % k for i, subject in enumerate(subjects)}
    folds = []
    for fold in range(k):
        val = [s for s in samples if fold_of[s.subject] == fold]
        train = [s for s in samples if fold_of[s.subject] != fold]
        folds.append((train, val))
    return folds
