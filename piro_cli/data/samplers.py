"""Training samples: pairs of two different objects of the same category, both seen from the same V random views."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from piro_cli.errors import DataError


@dataclass(frozen=True)
class PairPlan:
    """Which objects can be paired, decided once per run."""

    by_category: dict[int, np.ndarray]  # category -> indices (into the training objects) of its objects
    skipped_categories: list[int]  # categories with a single object: nothing to pair with


def plan_pairs(categories: np.ndarray, category_names: list[str] | None = None) -> PairPlan:
    """Group training objects by category; categories with one object cannot form pairs and are skipped."""
    groups: dict[int, list[int]] = defaultdict(list)
    for index, category in enumerate(np.asarray(categories).tolist()):
        groups[int(category)].append(index)
    by_category = {c: np.asarray(ix, dtype=np.int64) for c, ix in sorted(groups.items()) if len(ix) >= 2}
    skipped = sorted(c for c, ix in groups.items() if len(ix) < 2)
    if not by_category:
        raise DataError(
            "no training pairs: every category has at most one training object, and PiRO's losses need two different "
            "objects of the same category; prepare more objects per category (or lower --val-fraction)"
        )
    return PairPlan(by_category, skipped)


def sample_pairs(plan: PairPlan, pairs_per_object: int, rng: np.random.Generator) -> np.ndarray:
    """One epoch of pairs, shuffled: (n, 2) object indices.

    As the released sampler (Ncomp items per object, each partner a `random.choice`): every pairable object
    is the first member of `pairs_per_object` pairs, each partner an independent uniform draw from the other
    objects of its category, so with replacement (a partner can repeat, and a category of two objects
    always pairs the same two).
    """
    if pairs_per_object < 1:
        raise DataError(f"--pairs-per-object {pairs_per_object}: must be at least 1")
    pairs = []
    for members in plan.by_category.values():
        for anchor in members:
            partners = rng.choice(members[members != anchor], size=pairs_per_object, replace=True)
            pairs.extend((int(anchor), int(p)) for p in partners)
    pairs_array = np.asarray(pairs, dtype=np.int64)
    return pairs_array[rng.permutation(len(pairs_array))]


def sample_views(num_available: int, num_views: int | None, count: int, rng: np.random.Generator) -> np.ndarray:
    """For `count` pairs (or objects), `num_views` distinct random view indices each, in random order (all views, shuffled, when None).

    A pair's two objects take the same row, views k1..kV of a and of b in the same order, as the released
    sampler does (one `random.sample` of the viewpoints per pair).
    """
    wanted = checked_views(num_available, num_views)
    rows = [rng.permutation(num_available)[:wanted] for _ in range(count)]
    return np.asarray(rows, dtype=np.int64).reshape(count, wanted)


def checked_views(num_available: int, num_views: int | None) -> int:
    """The number of views a training object shows (`--views`, None: all), checked against the data."""
    wanted = num_available if num_views is None else num_views
    if not 1 <= wanted <= num_available:
        raise DataError(f"--views {num_views}: the data has {num_available} views per object; choose 1 to {num_available}")
    return wanted


def carve_validation(categories: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded, category-stratified split of training objects: (train indices, validation indices).

    Each category gives round(fraction * n) objects to validation, but always
    keeps two for training (a pair) and gives at least one when it has three or more.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"--val-fraction {fraction}: must be between 0 and 1 (e.g. 0.2)")
    rng = np.random.default_rng(seed)
    categories = np.asarray(categories)
    val: list[int] = []
    for category in np.unique(categories):
        members = np.flatnonzero(categories == category)
        n = len(members)
        take = min(max(int(round(fraction * n)), 1 if n >= 3 else 0), max(n - 2, 0))
        val.extend(rng.permutation(members)[:take].tolist())
    val_indices = np.sort(np.asarray(val, dtype=np.int64))
    train_indices = np.setdiff1d(np.arange(len(categories)), val_indices)
    return train_indices, val_indices


def fold_validation(categories: np.ndarray, folds: int, fold: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Fold `fold` (1 to `folds`) of a seeded, category-stratified K-fold split of training objects: (train indices,
    validation indices). Each category's objects are shuffled and dealt to the folds in turn (the category's offset
    also seeded, so that small categories do not all land in fold 1); the K folds are disjoint and cover every
    object, so K runs see every object validated once (object-level cross-validation)."""
    if folds < 2:
        raise DataError(f"--folds {folds}: give at least 2")
    if not 1 <= fold <= folds:
        raise DataError(f"--fold {fold}: give a fold from 1 to {folds}")
    rng = np.random.default_rng(seed)
    categories = np.asarray(categories)
    assigned = np.empty(len(categories), dtype=np.int64)
    for category in np.unique(categories):
        members = rng.permutation(np.flatnonzero(categories == category))
        assigned[members] = (np.arange(len(members)) + rng.integers(folds)) % folds
    val_indices = np.flatnonzero(assigned == fold - 1)
    return np.flatnonzero(assigned != fold - 1), val_indices


def object_batches(num_objects: int, objects_per_batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    """One epoch of the PIEs baselines: the objects 0..num_objects-1 shuffled and cut into batches of
    `objects_per_batch`, each object exactly once (the released code's DataLoader(shuffle=True)).

    A last batch of a single object joins the one before it: PI-TC compares each view with the other objects
    of its batch, and the released PI-TC code fails on a one-object batch.
    """
    if objects_per_batch < 1:
        raise DataError(f"--batch-objects {objects_per_batch}: must be at least 1")
    if num_objects < 1:
        raise DataError("no training objects: prepare more objects (or lower --val-fraction)")
    order = rng.permutation(num_objects)
    batches = [order[start : start + objects_per_batch] for start in range(0, num_objects, objects_per_batch)]
    if len(batches) > 1 and len(batches[-1]) == 1:
        batches[-2:] = [np.concatenate(batches[-2:])]
    return batches
