"""The .pth reader: both PyTorch formats, no PyTorch, and no pickled code run.

The test writes .pth files byte for byte as PyTorch does. It has no PyTorch, so
while writing it registers stand-in ``torch`` modules whose names the pickles
refer to; the reader under test never imports them.
"""

from __future__ import annotations

import io
import os
import pickle
import sys
import types
import zipfile
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest

from imgrec.core.errors import UnsafeFileError, WeightsError
from imgrec.models.torch_weights import load_state_dict
from imgrec.models.zoo import MOBILENET_V2_OFFLINE

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.int64): "LongStorage"}


@pytest.fixture
def fake_torch(monkeypatch):
    """Modules named like PyTorch's, so that pickle can name their globals."""
    torch = types.ModuleType("torch")
    utils = types.ModuleType("torch._utils")

    def _rebuild_tensor_v2(*args):
        raise AssertionError("only for writing")

    _rebuild_tensor_v2.__module__ = "torch._utils"
    _rebuild_tensor_v2.__qualname__ = "_rebuild_tensor_v2"
    utils._rebuild_tensor_v2 = _rebuild_tensor_v2
    torch._utils = utils
    for name in STORAGE_NAMES.values():
        setattr(torch, name, type(name, (), {"__module__": "torch"}))
    monkeypatch.setitem(sys.modules, "torch", torch)
    monkeypatch.setitem(sys.modules, "torch._utils", utils)
    return torch


class _StorageRef:
    def __init__(self, key: str, array: np.ndarray) -> None:
        self.key = key
        self.array = np.ascontiguousarray(array).ravel()


class _TensorRef:
    def __init__(self, storage: _StorageRef, shape: tuple[int, ...]) -> None:
        self.storage = storage
        self.shape = shape

    def __reduce__(self):
        stride = tuple(int(np.prod(self.shape[i + 1 :])) for i in range(len(self.shape)))
        rebuild = sys.modules["torch._utils"]._rebuild_tensor_v2
        return rebuild, (self.storage, 0, self.shape, stride, False, OrderedDict())


class _TorchPickler(pickle.Pickler):
    def __init__(self, file, legacy: bool) -> None:
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def persistent_id(self, obj):
        if not isinstance(obj, _StorageRef):
            return None
        storage_type = getattr(sys.modules["torch"], STORAGE_NAMES[obj.array.dtype])
        pid = ("storage", storage_type, obj.key, "cpu", obj.array.size)
        return (*pid, None) if self.legacy else pid


def _tensor_refs(tensors: dict[str, np.ndarray]) -> tuple[OrderedDict, list[_StorageRef]]:
    storages = [_StorageRef(str(i), array) for i, array in enumerate(tensors.values())]
    state = OrderedDict(
        (name, _TensorRef(storage, array.shape))
        for (name, array), storage in zip(tensors.items(), storages, strict=True)
    )
    return state, storages


def write_zip_pth(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """PyTorch >= 1.6's format: a zip with data.pkl and one member per storage."""
    state, storages = _tensor_refs(tensors)
    with zipfile.ZipFile(path, "w") as archive:
        buffer = io.BytesIO()
        _TorchPickler(buffer, legacy=False).dump(state)
        archive.writestr("archive/data.pkl", buffer.getvalue())
        archive.writestr("archive/version", "3\n")
        for storage in storages:
            archive.writestr(f"archive/data/{storage.key}", storage.array.tobytes())


def write_legacy_pth(path: Path, tensors: dict[str, np.ndarray]) -> None:
    """The format before PyTorch 1.6, which the offline packages use."""
    state, storages = _tensor_refs(tensors)
    with open(path, "wb") as f:
        pickle.dump(LEGACY_MAGIC, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True}, f, protocol=2)
        _TorchPickler(f, legacy=True).dump(state)
        pickle.dump([s.key for s in storages], f, protocol=2)
        for storage in storages:
            f.write(np.int64(storage.array.size).tobytes())
            f.write(storage.array.tobytes())


class _RunsCode:
    """What a hostile model file hides: unpickling it calls os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


TENSORS = {
    "conv.weight": np.arange(2 * 3 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 3) / 7,
    "bn.running_var": np.array([0.5, 2.0], dtype=np.float32),
    "bn.num_batches_tracked": np.array(12, dtype=np.int64),
}


@pytest.mark.parametrize("writer", [write_zip_pth, write_legacy_pth])
def test_reads_both_pytorch_formats_exactly(fake_torch, tmp_path, writer):
    """A state dict comes back with the same names, shapes, dtypes and values."""
    path = tmp_path / "weights.pth"
    writer(path, TENSORS)
    state = load_state_dict(path)
    assert list(state) == list(TENSORS)
    for name, expected in TENSORS.items():
        assert state[name].dtype == expected.dtype
        np.testing.assert_array_equal(state[name], expected)


def test_reads_the_offline_mobilenet_v2_weights():
    """The real file from the offline package: torchvision's MobileNetV2 layout."""
    state = load_state_dict(MOBILENET_V2_OFFLINE.path())
    assert state["features.0.0.weight"].shape == (32, 3, 3, 3)
    assert state["classifier.1.weight"].shape == (1000, 1280)
    assert all(np.isfinite(v).all() for v in state.values())


def test_refuses_a_zip_pickle_that_runs_code(tmp_path):
    """A hostile data.pkl is refused by name, and its command never runs."""
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(UnsafeFileError, match=r"hostile\.pth.*(posix|os)\.system"):
        load_state_dict(path)
    assert not marker.exists()


def test_refuses_a_legacy_pickle_that_runs_code(tmp_path):
    """The legacy format is guarded too, including its header pickles."""
    marker = tmp_path / "pwned"
    path = tmp_path / "hostile_legacy.pth"
    with open(path, "wb") as f:
        pickle.dump(LEGACY_MAGIC, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump(_RunsCode(marker), f, protocol=2)
    with pytest.raises(UnsafeFileError, match=r"hostile_legacy\.pth"):
        load_state_dict(path)
    assert not marker.exists()


def test_refuses_builtins_even_harmless_looking_ones(tmp_path):
    """eval, getattr and friends are not on the allow-list."""
    path = tmp_path / "eval.pth"
    payload = b"\x80\x02cbuiltins\neval\nX\x04\x00\x00\x001+1q\x00\x85q\x01Rq\x02."
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", payload)
    with pytest.raises(UnsafeFileError, match=r"builtins\.eval"):
        load_state_dict(path)


def test_truncated_file_is_a_clear_error(fake_torch, tmp_path):
    """A download cut short names the file instead of crashing."""
    path = tmp_path / "cut.pth"
    write_legacy_pth(path, TENSORS)
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(WeightsError, match=r"cut\.pth"):
        load_state_dict(path)


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", b"PK\x03\x04broken zip"])
def test_garbage_is_a_clear_error(tmp_path, content):
    path = tmp_path / "garbage.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError, match=r"garbage\.pth"):
        load_state_dict(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(WeightsError, match=r"nothing\.pth"):
        load_state_dict(tmp_path / "nothing.pth")
