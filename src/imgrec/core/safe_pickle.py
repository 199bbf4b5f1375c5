"""Read pickles from files imgrec did not write, without running the code they name.

A pickle is a small program: plain ``pickle.load`` imports and calls any function the
file names (``os.system`` included), so a data set or weights file downloaded from
anywhere could run any code. :class:`RestrictedUnpickler` resolves only the globals of
an allow-list, mapping each ``(module, name)`` the file may name to the object that
stands in for it, and refuses every other one with an
:class:`~imgrec.core.errors.UnsafeFileError` that names the global and the file.

Stand-ins can check their arguments as well: one that raises :class:`Refused` turns into
the same ``UnsafeFileError``. :data:`NUMPY_GLOBALS` is the allow-list for pickles of
plain containers holding NumPy arrays of numbers, such as the CIFAR "python version"
batches (pickled by Python 2 or 3, NumPy 1 or 2).

Memory stays bounded by the input:

- Before unpickling, every length the pickle declares (a string's, a bytes object's) is
  checked against the bytes that follow it, so that a 40-byte file cannot make the
  unpickler allocate gigabytes for a string that is not there.
- NumPy arrays and dtypes are never handed to NumPy's own ``__setstate__``, which trusts
  its input (a dtype's flags can declare Python objects; an array's shape is allocated
  before the data is checked). The stand-ins collect the state, check it (numbers only,
  a shape that the data fills exactly), and build the array from the data the file holds.
- A global that resolves to a function is wrapped, so that a pickle cannot change the
  stand-in itself (``BUILD`` on a function would set its attributes for the whole process).
"""

from __future__ import annotations

import io
import itertools
import math
import pickle
import pickletools
import types
from collections.abc import Callable, Mapping
from typing import IO, Any

import numpy as np

from imgrec.core.errors import ImgrecError, UnsafeFileError

_DEFAULT_REFUSAL = "the file should hold data only, and this one asks to run or build other objects"

#: The most dimensions an array in a pickle may have (NumPy's own limit is 64).
MAX_ARRAY_DIMENSIONS = 32


class Refused(Exception):
    """Raised by an allow-listed stand-in whose arguments are not acceptable."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of an allow-list.

    Args:
        file: A binary file object positioned at the pickle (a stream that cannot seek
            is read into memory first).
        allowed: Maps each ``(module, name)`` the pickle may name to the object used
            in its place (the real one, or a stand-in that checks its arguments).
            Names are looked up exactly as the file spells them: a Python 2 pickle
            says ``"__builtin__"``, a NumPy 1 pickle ``"numpy.core.multiarray"``.
        source: How messages name the file.
        refusal: Why a refused global is refused, for the message.
        encoding: How to decode Python 2 ``str`` objects: ``"bytes"`` keeps them as
            bytes, as the CIFAR batches need (see :mod:`pickle`).
        persistent_load: Resolves persistent ids (PyTorch's storages); by default a
            pickle that uses them is refused.

    Raises (from ``load``):
        UnsafeFileError: The pickle names a global outside ``allowed``, or a stand-in
            raised :class:`Refused`.
        ImgrecError: What a stand-in or ``persistent_load`` raised, as it was.
        pickle.UnpicklingError: The bytes are not a valid pickle (whatever error that
            caused, named in the message with ``source``); callers turn it into their
            own error for the file.

    Example:

    >>> data = RestrictedUnpickler(f, NUMPY_GLOBALS, "data_batch_1", encoding="bytes").load()
    """

    def __init__(
        self,
        file: IO[bytes],
        allowed: Mapping[tuple[str, str], Any],
        source: str,
        *,
        refusal: str = _DEFAULT_REFUSAL,
        encoding: str = "ASCII",
        persistent_load: Callable[[Any], Any] | None = None,
    ) -> None:
        if not file.seekable():
            file = io.BytesIO(file.read())
        super().__init__(file, encoding=encoding)
        self._file = file
        self._allowed = allowed
        self._source = source
        self._refusal = refusal
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        try:
            found = self._allowed[(module, name)]
        except KeyError:
            raise UnsafeFileError(
                f"{self._source}: refusing to load '{module}.{name}': {self._refusal}"
            ) from None
        return _Guarded(found) if isinstance(found, types.FunctionType) else found

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise UnsafeFileError(f"{self._source}: unexpected persistent id {pid!r:.80}")
        return self._persistent(pid)

    def load(self) -> Any:
        try:
            start = self._file.tell()
            check_declared_lengths(self._file, self.find_class)
            self._file.seek(start)
            before = next(_Pending.made)
            result = super().load()
            return _resolve(result, {}) if next(_Pending.made) > before + 1 else result
        except Refused as e:
            raise UnsafeFileError(f"{self._source}: refusing to load it: {e}") from None
        except ImgrecError:
            raise
        except Exception as e:  # a damaged pickle raises many kinds of error, all meaning this
            raise pickle.UnpicklingError(
                f"{self._source}: not a readable pickle ({type(e).__name__}: {e})"
            ) from e


