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
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable, Mapping
from typing import IO, Any

import numpy as np

from imgrec.core.errors import UnsafeFileError

_DEFAULT_REFUSAL = "the file should hold data only, and this one asks to run or build other objects"


class Refused(Exception):
    """Raised by an allow-listed stand-in whose arguments are not acceptable."""


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the globals of an allow-list.

    Args:
        file: A binary file object positioned at the pickle.
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
        pickle.UnpicklingError, EOFError, ValueError, TypeError...: The bytes are not a
            valid pickle; callers turn these into their own error for the file.

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
        super().__init__(file, encoding=encoding)
        self._allowed = allowed
        self._source = source
        self._refusal = refusal
        self._persistent = persistent_load

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafeFileError(
                f"{self._source}: refusing to load '{module}.{name}': {self._refusal}"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        if self._persistent is None:
            raise UnsafeFileError(f"{self._source}: unexpected persistent id {pid!r:.80}")
        return self._persistent(pid)

    def load(self) -> Any:
        try:
            return super().load()
        except Refused as e:
            raise UnsafeFileError(f"{self._source}: refusing to load it: {e}") from None


def loads(data: bytes, allowed: Mapping[tuple[str, str], Any], source: str, **kwargs: Any) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler` (same arguments)."""
    return RestrictedUnpickler(io.BytesIO(data), allowed, source, **kwargs).load()


# --- stand-ins -------------------------------------------------------------------------


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    """``numpy.core.multiarray._reconstruct``, for plain ndarrays only."""
    if subtype is not np.ndarray:
        raise Refused(f"an array of type {subtype!r:.80} (only numpy.ndarray is allowed)")
    # NumPy pickles an empty array here and fills it from the data that follows; an empty
    # shape also keeps a hostile file from allocating memory it does not hold.
    if not (isinstance(shape, tuple) and 0 in shape and all(type(n) is int for n in shape)):
        raise Refused(f"an array reconstructed with shape {shape!r:.80}")
    return np.ndarray.__new__(np.ndarray, shape, _dtype(dtype))


def _dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype``, refusing dtypes that hold Python objects."""
    if isinstance(spec, bytes):  # a Python 2 str read with encoding="bytes"
        spec = spec.decode("latin1")
    if not isinstance(spec, str):
        raise Refused(f"a dtype built from {spec!r:.80}")
    dtype = np.dtype(spec, align=bool(align), copy=bool(copy))
    if dtype.hasobject:
        raise Refused(f"an array of Python objects (dtype {dtype})")
    return dtype


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """``numpy.core.numeric._frombuffer``: how NumPy pickles arrays at protocol 5."""
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise Refused(f"an array of dtype {dtype!r:.80}")
    if not isinstance(buffer, bytes | bytearray | pickle.PickleBuffer):
        raise Refused(f"an array read from {type(buffer).__name__}")
    if order not in ("C", "F") or not isinstance(shape, tuple):
        raise Refused(f"an array of shape {shape!r:.80}, order {order!r:.10}")
    return np.frombuffer(buffer, dtype=dtype).reshape(shape, order=order)


def _encode(text: Any, encoding: str = "utf-8", errors: str = "strict") -> bytes:
    """``_codecs.encode``: how Python 3 pickles ``bytes`` at protocols 0-2 (latin-1 only)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise Refused(f"_codecs.encode with encoding {encoding!r:.40}")
    return text.encode("latin1", errors)


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
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
}
