"""Seeded, stratified selection: the test part of built-ins, the limit, the val part.

Everything here chooses indices; images are only gathered at the end (a read from
the memory-mapped cache), in index order, so the same seed gives the same arrays in
the same order.
"""

from __future__ import annotations

import numpy as np

from imgrec.core.errors import DatasetError
from imgrec.datasets.base import RawData, Split

# The fixed test part of built-ins without a test split does not follow the user's
# seed: every run, whatever its seed, is evaluated on the same images.
_FIXED_TEST_SEED = 20_240_601

_LIMIT, _VAL = 1, 2  # independent random streams per seed


def split(
    raw: RawData, *, val_split: float, limit_per_class: int | None, seed: int
) -> tuple[Split, Split | None, Split | None]:
    """Cut ``raw`` into train, val and test as ``load_dataset`` documents it."""
    source = raw.parts["train"]
    test = raw.parts.get("test")
    val = raw.parts.get("val")
    pool = np.arange(len(source))
    if test is None and raw.test_fraction:
        picked, pool = stratified(source.labels, raw.test_fraction, _FIXED_TEST_SEED)
        test = take(source, picked)
    if limit_per_class is not None:
        pool = first_per_class(source.labels, pool, limit_per_class, [seed, _LIMIT])
    if val is None and val_split > 0:
        picked, rest = stratified(source.labels[pool], val_split, [seed, _VAL])
        if len(picked):
            val = take(source, pool[picked])
            pool = pool[rest]
    train = take(source, pool)
    counts = np.bincount(train.labels, minlength=len(raw.class_names))
    empty = [raw.class_names[i] for i in np.flatnonzero(counts == 0)]
    if empty:
        raise DatasetError(
            f"{raw.source}: no training images for class{'es' if len(empty) > 1 else ''} "
            f"{', '.join(map(repr, empty[:5]))}{' ...' if len(empty) > 5 else ''}"
        )
    return train, val, test


def stratified(
    labels: np.ndarray, fraction: float, seed: int | list[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Pick ``fraction`` of each class at random: (picked, rest) positions, each sorted.

    Each class gives ``round(count * fraction)`` images, at least one and never all of
    them when it has two or more (so every class stays on both sides).
    """
    rng = np.random.default_rng(seed)
    picked = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        count = int(len(members) * fraction + 0.5)
        count = min(max(count, 1), len(members) - 1) if len(members) >= 2 else 0
        picked.append(rng.permutation(members)[:count])
    chosen = np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[chosen] = False
    return chosen, np.flatnonzero(mask)


def first_per_class(
    labels: np.ndarray, pool: np.ndarray, limit: int, seed: int | list[int]
) -> np.ndarray:
    """The first ``limit`` of each class of ``pool`` after a seeded shuffle, sorted."""
    rng = np.random.default_rng(seed)
    shuffled = rng.permutation(pool)
    kept = []
    for label in np.unique(labels[pool]):
        kept.append(shuffled[labels[shuffled] == label][:limit])
    return np.sort(np.concatenate(kept)) if kept else pool[:0]


def take(split: Split, indices: np.ndarray) -> Split:
    """The images at ``indices`` (sorted); all of them without a copy (a memmap stays one)."""
    if len(indices) == len(split) and np.array_equal(indices, np.arange(len(split))):
        return split
    return Split(np.asarray(split.images[indices]), split.labels[indices])