def check_declared_lengths(
    file: IO[bytes], find_class: Callable[[str, str], Any] | None = None
) -> None:
    """Walk one pickle's opcodes; every declared length must fit in the bytes that follow.

    ``pickle`` allocates a string or bytes object of the size the file declares before it
    reads the bytes; this walk compares each declared size with what is left, so that a
    short file declaring a huge object is refused before any allocation. It decodes
    nothing but ``GLOBAL`` names. The file is left after the pickle's STOP.

    Args:
        file: the pickle, from its current position.
        find_class: called with each ``GLOBAL`` opcode's module and name, so that a
            refused global is refused on this first pass already.

    Raises:
        pickle.UnpicklingError: a length that the file does not hold, an unknown opcode,
            or no STOP.
    """
    start = file.tell()
    if isinstance(file, io.BytesIO):  # getvalue() shares the buffer: no copy
        data, offset = file.getvalue(), start
    else:
        data, offset = file.read(), 0
    end = _scan(data, offset, find_class)
    file.seek(start + end - offset)


def _opcode_table() -> tuple[list[str | None], list[int | None]]:
    """Per opcode byte: its name, and its argument's size or how that size is given."""
    names: list[str | None] = [None] * 256
    sizes: list[int | None] = [None] * 256
    for op in pickletools.opcodes:
        code = ord(op.code)
        names[code] = op.name
        sizes[code] = op.arg.n if op.arg is not None else 0
        if op.arg is pickletools.stringnl_noescape_pair:
            sizes[code] = _TWO_LINES
        if op.name == "STOP":
            sizes[code] = _STOP
        if op.name == "LONG_BINPUT":
            sizes[code] = _MEMO4
    return names, sizes


_TWO_LINES, _STOP, _MEMO4 = -100, -101, -102
_ARG1 = pickletools.TAKEN_FROM_ARGUMENT1
_LENGTH_PREFIX = {
    pickletools.TAKEN_FROM_ARGUMENT1: (1, False),
    pickletools.TAKEN_FROM_ARGUMENT4: (4, True),
    pickletools.TAKEN_FROM_ARGUMENT4U: (4, False),
    pickletools.TAKEN_FROM_ARGUMENT8U: (8, False),
}
_NAMES, _SIZES = _opcode_table()


def _scan(data: bytes, i: int, find_class: Callable[[str, str], Any] | None) -> int:
    """The offset just after the STOP of the pickle at offset ``i`` of ``data``."""
    end, sizes = len(data), _SIZES
    while i < end:
        size = sizes[data[i]]
        i += 1
        if size is not None and size >= 0:  # most opcodes: an argument of fixed size
            i += size
            continue
        if size == _ARG1 and i < end:  # short strings: a one-byte length
            i += 1 + data[i]
            continue
        if size == _STOP:
            return i
        name = _NAMES[data[i - 1]]
        if size is None:
            raise pickle.UnpicklingError(f"at byte {i - 1}: unknown opcode {data[i - 1]:#04x}")
        if size == _MEMO4:
            # The memo grows to twice the index at once: a 10-byte pickle would ask for
            # 32 GiB. Real pickles number their memo from 0, one entry per few bytes.
            _check_memo_index(int.from_bytes(data[i : i + 4], "little"), end)
            i += 4
            continue
        if size in _LENGTH_PREFIX:
            width, signed = _LENGTH_PREFIX[size]
            length = int.from_bytes(data[i : i + width], "little", signed=signed)
            if i + width > end or length < 0:
                raise pickle.UnpicklingError(f"at byte {i}: {name} without a length")
            i += width + length
            if i > end:
                raise pickle.UnpicklingError(
                    f"{name} declares {i - end:,} bytes more than the pickle holds"
                )
        else:
            i = _after_lines(data, i, name, find_class)
    raise pickle.UnpicklingError("the pickle ends without STOP")


