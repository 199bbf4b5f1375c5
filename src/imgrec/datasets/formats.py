"""Image arrays in their published file formats: IDX, CIFAR "python version", Keras .npz.

- IDX (MNIST, Fashion-MNIST, and their kin): ``train-images-idx3-ubyte`` and
  ``train-labels-idx1-ubyte``, optionally ``t10k-...`` for the test split, each
  gzipped or not (the content is sniffed, not the name). The header's magic number
  and sizes are checked against the data: a truncated or mismatched file is a
  ``DatasetError`` naming it.
- CIFAR-10 and CIFAR-100, the ``.tar.gz`` from https://www.cs.toronto.edu/~kriz/cifar.html
  or its extracted folder. The batches are pickles: they are read with a restricted
  unpickler (:mod:`imgrec.core.safe_pickle`) that builds NumPy arrays and plain containers
  only, so a hostile file is refused (``UnsafeFileError``) instead of running code.
- Keras's ``mnist.npz`` (``x_train``, ``y_train``, ``x_test``, ``y_test``), read
  with ``allow_pickle=False``.

These hold images at their native size, so they need no decode cache.
"""

from __future__ import annotations

import gzip
import re
import struct
import tarfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np

from imgrec.core import safe_pickle
from imgrec.core.errors import DatasetError, UnsafeFileError
from imgrec.datasets.base import RawData, Split, check_labels, file_entry, make_key

#: The ten classes of Fashion-MNIST, in label order.
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)

#: The largest array an IDX header may declare (bytes). EMNIST's largest is 550 MB.
MAX_ARRAY_BYTES = 2 * 1024**3

#: The largest CIFAR batch file read (CIFAR-100's ``train`` is 155 MB): a small
#: .tar.gz cannot make imgrec hold gigabytes of zeros.
MAX_BATCH_BYTES = 512 * 1024**2
#: The most bytes of CIFAR batches read in all (CIFAR-10's six files hold 178 MB): a
#: .tar.gz of a thousand compressed batches cannot either.
MAX_CIFAR_BYTES = 2 * 1024**3

_IDX_NAME = re.compile(
    r"^(?P<split>train|t10k|test)-(?P<kind>images|labels)[.-]idx[13]-ubyte(\.gz)?$", re.IGNORECASE
)
_IDX_UBYTE = 0x08
_GZIP_MAGIC = b"\x1f\x8b"

_CIFAR_BATCH = re.compile(r"^data_batch_(\d+)$")
_CIFAR_FILES = re.compile(r"^(data_batch_\d+|test_batch|batches\.meta|train|test|meta)$")
_CIFAR_REFUSAL = (
    "a CIFAR batch should hold arrays and lists only, and this one asks to run or build "
    "other objects"
)


# --- IDX ---------------------------------------------------------------------------


def idx_files(folder: Path) -> dict[tuple[str, str], Path]:
    """The IDX files in ``folder``: ``{("train" | "test", "images" | "labels"): path}``.

    Where both exist, the uncompressed file is preferred over the ``.gz``.
    """
    found: dict[tuple[str, str], Path] = {}
    try:
        children = sorted(folder.iterdir())
    except OSError:
        return found
    for path in children:
        match = _IDX_NAME.match(path.name)
        if match and path.is_file():
            split = "train" if match["split"].lower() == "train" else "test"
            found.setdefault((split, match["kind"].lower()), path)
    return found


def is_idx_name(name: str) -> bool:
    """Whether ``name`` is an IDX file's name (``train-images-idx3-ubyte.gz``...)."""
    return _IDX_NAME.match(name) is not None


def is_idx_folder(folder: Path) -> bool:
    """Whether ``folder`` holds IDX training images and labels."""
    found = idx_files(folder)
    return ("train", "images") in found and ("train", "labels") in found


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read one IDX file of unsigned bytes (gzipped or not) into a uint8 array.

    Args:
        path: The file.
        ndim: The number of dimensions expected (1 for labels, 3 for images), or
            None for any.

    Raises:
        DatasetError: Not an IDX file of unsigned bytes, not ``ndim`` dimensions,
            truncated or longer than its header says, or unreadable.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == _GZIP_MAGIC
            raw.seek(0)
            with gzip.GzipFile(fileobj=raw) if gzipped else raw as f:
                return _read_idx(f, path, ndim)
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: cannot read it ({e})") from e


