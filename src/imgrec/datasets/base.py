"""The data set types, and what every reader shares: keys, and image conversions."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from imgrec.core.errors import DatasetError

#: Bumped when a change in the readers changes the arrays they produce, so that
#: caches and fingerprints made by an older version are not mistaken for current ones.
FORMAT_VERSION = 1

#: The size folder images are decoded to when the caller gives none.
DEFAULT_IMAGE_SIZE = (128, 128)


@dataclass
class Split:
    """One part of a data set: images and their labels, in the same order.

    Attributes:
        images: uint8 array, N x H x W x C with C = 1 (grey) or 3 (RGB). It may be
            read-only (an ``np.memmap`` of the decode cache, or a view of a file's
            bytes): copy it before writing to it.
        labels: int64 array of N class indices into ``Dataset.class_names``.
    """

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class SkippedFile:
    """An image that could not be used, and why (empty, truncated, not an image...)."""

    path: str
    reason: str


@dataclass
class Dataset:
    """A labelled image data set, split and ready to train on.

    Attributes:
        name: How people call it: ``"fashion-mnist"``, or the folder's name.
        source: Where it was read from (a folder, an archive, a file).
        class_names: The name of each class; label ``i`` is ``class_names[i]``.
        train: The training images.
        val: The validation images (a ``val/`` folder, or a seeded stratified part of
            the training images), or None.
        test: The data set's own test images (IDX ``t10k`` files, CIFAR's test batch,
            a ``test/`` folder, or the fixed test part of ``mnist`` and ``digits``),
            or None.
        skipped: The files that could not be read, each with its reason.
        fingerprint: SHA-256 (hex) of what defines these arrays: the files with their
            sizes and modification times (or an archive's member names, sizes and
            CRCs), and the options that sized, converted and split them.
    """

    name: str
    source: str
    class_names: tuple[str, ...]
    train: Split
    val: Split | None
    test: Split | None
    skipped: list[SkippedFile] = field(default_factory=list)
    fingerprint: str = ""

    def summary(self) -> str:
        """A few lines for people: the images' shape, then each split and the skips.

        Example::

            fashion-mnist (/usr/share/datasets/fashion-mnist): 10 classes, 28 x 28 x 1
              train  54,000 images (5,400 per class)
              val     6,000 images (600 per class)
              test   10,000 images (1,000 per class)
              skipped 0 files
        """
        _, height, width, channels = self.train.images.shape
        lines = [
            f"{self.name} ({self.source}): {len(self.class_names)} classes, "
            f"{height} x {width} x {channels}"
        ]
        for part in ("train", "val", "test"):
            split = getattr(self, part)
            if split is None:
                continue
            counts = np.bincount(split.labels, minlength=len(self.class_names))
            low, high = int(counts.min()), int(counts.max())
            per_class = f"{low:,}" if low == high else f"{low:,} to {high:,}"
            lines.append(f"  {part:<5} {len(split):>7,} images ({per_class} per class)")
        lines.append(f"  skipped {len(self.skipped):,} file{'' if len(self.skipped) == 1 else 's'}")
        return "\n".join(lines)


@dataclass
class RawData:
    """What a reader returns: the data set's own parts, before the options split it.

    ``parts`` holds ``"train"`` and, where the data set has them, ``"val"`` and
    ``"test"``. ``key`` identifies the files read (names, sizes, mtimes or CRCs).
    ``test_fraction``: built-ins without a test split get this fixed part as test.
    """

    name: str
    source: str
    class_names: tuple[str, ...]
    parts: dict[str, Split]
    key: str
    skipped: list[SkippedFile] = field(default_factory=list)
    test_fraction: float | None = None


def make_key(*parts: object) -> str:
    """SHA-256 (hex) of JSON-able ``parts``, with the format version."""
    text = json.dumps([FORMAT_VERSION, *parts], separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_entry(path: Path, name: str | None = None) -> list:
    """``[name, size, mtime_ns]``: how keys identify a file without reading it."""
    st = os.stat(path)
    return [name if name is not None else path.name, st.st_size, st.st_mtime_ns]


def grey(images: np.ndarray) -> np.ndarray:
    """RGB to grey exactly as Pillow's ``convert("L")`` does (ITU-R 601-2 luma).

    Takes ... x 3 uint8, returns ... x 1 uint8; works through large arrays in chunks.
    """
    out = np.empty((*images.shape[:-1], 1), dtype=np.uint8)
    flat_in, flat_out = images.reshape(-1, 3), out.reshape(-1)
    step = 1 << 22
    for start in range(0, len(flat_in), step):
        rgb = flat_in[start : start + step].astype(np.uint32)
        luma = rgb[:, 0] * 19595 + rgb[:, 1] * 38470 + rgb[:, 2] * 7471 + 0x8000
        flat_out[start : start + step] = luma >> 16
    return out


def resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize one H x W x C uint8 image to ``size`` (height, width), bilinear.

    The aspect ratio is not kept (as in ``keras.utils.image_dataset_from_directory``).
    Pillow's bilinear filter widens its support when shrinking, so it does not alias.
    """
    height, width = size
    if image.shape[:2] == (height, width):
        return image
    if image.shape[-1] == 1:
        out = Image.fromarray(image[..., 0]).resize((width, height), Image.Resampling.BILINEAR)
        return np.asarray(out)[..., np.newaxis]
    out = Image.fromarray(image).resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(out)


def check_labels(labels: np.ndarray, count: int, source: str) -> np.ndarray:
    """Labels as int64, each in ``range(count)``; DatasetError naming ``source`` if not."""
    labels = np.asarray(labels).astype(np.int64, copy=False)
    if labels.ndim != 1:
        raise DatasetError(f"{source}: expected one label per image, got shape {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= count):
        raise DatasetError(
            f"{source}: labels run from {labels.min()} to {labels.max()}, "
            f"but there are {count} classes"
        )
    return labels


def evaluation_split(
    dataset: Dataset, class_names: Sequence[str] | None = None
) -> tuple[str, Split]:
    """The split a model is measured on: the test split, else the validation split.

    Args:
        dataset: the data set.
        class_names: the model's classes; the data set must have the same, in order.

    Raises:
        DatasetError: other classes than the model's, or no test or validation images.
    """
    if class_names is not None and tuple(dataset.class_names) != tuple(class_names):
        raise DatasetError(
            f"{dataset.name}: its classes {list(dataset.class_names)} are not the model's "
            f"{list(class_names)}"
        )
    for name in ("test", "val"):
        split = getattr(dataset, name)
        if split is not None and len(split.labels):
            return name, split
    raise DatasetError(f"{dataset.name}: no test or validation images to evaluate on")
