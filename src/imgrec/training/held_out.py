"""The images a training run held out: a data set split the way the run split it.

A model carries its run's validation fraction, seed and limit per class in its training
record, so the split can be drawn again later (by ``evaluate`` and by export's accuracy
check) without ever counting a training image.
"""

from __future__ import annotations

import os
from typing import Any

from imgrec.datasets import Dataset, load_dataset


def load_held_out(
    dataset: str | os.PathLike,
    input_shape: tuple[int, int, int],
    training: dict[str, Any] | None,
    *,
    val_split: float | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> Dataset:
    """``dataset`` at a model's input size, split as the model's training run split it.

    Args:
        dataset: a data set name or path.
        input_shape: the model's height, width and channels.
        training: the model's training record (``ModelInfo.training``), or None.
        val_split, seed: override the run's; by default its own (and its limit per
            class, since the validation images are drawn from the limited ones), so
            that the validation split holds no training image.
        progress: show the decoding progress bar.
    """
    trained = training or {}
    height, width, channels = input_shape
    return load_dataset(
        dataset,
        image_size=(height, width),
        channels=channels,
        val_split=trained.get("val_split", 0.1) if val_split is None else val_split,
        seed=trained.get("seed", 0) if seed is None else seed,
        limit_per_class=trained.get("limit_per_class"),
        progress=progress,
    )