def _read_idx(f: IO[bytes], path: Path, ndim: int | None) -> np.ndarray:
    header = f.read(4)
    if len(header) < 4 or header[:2] != b"\0\0" or header[2] != _IDX_UBYTE:
        raise DatasetError(f"{path}: not an IDX file of unsigned bytes (magic {header.hex()})")
    if ndim is not None and header[3] != ndim:
        what = {1: "labels", 3: "images"}.get(ndim, f"{ndim} dimensions")
        raise DatasetError(
            f"{path}: expected IDX {what} (magic 0x{0x800 + ndim:08x}), "
            f"found magic 0x{header.hex()}"
        )
    dims_bytes = f.read(4 * header[3])
    if len(dims_bytes) < 4 * header[3]:
        raise DatasetError(f"{path}: truncated in its header")
    dims = struct.unpack(f">{header[3]}I", dims_bytes)
    size = int(np.prod(dims, dtype=np.int64))
    if size > MAX_ARRAY_BYTES:
        raise DatasetError(f"{path}: the header declares {dims}, {size:,} bytes: too large")
    data = f.read(size)
    if len(data) < size:
        raise DatasetError(
            f"{path}: truncated: its header declares {' x '.join(map(str, dims))} "
            f"= {size:,} bytes, the file holds {len(data):,}"
        )
    if f.read(1):
        raise DatasetError(f"{path}: longer than its header declares ({dims})")
    return np.frombuffer(data, dtype=np.uint8).reshape(dims)


def read_idx_folder(folder: Path, *, name: str | None = None) -> RawData:
    """Read a folder of IDX files (MNIST's layout); see :func:`idx_files`.

    Fashion-MNIST (recognised by ``name`` or the folder's name) gets its ten class
    names; other data sets are named by their labels ("0" to "9" for MNIST).
    """
    found = idx_files(folder)
    name = name or folder.name
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in ("train", "test"):
        images_path, labels_path = found.get((split, "images")), found.get((split, "labels"))
        if images_path is None and labels_path is None:
            if split == "test":
                continue
            raise DatasetError(f"{folder}: no train-images-idx3-ubyte and train-labels-idx1-ubyte")
        if images_path is None or labels_path is None:
            have = images_path or labels_path
            raise DatasetError(f"{folder}: {have.name} is there, but not its {split} partner")
        images = read_idx(images_path, 3)
        labels = read_idx(labels_path, 1)
        if len(images) != len(labels):
            raise DatasetError(
                f"{images_path} holds {len(images):,} images, "
                f"but {labels_path} {len(labels):,} labels"
            )
        parts[split] = (images[..., np.newaxis], labels)
    if not parts:
        raise DatasetError(f"{folder}: no IDX files (train-images-idx3-ubyte[.gz]...)")
    if "fashion" in f"{name} {folder.name}".lower():
        class_names = FASHION_MNIST_CLASSES
        splits = {
            k: Split(x, check_labels(y, len(class_names), str(folder)))
            for k, (x, y) in parts.items()
        }
    else:
        class_names, splits = _numbered_classes(parts)
    return RawData(
        name=name,
        source=str(folder),
        class_names=class_names,
        parts=splits,
        key=make_key("idx", [file_entry(p) for p in sorted(found.values())]),
    )


def _numbered_classes(
    parts: dict[str, tuple[np.ndarray, np.ndarray]],
) -> tuple[tuple[str, ...], dict[str, Split]]:
    """Classes named by their label values ("0".."9"), relabelled 0..K-1 if there are gaps."""
    values = np.unique(np.concatenate([y for _, y in parts.values()]))
    names = tuple(str(v) for v in values.tolist())
    if np.array_equal(values, np.arange(len(values))):
        return names, {k: Split(x, y.astype(np.int64)) for k, (x, y) in parts.items()}
    return names, {
        k: Split(x, np.searchsorted(values, y).astype(np.int64)) for k, (x, y) in parts.items()
    }


