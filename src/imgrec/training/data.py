"""The data of a training run: loaded once, split as the run's settings say."""

from __future__ import annotations

import os
from typing import Any

from imgrec.datasets import Dataset, load_dataset
from imgrec.training.record import SplitSettings


def load_training_data(
    spec: str | os.PathLike | Dataset,
    split: SplitSettings,
    *,
    image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    folder_size: tuple[int, int] | None = None,
    val_split_if_test: float | None = None,
) -> Dataset:
    """``spec`` loaded and split for training (a loaded ``Dataset`` is used as it is).

    Args:
        spec: a data set name or path, or a loaded data set.
        split: the validation fraction, seed and limit per class.
        image_size: the size every image is brought to (None: array data sets keep
            theirs, photo folders take ``folder_size``).
        channels: 1 or 3 to convert to, or None to keep the data's.
        folder_size: the size for photo folders when ``image_size`` is None.
        val_split_if_test: the fraction to hold out instead of ``split.val_split``
            where the data set has a test split (None: ``split.val_split`` always).
    """
    if isinstance(spec, Dataset):
        return spec
    return load_dataset(
        spec,
        image_size=image_size,
        default_image_size=folder_size,
        channels=channels,
        val_split=split.val_split,
        limit_per_class=split.limit_per_class,
        seed=split.seed,
        val_split_if_test=val_split_if_test,
    )


def data_report(data: Dataset) -> dict[str, Any]:
    """The data set's part of ``train``'s result: its summary and the files skipped."""
    return {"dataset": data.summary(), "skipped": [vars(s) for s in data.skipped]}