def _after_lines(data: bytes, i: int, name: str | None, find_class) -> int:
    """After the newline-ended argument at ``i`` (two lines for ``GLOBAL`` and ``INST``)."""
    newline = data.find(b"\n", i)
    if newline >= 0 and _SIZES[data[i - 1]] == _TWO_LINES:
        newline = data.find(b"\n", newline + 1)
    if newline < 0:
        raise pickle.UnpicklingError(f"at byte {i}: {name} without its newline")
    if name == "GLOBAL" and find_class is not None:
        module, _, global_name = data[i:newline].decode("utf-8", "replace").partition("\n")
        find_class(module, global_name)
    if name == "PUT":
        _check_memo_index(int(data[i:newline]), len(data))
    return newline + 1


def _check_memo_index(index: int, size: int) -> None:
    if not 0 <= index <= size:
        raise pickle.UnpicklingError(f"a memo index of {index:,} in a pickle of {size:,} bytes")


def loads(data: bytes, allowed: Mapping[tuple[str, str], Any], source: str, **kwargs: Any) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (same arguments)."""
    return RestrictedUnpickler(io.BytesIO(data), allowed, source, **kwargs).load()


# --- guards ----------------------------------------------------------------------------


class _Guarded:
    """An allow-listed function, callable but closed to ``BUILD`` (no attributes to set)."""

    __slots__ = ("_function",)

    def __init__(self, function: Callable[..., Any]) -> None:
        self._function = function

    def __call__(self, *args: Any) -> Any:
        return self._function(*args)

    def __setstate__(self, state: Any) -> None:
        raise Refused(f"setting the state of {self._function.__name__}")


class _Pending:
    """Something built from a pickle's arguments and state, checked before it is real.

    ``load`` replaces every pending object in the result by ``resolve()``.
    """

    __slots__ = ()
    #: How many were made, so that ``load`` walks its result only when there are some.
    made = itertools.count()

    def __new__(cls, *args: Any, **kwargs: Any) -> _Pending:
        next(_Pending.made)
        return super().__new__(cls)

    def resolve(self) -> Any:
        raise NotImplementedError

    def __setstate__(self, state: Any) -> None:
        raise Refused(f"setting the state of {type(self).__name__.strip('_')}")


_WALKED = (_Pending, list, dict, tuple, set, frozenset)


def _resolve(obj: Any, seen: dict[int, Any]) -> Any:
    """``obj`` with every :class:`_Pending` inside its containers resolved (in place
    for lists and dicts, so that shared references stay shared)."""
    if isinstance(obj, _Pending):
        return obj.resolve()
    if not isinstance(obj, list | dict | tuple | set | frozenset) or not obj:
        return obj
    if id(obj) in seen:
        return seen[id(obj)]
    seen[id(obj)] = obj
    kinds = set(map(type, obj.values() if isinstance(obj, dict) else obj))
    if not any(issubclass(kind, _WALKED) for kind in kinds) and not isinstance(obj, dict):
        return obj  # numbers and strings only (a CIFAR batch's 10,000 labels)
    if isinstance(obj, list):
        obj[:] = [_resolve(item, seen) for item in obj]
    elif isinstance(obj, dict):
        if any(isinstance(key, _Pending) for key in obj):
            raise Refused("an array as a dictionary key")
        for key, value in obj.items():
            obj[key] = _resolve(value, seen)
    else:
        items = [_resolve(item, seen) for item in obj]
        if any(new is not old for new, old in zip(items, obj, strict=True)):
            seen[id(obj)] = type(obj)(items)
    return seen[id(obj)]


# --- NumPy -------------------------------------------------------------------------------


class _NdarrayType:
    """What ``numpy.ndarray`` resolves to: a name ``_reconstruct`` accepts, never a call.

    Calling ``numpy.ndarray(shape, dtype)`` from a pickle would allocate any shape and
    skip the checks below.
    """

    __slots__ = ()

    def __call__(self, *args: Any) -> Any:
        raise Refused("calling numpy.ndarray directly (arrays come from _reconstruct)")

    def __setstate__(self, state: Any) -> None:
        raise Refused("setting the state of numpy.ndarray")


NDARRAY = _NdarrayType()

_DTYPE_KINDS = "biufcSU"
# NumPy's NPY_ITEM_REFCOUNT, NPY_LIST_PICKLE, NPY_ITEM_IS_POINTER: items that are objects.
_OBJECT_FLAGS = 0x01 | 0x02 | 0x04
_ENDIANS = ("<", ">", "|", "=")


class _DtypeBuilder(_Pending):
    """``numpy.dtype(spec)`` and its pickled state, numbers and strings only."""

    __slots__ = ("dtype", "has_state")

    def __init__(self, dtype: np.dtype) -> None:
        self.dtype = dtype
        self.has_state = False

    def __setstate__(self, state: Any) -> None:
        """NumPy's ``(version, endian, subarray, names, fields, elsize, alignment, flags)``.

        Only the byte order and a flexible type's size are taken from it; the flags,
        which NumPy would trust, are not.
        """
        if self.has_state:
            raise Refused("a dtype's state set twice")
        self.has_state = True
        if not (isinstance(state, tuple) and len(state) in (8, 9)):
            raise Refused(f"a dtype state {state!r:.80}")
        endian, structure, elsize, flags = state[1], state[2:5], state[5], state[7]
        if type(flags) is not int or flags & _OBJECT_FLAGS:
            raise Refused(f"an array of Python objects (dtype flags {flags!r:.20})")
        if isinstance(endian, bytes):  # a Python 2 str read with encoding="bytes"
            endian = endian.decode("latin1")
        if endian not in _ENDIANS or structure != (None, None, None):
            raise Refused(f"a structured or unusual dtype ({state!r:.80})")
        if type(elsize) is not int:
            raise Refused(f"a dtype of size {elsize!r:.20}")
        dtype = self.dtype
        if dtype.itemsize == 0 and dtype.kind in "SU" and 0 < elsize <= 2**31:
            dtype = np.dtype((dtype.type, elsize // (4 if dtype.kind == "U" else 1)))
        if elsize not in (-1, dtype.itemsize):
            raise Refused(f"a dtype {dtype} of declared size {elsize}")
        self.dtype = dtype.newbyteorder(endian) if endian in "<>" else dtype

    def resolve(self) -> np.dtype:
        return self.dtype


def _dtype(spec: Any, align: Any = False, copy: Any = False) -> _DtypeBuilder:
    """``numpy.dtype``, refusing dtypes that hold Python objects or structures."""
    if isinstance(spec, bytes):  # a Python 2 str read with encoding="bytes"
        spec = spec.decode("latin1")
    if not isinstance(spec, str) or len(spec) > 16:
        raise Refused(f"a dtype built from {spec!r:.80}")
    if not all(isinstance(flag, bool | int) for flag in (align, copy)):
        raise Refused("a dtype with unusual arguments")
    dtype = np.dtype(spec)
    if dtype.hasobject:
        raise Refused(f"an array of Python objects (dtype {dtype})")
    if dtype.kind not in _DTYPE_KINDS or dtype.fields is not None or dtype.subdtype is not None:
        raise Refused(f"an array of dtype {dtype} (numbers and strings only)")
    return _DtypeBuilder(dtype)


def _as_dtype(dtype: Any) -> np.dtype:
    if isinstance(dtype, _DtypeBuilder):
        dtype = dtype.resolve()
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise Refused(f"an array of dtype {dtype!r:.80}")
    if dtype.itemsize == 0:
        raise Refused(f"an array of zero-size items ({dtype})")
    return dtype


def _as_shape(shape: Any) -> tuple[int, ...]:
    if not (
        isinstance(shape, tuple)
        and len(shape) <= MAX_ARRAY_DIMENSIONS
        and all(type(n) is int and 0 <= n < 2**63 for n in shape)
    ):
        raise Refused(f"an array of shape {shape!r:.80}")
    return shape


def _from_data(data: Any, dtype: np.dtype, shape: tuple[int, ...], order: str) -> np.ndarray:
    """The array of ``shape`` that ``data`` fills exactly; no other size is accepted."""
    if isinstance(data, list):
        raise Refused("an array of Python objects (pickled as a list)")
    if isinstance(data, str):  # a Python 2 str read with encoding="latin1"
        data = data.encode("latin1")
    if not isinstance(data, bytes | bytearray | pickle.PickleBuffer):
        raise Refused(f"an array read from {type(data).__name__}")
    size = len(memoryview(data).cast("B"))
    if math.prod(shape) * dtype.itemsize != size:
        raise pickle.UnpicklingError(
            f"an array of shape {shape} and dtype {dtype} needs "
            f"{math.prod(shape) * dtype.itemsize:,} bytes; the file holds {size:,}"
        )
    if size == 0:
        return np.empty(shape, dtype=dtype, order=order)
    return np.frombuffer(data, dtype=dtype).reshape(shape, order=order)


class _ArrayBuilder(_Pending):
    """An ndarray from ``_reconstruct``, filled by its pickled state (see ``__setstate__``)."""

    __slots__ = ("array", "dtype", "shape")

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype | None = None) -> None:
        self.shape = shape
        self.dtype = dtype
        self.array: np.ndarray | None = None

    def __setstate__(self, state: Any) -> None:
        """NumPy's ``(version, shape, dtype, is_fortran, data)`` (or without version)."""
        if self.array is not None:
            raise Refused("an array's state set twice")
        if isinstance(state, tuple) and len(state) == 5:
            state = state[1:]
        if not (isinstance(state, tuple) and len(state) == 4):
            raise Refused(f"an array state {state!r:.80}")
        shape, dtype, fortran, data = state
        if not isinstance(fortran, bool | int):
            raise Refused(f"an array order {fortran!r:.20}")
        order = "F" if fortran else "C"
        array = _from_data(data, _as_dtype(dtype), _as_shape(shape), order)
        # Like NumPy's own unpickling: the array owns its (writable) memory.
        self.array = np.array(array, copy=True, order="K")

    def resolve(self) -> np.ndarray:
        if self.array is None:  # never filled: the empty array _reconstruct made
            return np.empty(self.shape, dtype=self.dtype or np.uint8)
        return self.array


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> _ArrayBuilder:
    """``numpy.core.multiarray._reconstruct``, for plain ndarrays only."""
    if subtype is not NDARRAY:
        raise Refused(f"an array of type {subtype!r:.80} (only numpy.ndarray is allowed)")
    # NumPy pickles an empty array here and fills it from the state that follows.
    if not (0 in _as_shape(shape) and isinstance(dtype, bytes | str)):
        raise Refused(f"an array reconstructed with shape {shape!r:.80}")
    return _ArrayBuilder(shape)


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> _ArrayBuilder:
    """``numpy.core.numeric._frombuffer``: how NumPy pickles arrays at protocol 5."""
    if order not in ("C", "F"):
        raise Refused(f"an array of order {order!r:.10}")
    dtype, shape = _as_dtype(dtype), _as_shape(shape)
    builder = _ArrayBuilder(shape, dtype)
    builder.array = _from_data(buffer, dtype, shape, order)
    return builder


