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
import os
import pickle
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imgrec.core.errors import UnsafeFileError, WeightsError
from imgrec.core.safe_pickle import RestrictedUnpickler

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


@dataclass(frozen=True)
class _StorageType:
    dtype: np.dtype


class _Storage:
    """A tensor's backing buffer; filled after the pickle is read (legacy format)."""

    def __init__(self, dtype: np.dtype, numel: int) -> None:
        self.dtype = np.dtype(dtype)
        self.numel = numel
        self.array: np.ndarray | None = None


@dataclass
class _Tensor:
    """A view into a storage, materialised once every storage has its bytes."""

    storage: _Storage
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    def to_numpy(self) -> np.ndarray:
        base = self.storage.array
        if base is None:
            raise WeightsError("a tensor refers to storage that the file never wrote")
        needed = (
            self.offset + sum((n - 1) * s for n, s in zip(self.shape, self.stride, strict=True)) + 1
        )
        if min(self.shape, default=1) > 0 and needed > base.size:
            raise WeightsError("a tensor reaches past the end of its storage")
        itemsize = base.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[self.offset :],
            shape=self.shape,
            strides=tuple(s * itemsize for s in self.stride),
            writeable=False,
        )
        return np.array(view)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not isinstance(storage, _Storage):
        raise WeightsError("a tensor is not backed by a storage")
    return _Tensor(storage, int(storage_offset), tuple(size), tuple(stride))


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
        key = str(key)
        storage = storages.get(key)
        if storage is None:
            storage = _Storage(storage_type.dtype, int(numel))
            storages[key] = storage
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
    legacy stream. Only plain tensors in (ordered) dicts are accepted.

    Raises:
        UnsafeFileError: the file names a global outside the allow-list.
        WeightsError: the file is missing, truncated, or not a state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        result = _load_zip(path) if zipfile.is_zipfile(path) else _load_legacy(path)
    except (UnsafeFileError, WeightsError):
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, OSError) as err:
        raise WeightsError(f"{path}: not a readable PyTorch weights file ({err})") from err
    return _tensors_to_numpy(result, path)


def _load_zip(path: Path):
    storages: dict[str, _Storage] = {}
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        pickles = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pickles) != 1:
            raise WeightsError(f"{path}: a PyTorch zip holds one data.pkl; found {len(pickles)}")
        prefix = pickles[0][: -len("data.pkl")]
        with archive.open(pickles[0]) as f:
            result = _unpickler(io.BytesIO(f.read()), str(path), storages).load()
        for key, storage in storages.items():
            raw = archive.read(f"{prefix}data/{key}")
            storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    return result


def _load_legacy(path: Path):
    storages: dict[str, _Storage] = {}
    source = str(path)
    with open(path, "rb") as f:
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
                raise WeightsError(f"{path}: storage {key!r} is listed but never used")
            count = int(np.frombuffer(_read_exact(f, 8, path), dtype="<i8")[0])
            raw = _read_exact(f, count * storage.dtype.itemsize, path)
            storage.array = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
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
    for name, value in obj.items():
        if not isinstance(value, _Tensor):
            raise WeightsError(f"{path}: entry {name!r} is not a tensor")
        arrays[str(name)] = value.to_numpy()
    return arrays
