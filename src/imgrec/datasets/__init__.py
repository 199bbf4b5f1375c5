"""Labelled image data sets: find the files and labels, split them, cache them as uint8.

>>> from imgrec.datasets import load_dataset
>>> data = load_dataset("fashion-mnist", val_split=0.1, seed=0)
>>> print(data.summary())
>>> data.train.images.shape, data.train.labels.shape  # (54000, 28, 28, 1), (54000,)

``load_dataset`` reads folders of photos (one subfolder per class, or dogs-vs-cats
names), zips of them, CIFAR-10/100, MNIST-format IDX files and the built-in data sets
that ``list_datasets`` names. Nothing here imports Keras or TensorFlow.

Modules: ``folders`` (photos in folders and zips), ``formats`` (IDX, CIFAR, .npz),
``builtin`` (data sets by name), ``cache`` (decode once), ``splits`` (seeded splits).
"""

from __future__ import annotations

from imgrec.datasets.base import Dataset, SkippedFile, Split, evaluation_split
from imgrec.datasets.builtin import list_datasets
from imgrec.datasets.loading import load_dataset

__all__ = [
    "Dataset",
    "SkippedFile",
    "Split",
    "evaluation_split",
    "list_datasets",
    "load_dataset",
]
