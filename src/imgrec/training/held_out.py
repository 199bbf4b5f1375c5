"""The images a training run held out: a data set split the way the run split it.

A model carries its run's validation fraction, seed and limit per class in its training
record, so the split can be drawn again later (by ``evaluate`` and by export's accuracy
check) without ever counting a training image.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from imgrec.datasets import Dataset, load_dataset
from imgrec.training.record import SplitSettings, TrainingRecord


def load_held_out(
    dataset: str | os.PathLike,
    input_shape: tuple[int, int, int],
    training: TrainingRecord | Mapping[str, Any] | None,
    *,
    val_split: float | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> Dataset:
    """``dataset`` at a model's input size, split as the model's training run split it.

    Args:
        dataset: a data set name or path.
        input_shape: the model's height, width and channels.
        training: the model's training record (``ModelInfo.training``, or a classic
            model's ``training``; a ``TrainingRecord`` too), or None.
        val_split, seed: override the run's; by default its own (and its limit per
            class, since the validation images are drawn from the limited ones), so
            that the validation split holds no training image.
        progress: show the decoding progress bar.
    """
    if isinstance(training, TrainingRecord):
        split = training.split
    else:
        split = SplitSettings.from_json(training)
    height, width, channels = input_shape
    return load_dataset(
        dataset,
        image_size=(height, width),
        channels=channels,
        val_split=split.val_split if val_split is None else val_split,
        seed=split.seed if seed is None else seed,
        limit_per_class=split.limit_per_class,
        progress=progress,
    )
