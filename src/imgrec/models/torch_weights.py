"""Read a PyTorch ``.pth`` state dict into NumPy arrays, without PyTorch and without
running pickled code.

A ``.pth`` file is a pickle (inside a zip since PyTorch 1.6, bare before that)
plus the raw bytes of its tensors. Plain ``pickle.load`` would call any function
the file names, so a model file could run any code. This reader resolves only
the handful of globals a state dict needs (an allow-list) and refuses every other
one, naming it and the file (:mod:`imgrec.core.safe_pickle`).
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np

from imgrec.core.errors import UnsafeFileError, WeightsError
from imgrec.core.safe_pickle import Refused, RestrictedUnpickler

# PyTorch's legacy (pre-zip) format starts with this number, pickled.
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C

_STORAGE_DTYPES = {
    "DoubleStorage": np.float64,
    "FloatStorage": np.float32,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}

#: What the tensors of a file may take in memory, in multiples of the file's size: a
#: state dict takes about its file's size (twice where two names share one storage).
_BUDGET_FACTOR = 4


class _StorageType:
    """What ``torch.FloatStorage`` & co. resolve to: the dtype of the storage they name."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = np.dtype(dtype)

    def __setstate__(self, state) -> None:
        raise Refused("setting the state of a storage type")


class _Storage:
    """A tensor's backing buffer; its bytes are attached after the pickle is read."""

    __slots__ = ("array", "dtype", "numel")

    def __init__(self, dtype: np.dtype, numel: int) -> None:
        self.dtype = np.dtype(dtype)
        self.numel = numel
        self.array: np.ndarray | None = None

    def __setstate__(self, state) -> None:
        raise Refused("setting the state of a storage")

    def attach(self, raw: bytes, source: str) -> None:
        """Take the storage's bytes: whole items, as many as the pickle declared."""
        itemsize = self.dtype.itemsize
        if len(raw) % itemsize or len(raw) // itemsize < self.numel:
            raise WeightsError(
                f"{source}: a storage of {self.numel:,} x {self.dtype} holds {len(raw):,} bytes"
            )
        self.array = np.frombuffer(raw, dtype=self.dtype.newbyteorder("<"), count=self.numel)


class _Tensor:
    """A view into a storage, materialised once every storage has its bytes."""

    __slots__ = ("offset", "shape", "storage", "stride")

    def __init__(self, storage: _Storage, offset: int, shape: tuple, stride: tuple) -> None:
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.stride = stride

    def __setstate__(self, state) -> None:
        raise Refused("setting the state of a tensor")

    def to_numpy(self) -> np.ndarray:
        """A copy of the tensor's elements, after checking that they lie in its storage.

        Raises:
            WeightsError: a negative or non-integer offset, size or stride, more than
                ``MAX_DIMENSIONS`` dimensions, or an element outside the storage.
        """
        base = self.storage.array
        if base is None:
            raise WeightsError("a tensor refers to storage that the file never wrote")
        shape, strides = _checked_layout(self.offset, self.shape, self.stride, base.size)
        if math.prod(shape) == 0:
            return np.zeros(shape, dtype=base.dtype.newbyteorder("="))
        view = np.lib.stride_tricks.as_strided(
            base[self.offset :],
            shape=shape,
            strides=tuple(s * base.itemsize for s in strides),
            writeable=False,
        )
        return np.array(view, dtype=base.dtype.newbyteorder("="))


#: The most dimensions a tensor may have.
MAX_DIMENSIONS = 32
# An empty tensor's other sizes multiply to at most this (NumPy needs them to fit in 64 bits).
_MAX_EMPTY_EXTENT = 2**40


def _checked_layout(offset, shape, stride, available: int) -> tuple[tuple, tuple]:
    """``shape`` and ``stride`` as ints, once every element they reach is in storage.

    ``available`` is the storage's element count. A tensor may hold no more elements
    than its storage (so that what it allocates is bounded by the file), and strides of
    dimensions of size 1 are set to 0 (they are never used).
    """
    values = (offset, *shape, *stride)
    if not (
        isinstance(shape, tuple)
        and isinstance(stride, tuple)
        and len(shape) == len(stride) <= MAX_DIMENSIONS
        and all(type(v) is int and 0 <= v < 2**63 for v in values)
    ):
        raise WeightsError(
            f"a tensor with offset {offset!r:.40}, size {shape!r:.80} and stride {stride!r:.80} "
            "(sizes and strides must be non-negative integers)"
        )
    numel = math.prod(shape)
    if numel == 0:
        if offset > available or math.prod(n for n in shape if n) > _MAX_EMPTY_EXTENT:
            raise WeightsError(f"an empty tensor of size {shape} at offset {offset}")
        return shape, (0,) * len(shape)
    last = offset + sum((n - 1) * s for n, s in zip(shape, stride, strict=True))
    if last >= available or numel > available:
        raise WeightsError(
            f"a tensor of size {shape}, stride {stride} at offset {offset} reaches past "
            f"its storage of {available:,} elements"
        )
    return shape, tuple(s if n > 1 else 0 for n, s in zip(shape, stride, strict=True))


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not isinstance(storage, _Storage):
        raise WeightsError("a tensor is not backed by a storage")
    size, stride = (tuple(v) if isinstance(v, list) else v for v in (size, stride))
    return _Tensor(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad, backward_hooks, *_ignored):
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): _StorageType(np.dtype(dt)) for name, dt in _STORAGE_DTYPES.items()},
}


_REFUSAL = (
    "a weights file should hold tensors only, and this one asks to run or build other objects"
)