# --- Keras .npz ---------------------------------------------------------------------


def read_npz(path: Path, *, name: str | None = None) -> RawData:
    """Read a Keras-style ``.npz`` (``x_train``, ``y_train``, optional ``x_test``, ``y_test``)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test") if k in f}
    except (OSError, ValueError, zlib.error, EOFError) as e:
        raise DatasetError(f"{path}: not a readable .npz file ({e})") from e
    parts: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for split in ("train", "test"):
        x, y = arrays.get(f"x_{split}"), arrays.get(f"y_{split}")
        if x is None and y is None and split == "test":
            continue
        if x is None or y is None:
            raise DatasetError(f"{path}: expected arrays x_{split} and y_{split}")
        if (
            x.dtype != np.uint8
            or x.ndim not in (3, 4)
            or (x.ndim == 4 and x.shape[-1] not in (1, 3))
        ):
            raise DatasetError(
                f"{path}: x_{split} should be uint8 images, N x H x W (x C), "
                f"got {x.dtype} {x.shape}"
            )
        y = np.asarray(y).reshape(-1)  # Keras's CIFAR labels are N x 1
        if len(x) != len(y) or not np.issubdtype(y.dtype, np.integer):
            raise DatasetError(
                f"{path}: x_{split} and y_{split} do not match ({x.shape}, {y.shape})"
            )
        parts[split] = (x[..., np.newaxis] if x.ndim == 3 else x, y)
    class_names, splits = _numbered_classes(parts)
    return RawData(
        name=name or path.stem,
        source=str(path),
        class_names=class_names,
        parts=splits,
        key=make_key("npz", [file_entry(path)]),
    )


# --- CIFAR ------------------------------------------------------------------------


def is_cifar_folder(folder: Path) -> bool:
    """Whether ``folder`` holds CIFAR-10 or CIFAR-100 python batches."""
    try:
        names = {p.name for p in folder.iterdir() if p.is_file()}
    except OSError:
        return False
    return _cifar_kind(names) is not None


def _cifar_kind(names: set[str]) -> str | None:
    if "batches.meta" in names and any(_CIFAR_BATCH.match(n) for n in names):
        return "cifar10"
    if {"meta", "train"} <= names:
        return "cifar100"
    return None


def read_cifar(path: Path) -> RawData:
    """Read CIFAR-10 or CIFAR-100 from its ``.tar.gz`` (unextracted) or its folder.

    Raises:
        UnsafeFileError: A batch asks to build objects other than arrays and lists.
        DatasetError: The files are missing, damaged, or not CIFAR batches.
    """
    batches: dict[str, dict] = {}
    entries = []
    if path.is_dir():
        for file in sorted(path.iterdir()):
            if _CIFAR_FILES.match(file.name) and file.is_file():
                entries.append(file_entry(file))
                _check_batch_size(str(file), entries[-1][1], entries)
                batches[file.name] = _unpickle(file.read_bytes(), str(file))
    else:
        try:
            with tarfile.open(path, mode="r:*") as tar:
                for member in tar:  # one pass: a .tar.gz is read from the start
                    base = member.name.rsplit("/", 1)[-1]
                    if not (member.isfile() and _CIFAR_FILES.match(base)) or base in batches:
                        continue
                    label = f"{path}:{member.name}"
                    entries.append([member.name, member.size, member.mtime])
                    _check_batch_size(label, member.size, entries)
                    f = tar.extractfile(member)
                    batches[base] = _unpickle(f.read() if f else b"", label)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise DatasetError(f"{path}: not a readable CIFAR archive ({e})") from e
    kind = _cifar_kind(set(batches))
    if kind is None:
        raise DatasetError(
            f"{path}: no CIFAR batches (data_batch_1... and batches.meta for CIFAR-10; "
            "train, test and meta for CIFAR-100)"
        )
    if kind == "cifar10":
        meta, names_key, labels_key = batches["batches.meta"], "label_names", "labels"
        train = sorted((n for n in batches if _CIFAR_BATCH.match(n)), key=_batch_number)
        test = ["test_batch"] if "test_batch" in batches else []
    else:
        meta, names_key, labels_key = batches["meta"], "fine_label_names", "fine_labels"
        train, test = ["train"], ["test"] if "test" in batches else []
    names = meta.get(names_key)
    if not isinstance(names, list) or not all(isinstance(n, bytes | str) for n in names):
        raise DatasetError(f"{path}: the meta file has no list of {names_key}")
    class_names = tuple(n.decode() if isinstance(n, bytes) else n for n in names)
    parts = {"train": _cifar_split(batches, train, labels_key, class_names, path)}
    if test:
        parts["test"] = _cifar_split(batches, test, labels_key, class_names, path)
    return RawData(
        name=kind,
        source=str(path),
        class_names=class_names,
        parts=parts,
        key=make_key("cifar", entries),
    )


def _check_batch_size(label: str, size: int, entries: list) -> None:
    """Refuse a batch over ``MAX_BATCH_BYTES``, or batches over ``MAX_CIFAR_BYTES`` in all."""
    if size > MAX_BATCH_BYTES:
        raise DatasetError(f"{label}: declares {size:,} bytes: too large for a batch")
    total = sum(entry[1] for entry in entries)
    if total > MAX_CIFAR_BYTES:
        raise DatasetError(
            f"{label}: the batches so far declare {total:,} bytes, more than CIFAR's "
            f"{MAX_CIFAR_BYTES:,}-byte limit"
        )


def _batch_number(name: str) -> int:
    match = _CIFAR_BATCH.match(name)
    return int(match[1]) if match else 0


def _unpickle(data: bytes, source: str) -> dict[str, object]:
    try:
        obj = safe_pickle.loads(
            data, safe_pickle.NUMPY_GLOBALS, source, refusal=_CIFAR_REFUSAL, encoding="bytes"
        )
    except UnsafeFileError:
        raise
    except Exception as e:  # a damaged pickle raises many kinds of error, all meaning this
        raise DatasetError(f"{source}: not a readable CIFAR batch ({type(e).__name__}: {e})") from e
    if not isinstance(obj, dict):
        raise DatasetError(f"{source}: a CIFAR batch is a dict, this is a {type(obj).__name__}")
    # Python 2 wrote the keys as bytes; a batch pickled again by Python 3 may use str.
    return {(k.decode("latin1") if isinstance(k, bytes) else str(k)): v for k, v in obj.items()}


def _cifar_split(
    batches: dict[str, dict],
    names: list[str],
    labels_key: str,
    class_names: tuple[str, ...],
    path: Path,
) -> Split:
    images, labels = [], []
    for name in names:
        batch, source = batches[name], f"{path}:{name}" if path.is_file() else str(path / name)
        data = batch.get("data")
        if not (
            isinstance(data, np.ndarray)
            and data.dtype == np.uint8
            and data.ndim == 2
            and data.shape[1] == 3 * 32 * 32
        ):
            got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data)
            raise DatasetError(f"{source}: expected 'data' as N x 3072 uint8, got {got}")
        try:
            y = np.asarray(batch.get(labels_key), dtype=np.int64)
        except (TypeError, ValueError, OverflowError) as e:
            raise DatasetError(f"{source}: '{labels_key}' is not a list of labels ({e})") from e
        if y.shape != (len(data),):
            raise DatasetError(
                f"{source}: {len(data):,} images but '{labels_key}' has shape {y.shape}"
            )
        # Rows are channel-planar: 1,024 red, then green, then blue values.
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(check_labels(y, len(class_names), source))
    return Split(np.concatenate(images), np.concatenate(labels))