# --- plain values --------------------------------------------------------------------


def _encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode``: how Python 3 pickles ``bytes`` at protocols 0-2 (latin-1 only)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise Refused(f"_codecs.encode with encoding {encoding!r:.40}")
    return text.encode("latin1")


def _bytes(*args: Any) -> bytes:
    """``bytes()``: how Python 3 pickles ``b""`` at protocols 0-2."""
    if args:
        raise Refused("bytes() with arguments")
    return b""


def _container(kind: type) -> Callable[..., Any]:
    def build(items: Any = ()) -> Any:
        if not isinstance(items, list | tuple | set | frozenset):
            raise Refused(f"{kind.__name__}() of {type(items).__name__}")
        return kind(items)

    build.__name__ = kind.__name__
    return build


#: Plain Python values that protocols 0-2 pickle through globals: bytes, sets.
PLAIN_GLOBALS: Mapping[tuple[str, str], Any] = {
    ("_codecs", "encode"): _encode,
    **{
        (module, name): stand_in
        for module in ("builtins", "__builtin__")
        for name, stand_in in (
            ("bytes", _bytes),
            ("set", _container(set)),
            ("frozenset", _container(frozenset)),
        )
    },
}

#: Containers of NumPy arrays of numbers (no object arrays, no subclasses).
NUMPY_GLOBALS: Mapping[tuple[str, str], Any] = {
    **PLAIN_GLOBALS,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # NumPy 1 (and Python 2)
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # NumPy 2
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,  # protocol 5
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("numpy", "ndarray"): NDARRAY,
    ("numpy", "dtype"): _dtype,
}