def _unpickler(file, source: str, storages: dict[str, _Storage]) -> RestrictedUnpickler:
    """Resolves only the allow-listed globals; storages come from ``storages``."""

    def persistent_load(pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise UnsafeFileError(f"{source}: unexpected persistent id {pid!r:.80}")
        storage_type, key, _location, numel = pid[1:5]
        if not isinstance(storage_type, _StorageType):
            raise UnsafeFileError(f"{source}: storage of unknown type {storage_type!r:.80}")
        if not isinstance(key, str | int) or type(numel) is not int or numel < 0:
            raise WeightsError(f"{source}: a storage {key!r:.40} of {numel!r:.40} elements")
        key = str(key)
        storage = storages.get(key)
        if storage is None:
            storage = _Storage(storage_type.dtype, numel)
            storages[key] = storage
        elif (storage.dtype, storage.numel) != (storage_type.dtype, numel):
            raise WeightsError(f"{source}: storage {key!r:.40} is declared twice, differently")
        view = pid[5] if len(pid) > 5 else None
        if view is not None:
            raise WeightsError(f"{source}: storage views are not supported")
        return storage

    return RestrictedUnpickler(
        file, _ALLOWED_GLOBALS, source, refusal=_REFUSAL, persistent_load=persistent_load
    )


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a PyTorch state dict from ``path`` as ``{name: numpy array}``.

    Both PyTorch file formats are read: the zip archive (PyTorch >= 1.6) and the
    legacy stream. Only plain tensors in (ordered) dicts are accepted. Every tensor's
    offset, sizes and strides are checked against its storage before any element is
    read, and no tensor holds more elements than its storage: what the reader
    allocates is bounded by the file's size.

    Raises:
        UnsafeFileError: the file names a global outside the allow-list.
        WeightsError: the file is missing, truncated, or not a state dict, or a
            tensor lies outside its storage.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        result = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
        return _tensors_to_numpy(result, path)
    except UnsafeFileError:
        raise
    except WeightsError as err:
        message = str(err)
        if message.startswith(str(path)):
            raise
        raise WeightsError(f"{path}: {message}") from err
    except Exception as err:  # a damaged file raises many kinds of error, all meaning this
        raise WeightsError(
            f"{path}: not a readable PyTorch weights file ({type(err).__name__}: {err})"
        ) from err


def _load_zip(path: Path):
    storages: dict[str, _Storage] = {}
    limit = path.stat().st_size
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise WeightsError(f"{path}: a PyTorch zip holds one data.pkl; found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        data = _read_member(archive, pickles[0], limit, path)
        result = _unpickler(io.BytesIO(data), str(path), storages).load()
        for key, storage in storages.items():
            storage.attach(_read_member(archive, f"{prefix}data/{key}", limit, path), str(path))
    return result


def _read_member(archive: zipfile.ZipFile, name: str, limit: int, path: Path) -> bytes:
    """One member's bytes, if it unpacks to no more than the whole file's size."""
    try:
        info = archive.getinfo(name)
    except KeyError:
        raise WeightsError(f"{path}: the archive has no member {name!r:.80}") from None
    if info.file_size > limit:
        raise WeightsError(
            f"{path}: member {name!r:.80} declares {info.file_size:,} bytes, more than the "
            f"file's {limit:,}"
        )
    return archive.read(info)


def _load_legacy(path: Path):
    storages: dict[str, _Storage] = {}
    source = str(path)
    f = io.BytesIO(path.read_bytes())
    header = [_unpickler(f, source, storages).load() for _ in range(3)]
    if header[0] != _LEGACY_MAGIC:
        raise WeightsError(f"{path}: not a PyTorch weights file (no magic number)")
    sys_info = header[2]
    if isinstance(sys_info, dict) and not sys_info.get("little_endian", True):
        raise WeightsError(f"{path}: big-endian PyTorch files are not supported")
    result = _unpickler(f, source, storages).load()
    keys = _unpickler(f, source, storages).load()
    if not isinstance(keys, list):
        raise WeightsError(f"{path}: storage key list is missing")
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise WeightsError(f"{path}: storage {key!r:.80} is listed but never used")
        count = int.from_bytes(_read_exact(f, 8, path), "little", signed=True)
        left = len(f.getbuffer()) - f.tell()
        if count != storage.numel or not 0 <= count * storage.dtype.itemsize <= left:
            raise WeightsError(
                f"{path}: storage {key!r:.80} declares {count:,} elements of "
                f"{storage.dtype}; {storage.numel:,} expected, and {left:,} bytes are left"
            )
        storage.attach(_read_exact(f, count * storage.dtype.itemsize, path), source)
    return result


def _read_exact(f, size: int, path: Path) -> bytes:
    data = f.read(size)
    if len(data) != size:
        raise WeightsError(f"{path}: file is truncated")
    return data


def _tensors_to_numpy(obj, path: Path) -> dict[str, np.ndarray]:
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise WeightsError(f"{path}: expected a state dict, found {type(obj).__name__}")
    arrays = {}
    budget = _BUDGET_FACTOR * path.stat().st_size
    for name, value in obj.items():
        if not isinstance(value, _Tensor):
            raise WeightsError(f"{path}: entry {name!r:.80} is not a tensor")
        try:
            array = value.to_numpy()
        except WeightsError as err:
            raise WeightsError(f"{path}: entry {name!r:.80}: {err}") from None
        budget -= array.nbytes
        if budget < 0:
            raise WeightsError(
                f"{path}: its tensors would take more than {_BUDGET_FACTOR} times the "
                "file's size (many tensors over the same storage)"
            )
        arrays[str(name)] = array
    return arrays
