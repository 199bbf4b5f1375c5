"""Hostile model and data files end in an imgrec error naming the file: never a signal,
never another exception's traceback, never memory the file does not hold.

Every file is crafted here, opcode by opcode where a pickler would not write it. Each one
is read in a child process whose address space is capped (``RLIMIT_AS``) a little above
what it holds after its imports: a reader that touched memory outside its buffers would
die by a signal, and one that allocated what the file merely declares would hit the cap
and report a ``MemoryError`` - both fail the test. Legitimate files, written the same
way, load exactly (the controls), so that each hostile file differs from a good one only
in what makes it hostile.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from imgrec.core.errors import UnsafeFileError
from imgrec.core.safe_pickle import NUMPY_GLOBALS, PLAIN_GLOBALS, loads

# Headroom above the child's address space after its imports. Every hostile file below
# asks for far more (gigabytes to exabytes) than this; the legitimate ones for far less.
HEADROOM = 512 * 1024**2

CHILD = textwrap.dedent(
    """
    import pickle, re, resource, sys
    from pathlib import Path
    from imgrec.core.errors import ImgrecError
    from imgrec.core import safe_pickle

    kind, path = sys.argv[1], Path(sys.argv[2])
    if kind == "pth":
        from imgrec.models.torch_weights import load_state_dict
    elif kind == "cifar":
        from imgrec.datasets.formats import read_cifar
    status = Path("/proc/self/status").read_text()
    limit = int(re.search(r"VmSize:\\s+(\\d+) kB", status)[1]) * 1024 + int(sys.argv[3])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        if kind == "pth":
            result = load_state_dict(path)
        elif kind == "cifar":
            result = read_cifar(path)
        else:
            result = safe_pickle.loads(
                path.read_bytes(), safe_pickle.NUMPY_GLOBALS, str(path), encoding="bytes"
            )
    except (ImgrecError, pickle.UnpicklingError) as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        sys.exit(3)
    print("loaded", type(result).__name__)
    """
)


def read_in_child(kind: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(path), str(HEADROOM)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def assert_refused(kind: str, path: Path, errors: tuple[str, ...]) -> str:
    """The child exits by one of ``errors`` naming ``path``; returns the message."""
    result = read_in_child(kind, path)
    assert result.returncode >= 0, f"killed by signal {-result.returncode}: {result.stderr}"
    assert result.returncode == 3, f"exit {result.returncode}:\n{result.stdout}{result.stderr}"
    name, _, message = result.stderr.strip().splitlines()[-1].partition(": ")
    assert name in errors, result.stderr
    assert str(path) in message
    assert "MemoryError" not in message, "allocated what the file only declares"
    return message


def assert_loads(kind: str, path: Path) -> None:
    result = read_in_child(kind, path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("loaded")


# --- pickles, opcode by opcode ----------------------------------------------------------


def value(obj, protocol: int = 2) -> bytes:
    """The opcodes that push ``obj`` (plain values only), without PROTO and STOP."""
    return pickletools.optimize(pickle.dumps(obj, protocol=protocol))[2:-1]


def glob(module: str, name: str) -> bytes:
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def call(function: bytes, *args: bytes) -> bytes:
    """``function(*args)``: MARK args TUPLE REDUCE."""
    return function + b"(" + b"".join(args) + b"tR"


def build(obj: bytes, state: bytes) -> bytes:
    return obj + state + b"b"


def program(body: bytes, protocol: int = 2) -> bytes:
    return b"\x80" + bytes([protocol]) + body + b"."


# --- PyTorch ----------------------------------------------------------------------------

ORDERED_DICT = call(glob("collections", "OrderedDict"))


def storage(key: str, numel: int, legacy: bool = False, kind: str = "FloatStorage") -> bytes:
    fields = [value("storage"), glob("torch", kind), value(key), value("cpu"), value(numel)]
    if legacy:
        fields.append(value(None))
    return b"(" + b"".join(fields) + b"tQ"  # BINPERSID


def tensor(offset, size, stride, numel: int = 6, legacy: bool = False) -> bytes:
    """``_rebuild_tensor_v2`` over storage "0" with the given layout."""
    return call(
        glob("torch._utils", "_rebuild_tensor_v2"),
        storage("0", numel, legacy),
        value(offset),
        value(size),
        value(stride),
        value(False),
        ORDERED_DICT,
    )


def state_dict(*entries: tuple[str, bytes]) -> bytes:
    return ORDERED_DICT + b"(" + b"".join(value(k) + v for k, v in entries) + b"u"


DATA = np.arange(6, dtype=np.float32)


def write_zip(path: Path, data_pkl: bytes, storages: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/version", "3\n")
        for key, raw in (storages if storages is not None else {"0": DATA.tobytes()}).items():
            archive.writestr(f"archive/data/{key}", raw)
    return path


def write_legacy(path: Path, data_pkl: bytes, count: int = 6, raw: bytes | None = None) -> Path:
    raw = DATA.tobytes() if raw is None else raw
    with open(path, "wb") as f:
        pickle.dump(0x1950A86A20F9469CFC6C, f, protocol=2)
        pickle.dump(1001, f, protocol=2)
        pickle.dump({"protocol_version": 1001, "little_endian": True}, f, protocol=2)
        f.write(data_pkl)
        pickle.dump(["0"], f, protocol=2)
        f.write(count.to_bytes(8, "little", signed=True) + raw)
    return path


def test_crafted_tensors_load_exactly(tmp_path):
    """The control: the crafting below writes readable files, in both formats."""
    from imgrec.models.torch_weights import load_state_dict

    good = state_dict(("w", tensor(1, (2, 2), (1, 2))), ("s", tensor(5, (), ())))
    zipped = load_state_dict(write_zip(tmp_path / "good.pth", program(good)))
    np.testing.assert_array_equal(zipped["w"], [[1, 3], [2, 4]])
    assert zipped["s"].shape == () and zipped["s"] == 5
    legacy_good = state_dict(("w", tensor(1, (2, 2), (1, 2), legacy=True)))
    legacy = load_state_dict(write_legacy(tmp_path / "legacy.pth", program(legacy_good)))
    np.testing.assert_array_equal(legacy["w"], zipped["w"])
    assert_loads("pth", tmp_path / "good.pth")


LAYOUTS = {
    "negative offset": (-4, (2,), (1,)),
    "huge negative offset": (-(2**62), (2,), (1,)),
    "offset past the storage": (6, (1,), (1,)),
    "negative stride": (5, (3,), (-1,)),
    "huge negative stride": (0, (2,), (-(2**61),)),
    "huge stride": (0, (2,), (2**61,)),
    "stride past 64 bits": (0, (2,), (2**64 + 1,)),
    "stride reaching past the end": (0, (2, 3), (3, 2)),
    "size past the storage": (0, (7,), (1,)),
    "sizes past the storage": (0, (4, 4), (0, 0)),
    "negative size": (0, (-1,), (1,)),
    "overflowing sizes": (0, (2**32, 2**32), (0, 0)),
    "sizes past 64 bits": (0, (2**64, 1), (1, 1)),
    "empty but overflowing": (0, (0, 2**62, 2**62), (0, 0, 0)),
    "float offset": (1.5, (2,), (1,)),
    "string size": (0, ("2",), (1,)),
    "size and stride of different lengths": (0, (2, 3), (1,)),
    "a hundred dimensions": (0, (1,) * 100, (1,) * 100),
    "size as a number": (0, 6, 1),
    "sizes of 100,000 digits": (0, (10**10**5,) * 32, (1,) * 32),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
def test_a_tensor_outside_its_storage_is_refused(tmp_path, layout, legacy):
    offset, size, stride = LAYOUTS[layout]
    pkl = program(state_dict(("w", tensor(offset, size, stride, legacy=legacy))))
    path = tmp_path / "layout.pth"
    write_legacy(path, pkl) if legacy else write_zip(path, pkl)
    assert_refused("pth", path, ("WeightsError",))


@pytest.mark.parametrize(
    "numel", [-1, 2**62, 2**64, 7, "6"], ids=["negative", "huge", "past64", "more", "text"]
)
def test_a_storage_declaring_more_than_the_file_holds_is_refused(tmp_path, numel):
    path = write_zip(
        tmp_path / "numel.pth", program(state_dict(("w", tensor(0, (1,), (1,), numel))))
    )
    assert_refused("pth", path, ("WeightsError",))


@pytest.mark.parametrize("count", [2**62, 2**63 - 1, -1, -(2**63), 7, 5])
def test_a_legacy_storage_count_past_the_file_is_refused(tmp_path, count):
    pkl = program(state_dict(("w", tensor(0, (2,), (1,), legacy=True))))
    assert_refused("pth", write_legacy(tmp_path / "count.pth", pkl, count=count), ("WeightsError",))


@pytest.mark.slow
def test_many_tensors_over_one_storage_stay_within_the_files_size(tmp_path):
    """Each view is in bounds, but together they would take 20,000 times the storage."""
    big = np.zeros(1_000_000, dtype=np.float32)
    entries = [(f"w{i}", tensor(0, (big.size,), (1,), numel=big.size)) for i in range(20_000)]
    path = write_zip(tmp_path / "views.pth", program(state_dict(*entries)), {"0": big.tobytes()})
    assert "times the file's size" in assert_refused("pth", path, ("WeightsError",))


@pytest.mark.slow
def test_a_member_that_unpacks_past_the_files_size_is_not_unpacked(tmp_path):
    path = tmp_path / "bomb.pth"
    numel = 300 * 1024**2 // 4
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(
            "archive/data.pkl", program(state_dict(("w", tensor(0, (1,), (1,), numel))))
        )
        with archive.open("archive/data/0", "w") as member:
            for _ in range(300):
                member.write(bytes(1024**2))
    assert path.stat().st_size < 2 * 1024**2
    assert "more than the file's" in assert_refused("pth", path, ("WeightsError",))


def test_a_missing_storage_member_is_a_weights_error(tmp_path):
    path = write_zip(
        tmp_path / "nostorage.pth", program(state_dict(("w", tensor(0, (1,), (1,))))), {}
    )
    assert_refused("pth", path, ("WeightsError",))


@pytest.mark.parametrize(
    "target",
    [
        glob("torch", "FloatStorage"),
        glob("torch._utils", "_rebuild_tensor_v2"),
        storage("0", 6),
        tensor(0, (2,), (1,)),
    ],
    ids=["storage type", "rebuild function", "storage", "tensor"],
)
def test_a_pickle_cannot_set_the_state_of_the_readers_objects(tmp_path, target):
    """BUILD on an allow-listed global would change it for the whole process."""
    hostile = build(target, value({"dtype": "object"}))
    path = write_zip(tmp_path / "build.pth", program(state_dict(("w", hostile))))
    assert_refused("pth", path, ("UnsafeFileError",))


def test_a_pickle_declaring_a_huge_string_is_refused_before_allocating(tmp_path):
    for i, opcode in enumerate([b"\x8e", b"\x8d"]):  # BINBYTES8, BINUNICODE8
        pkl = b"\x80\x04" + opcode + (2**40).to_bytes(8, "little") + b"abc."
        assert_refused("pth", write_zip(tmp_path / f"long{i}.pth", pkl), ("WeightsError",))
    legacy = b"\x80\x02T" + (2**31 - 1).to_bytes(4, "little") + b"abc."  # BINSTRING
    assert_refused("pth", write_legacy(tmp_path / "long.pth", legacy), ("WeightsError",))


# --- NumPy pickles and CIFAR batches ----------------------------------------------------

NDARRAY = glob("numpy", "ndarray")
RECONSTRUCT = glob("numpy.core.multiarray", "_reconstruct")


def dtype(spec: str, flags: int = 0, endian: str = "|") -> bytes:
    state = (3, endian, None, None, None, -1, -1, flags)
    return build(call(glob("numpy", "dtype"), value(spec), value(False), value(True)), value(state))


def array(shape, spec: str, data: bytes, flags: int = 0, start=(0,)) -> bytes:
    """NumPy 1's pickle of an array: ``_reconstruct`` then the array's state."""
    empty = call(RECONSTRUCT, NDARRAY, value(start), value(b"b", protocol=3))
    state = b"(" + value(1) + value(shape) + dtype(spec, flags) + b"\x89" + value(data, 3) + b"t"
    return build(empty, state)


HOSTILE_ARRAYS = {
    "numpy.ndarray called for 5.7 GiB": call(NDARRAY, value(((6 * 1024**3,), "u1"))),
    "numpy.ndarray called with a buffer": call(NDARRAY, value(((8,), "u1")), value(b"12345678", 3)),
    "object dtype": dtype("O"),
    "object dtype spelled O8": call(glob("numpy", "dtype"), value("O8"), value(False), value(True)),
    "object array": array((2,), "O8", b""),
    "dtype flags declaring objects": array((1,), "V8", bytes(8), flags=0x3F),
    "uint8 flagged as objects": array((8,), "u1", bytes(8), flags=0x3F),
    "structured dtype with an object": dtype("i4,O"),
    "reconstruct with a huge shape": call(RECONSTRUCT, NDARRAY, value((2**40,)), value(b"b", 3)),
    "reconstruct with a shape past 64 bits": call(
        RECONSTRUCT, NDARRAY, value((0, 2**70, 2**70)), value(b"b", 3)
    ),
    "reconstruct of another type": call(
        RECONSTRUCT, glob("numpy", "dtype"), value((0,)), value(b"b", 3)
    ),
    "state with a huge shape": array((2**40,), "u1", b"abc"),
    "state with overflowing shape": array((2**62, 2**62), "u1", b"abc"),
    "state with a negative shape": array((-1,), "u1", b"abc"),
    "state with sizes of 100,000 digits": array((10**10**5,) * 32, "u1", b"abc"),
    "state with a shape the data does not fill": array((3, 1025), "u1", bytes(3072)),
    "state with an object list": build(
        call(RECONSTRUCT, NDARRAY, value((0,)), value(b"b", 3)),
        b"(" + value(1) + value((2,)) + dtype("u1") + b"\x89" + value([1, 2]) + b"t",
    ),
    "frombuffer with a negative shape": call(
        glob("numpy._core.numeric", "_frombuffer"),
        value(bytes(8), 3),
        dtype("u1"),
        value((-1,)),
        value("C"),
    ),
    "frombuffer past its buffer": call(
        glob("numpy._core.numeric", "_frombuffer"),
        value(bytes(8), 3),
        dtype("u1"),
        value((2**40,)),
        value("C"),
    ),
    "array state set twice": build(array((1,), "u1", b"a"), value((1, (1,), None, False, b"b"))),
    "BUILD on a stand-in": build(glob("_codecs", "encode"), value((None, {"__defaults__": (1,)}))),
    "BUILD on numpy.ndarray": build(NDARRAY, value({"x": 1})),
    "huge BINBYTES8": b"\x8e" + (2**40).to_bytes(8, "little") + b"abc",
    "huge BINUNICODE8": b"\x8d" + (6 * 1024**3).to_bytes(8, "little") + b"abc",
    "huge LONG4": b"\x8b" + (2**31 - 1).to_bytes(4, "little") + b"abc",
    "huge BYTEARRAY8": b"\x96" + (2**62).to_bytes(8, "little") + b"abc",
    "negative BINSTRING": b"T" + (-1).to_bytes(4, "little", signed=True) + b"abc",
    "SHORT_BINBYTES past the end": b"C\xff" + b"abc",
    "memo index of 2**31 (LONG_BINPUT)": b"Nr\xff\xff\xff\x7f",
    "memo index of 2**40 (PUT)": b"Np1099511627776\n",
}


def batch(data: bytes) -> bytes:
    """A CIFAR batch dict whose "data" is ``data``."""
    labels = value(b"labels", 3) + value([0, 1])
    return program(b"}" + value(b"data", 3) + data + b"s" + labels + b"s", protocol=4)


def write_cifar(folder: Path, data_batch: bytes) -> Path:
    folder.mkdir()
    meta = {b"label_names": [b"cat", b"dog"], b"num_cases_per_batch": 2}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    (folder / "data_batch_1").write_bytes(data_batch)
    return folder


def test_crafted_arrays_load_exactly(tmp_path):
    """The control: the same crafting, with honest values, reads as NumPy wrote it."""
    rows = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    good = loads(
        batch(array((2, 3072), "u1", rows.tobytes())), NUMPY_GLOBALS, "m", encoding="bytes"
    )
    np.testing.assert_array_equal(good[b"data"], rows)
    assert good[b"data"].flags.writeable and good[b"data"].flags.owndata
    data = read_in_child(
        "cifar", write_cifar(tmp_path / "good", batch(array((2, 3072), "u1", rows.tobytes())))
    )
    assert data.returncode == 0, data.stderr
    big_endian = loads(
        program(
            build(
                call(RECONSTRUCT, NDARRAY, value((0,)), value(b"b", 3)),
                b"("
                + value(1)
                + value((2,))
                + dtype("i2", endian=">")
                + b"\x89"
                + value(b"\x00\x01\x01\x00", 3)
                + b"t",
            )
        ),
        NUMPY_GLOBALS,
        "m",
    )
    np.testing.assert_array_equal(big_endian, [1, 256])


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HOSTILE_ARRAYS))
def test_a_hostile_numpy_pickle_is_refused(tmp_path, name):
    path = tmp_path / "hostile.pkl"
    path.write_bytes(batch(HOSTILE_ARRAYS[name]))
    assert_refused("pickle", path, ("UnsafeFileError", "UnpicklingError"))
    not_a_file = tmp_path / "cifar"
    data_batch = write_cifar(not_a_file, batch(HOSTILE_ARRAYS[name])) / "data_batch_1"
    message = assert_refused("cifar", not_a_file, ("UnsafeFileError", "DatasetError"))
    assert str(data_batch) in message


def test_the_stand_ins_stay_as_they_were(tmp_path):
    """A refused BUILD on a stand-in leaves it unchanged for the next file."""
    hostile = program(build(glob("_codecs", "encode"), value((None, {"__defaults__": ("x",)}))))
    with pytest.raises(UnsafeFileError, match="mem: "):
        loads(hostile, PLAIN_GLOBALS, "mem")
    assert loads(pickle.dumps(b"\xff", protocol=2), PLAIN_GLOBALS, "mem") == b"\xff"


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_fortran_big_endian_and_string_arrays_load_exactly(protocol):
    """Byte order included: the reader before this one returned ">i4" as native int32."""
    arrays = {
        "f": np.arange(12, dtype=np.float64).reshape(3, 4).T,
        "be": np.arange(4, dtype=">i4"),
        "u": np.array(["ab", "c"]),
        "empty": np.zeros((0, 3), dtype=np.uint8),
        "scalar_shape": np.array(7, dtype=np.int16),
    }
    back = loads(pickle.dumps(arrays, protocol=protocol), NUMPY_GLOBALS, "mem", encoding="bytes")
    for key, expected in arrays.items():
        assert back[key].dtype == expected.dtype and back[key].shape == expected.shape, key
        np.testing.assert_array_equal(back[key], expected)


def test_reading_stops_at_the_first_refused_global():
    """A GLOBAL that is not allowed is refused even when the rest is garbage."""
    with pytest.raises(UnsafeFileError, match=r"mem: .*builtins\.eval"):
        loads(b"\x80\x02cbuiltins\neval\nX\xff\xff\xff\x7f", NUMPY_GLOBALS, "mem")


def test_a_stream_is_read_through_its_pickle_only():
    """Consecutive pickles in one stream (PyTorch's legacy layout) stay readable."""
    from imgrec.core.safe_pickle import RestrictedUnpickler

    stream = io.BytesIO(pickle.dumps(1, protocol=2) + pickle.dumps([2], protocol=2) + b"tail")
    assert RestrictedUnpickler(stream, NUMPY_GLOBALS, "s").load() == 1
    assert RestrictedUnpickler(stream, NUMPY_GLOBALS, "s").load() == [2]
    assert stream.read() == b"tail"
