"""Deterministic, subject-grouped splits.

HC18 stores several images of one fetus as ``010_HC.png``, ``010_2HC.png``,
``010_3HC.png``: they must land in the same split, or validation scores leak.
Assignment hashes the subject id with a seed, so it does not depend on file order
and a subject keeps its split when new subjects are added.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from fetometry.weights_config import WeightsConfig

log = logging.getLogger(__name__)

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


def recipe_split(samples: Sequence[T], recipe: Mapping) -> dict[str, list[T]]:
    """{"train", "val"} of a training recipe (a weights folder's ``training.recipe``):
    fold ``fold`` of a subject-grouped k-fold when ``folds`` > 1, else the fixed split of
    ``val_fraction``, with ``split_seed``; samples keep their order."""
    folds, fold = recipe.get("folds") or 0, recipe.get("fold") or 0
    seed = recipe.get("split_seed") or 0
    if folds > 1:
        if not 0 <= fold < folds:
            raise ValueError(f"fold {fold} does not exist: use 0..{folds - 1}")
        train, val = kfold_subjects(samples, folds, seed=seed)[fold]
        return {"train": train, "val": val}
    fraction = recipe.get("val_fraction")
    fraction = 0.2 if fraction is None else fraction
    return split_samples(samples, {"train": 1 - fraction, "val": fraction}, seed=seed)


def _recipe_key(recipe: Mapping) -> tuple:
    """What decides a recipe's split: two recipes with one key split every data set alike."""
    folds = recipe.get("folds") or 0
    if folds > 1:
        return ("kfold", folds, recipe.get("fold") or 0, recipe.get("split_seed") or 0)
    fraction = recipe.get("val_fraction")
    return ("fixed", 0.2 if fraction is None else fraction, recipe.get("split_seed") or 0)


def _combine(parts: Sequence[Mapping[str, set[str]]]) -> dict[str, set[str]]:
    """An ensemble's split from its members': "train" = in every member's training split,
    "val" = in every member's validation split and in no member's training split (an
    image one member trained on is no validation image of the ensemble)."""
    trained = set.union(*(set(p.get("train", ())) for p in parts))
    return {
        "train": set.intersection(*(set(p.get("train", ())) for p in parts)),
        "val": set.intersection(*(set(p.get("val", ())) for p in parts)) - trained,
    }


@dataclass(frozen=True)
class ModelSplit:
    """Which images a model (or every member of an ensemble) trained on and which it never
    saw, from its weights folder(s): the ``split.json`` lists, or the recorded recipe
    (``config.json`` ``training.recipe``: fixed split or k-fold fold) re-applied to a data set.

    ``source``: "split.json" or "recipe"; ``lists``: per member, part -> image names (the
    split.json lists; empty with the recipe); ``recipes``: per member, its training recipe.
    """

    source: str
    lists: tuple[Mapping[str, frozenset[str]], ...]
    recipes: tuple[Mapping, ...]

    @property
    def members_agree(self) -> bool:
        """True if every member has the same split (one model: always)."""
        if self.source == "split.json":
            return all(lists == self.lists[0] for lists in self.lists[1:])
        return len({_recipe_key(r) for r in self.recipes}) == 1

    @property
    def rule(self) -> str:
        """How the split was formed, in words (for reports)."""
        members = len(self.lists if self.source == "split.json" else self.recipes)
        if members == 1:
            return f"the model's {self.source}"
        if self.members_agree:
            return f"the members' {self.source} (identical)"
        return f"images in EVERY member's training split train, in every member's validation split validate (the members' {self.source} differ)"

    def names(self) -> dict[str, str]:
        """name -> part from the split.json lists (identical members: all their parts;
        otherwise "train"/"val" as ``_combine`` forms them). Raises ValueError for a
        recipe split: that one needs the data set (``select``)."""
        if self.source != "split.json":
            raise ValueError("a recipe split names its images only for a data set: use select(samples)")
        parts = self.lists[0] if self.members_agree else _combine(self.lists)
        return {name: part for part, names in parts.items() for name in names}

    def select(self, samples: Sequence[T]) -> dict[str, list[T]]:
        """{"train", "val"}: the samples (anything with ``name`` and ``subject``) in each
        part, in their order; samples in neither are left out."""
        if self.source == "split.json":
            part_of = self.names()
        else:
            per_member = [recipe_split(samples, r) for r in self.recipes]
            parts = [{part: {s.name for s in group} for part, group in split.items()} for split in per_member]
            part_of = {
                name: part
                for part, names in (parts[0] if self.members_agree else _combine(parts)).items()
                for name in names
            }
        return {part: [s for s in samples if part_of.get(s.name) == part] for part in ("train", "val")}

    def validation(self, samples: Sequence[T]) -> list[T]:
        """The samples the model never trained on: ``select(samples)["val"]``."""
        return self.select(samples)["val"]


def _read_member(folder: Path) -> tuple[Mapping[str, frozenset[str]] | None, Mapping]:
    split_file = folder / "split.json"
    lists = None
    if split_file.is_file():
        lists = {part: frozenset(names) for part, names in json.loads(split_file.read_text(encoding="utf-8")).items()}
    recipe = WeightsConfig.read(folder, complete=False).recipe if (folder / "config.json").is_file() else {}
    return lists, recipe


def model_split(
    weights: str | Path | Sequence[str | Path] | WeightsConfig | Mapping, *, source: str = "auto"
) -> ModelSplit:
    """Which images a model never trained on: ``ModelSplit.validation(samples)``.

    Args:
        weights: a weights folder, the folders of an ensemble's members, or a Predictor's
            ``config`` (a WeightsConfig, or a dict in config.json form: its ``weights_dir``
            or ``members``, else its ``training`` recipe).
        source: "split.json" (the lists the model was trained with; every folder must
            have one), "recipe" (the recorded recipe re-applied to the data set, folds
            included: the benchmark's one protocol) or "auto" (split.json where every
            member has one, else the recipe, with a warning).

    Raises:
        ValueError: an unknown ``source``.
        FileNotFoundError: ``source="split.json"`` and a folder has no split.json.
    """
    if source not in ("auto", "split.json", "recipe"):
        raise ValueError(f"unknown split source {source!r}; use auto, split.json or recipe")
    if isinstance(weights, Mapping):
        weights = WeightsConfig.from_dict(weights)
    if isinstance(weights, WeightsConfig):
        folders = list(weights.members) or ([weights.weights_dir] if weights.weights_dir else [])
        recipes = [m.get("recipe", {}) for m in weights.training.get("members", [weights.training])]
    else:
        folders = [weights] if isinstance(weights, (str, Path)) else list(weights)
        recipes = []
    folders = [Path(f) for f in folders]
    members = [_read_member(f) for f in folders if f.is_dir()]
    if not recipes:
        recipes = [recipe for _, recipe in members]
    have_lists = len(members) == len(folders) > 0 and all(lists is not None for lists, _ in members)
    if source == "split.json" or (source == "auto" and have_lists):
        if not have_lists:
            missing = [str(f) for f in folders if not (f / "split.json").is_file()] or ["(no weights folder)"]
            raise FileNotFoundError(f"{', '.join(missing)}: no split.json; it lists the images the model trained on")
        return ModelSplit("split.json", tuple(lists for lists, _ in members), tuple(recipes))
    if source == "auto":
        log.warning(
            "%s: no split.json; using the recorded recipe's subject split", ", ".join(map(str, folders)) or "model"
        )
    if not recipes:
        raise ValueError(
            "the model records no training recipe: give its weights folder (config.json) or use split='all'"
        )
    return ModelSplit("recipe", (), tuple(recipes))
