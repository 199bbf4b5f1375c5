"""What a ``.keras`` file may hold, checked before Keras reads a byte of it.

Keras's ``safe_mode`` refuses a ``Lambda`` layer's pickled code, but it still looks
up any name a config gives it inside the ``keras`` package (an "activation" naming
``keras.utils.plot_model`` is called on the layer's tensors), and it builds whatever
shapes a config declares (an input of 60000 x 60000 pixels makes TensorFlow's
graph optimiser crash the process later). So ``check_keras_archive`` opens the zip
itself and refuses, naming the file and the entry at fault:

- members that claim to unpack to far more bytes than they hold (zip bombs), a
  ``config.json`` over ``MAX_CONFIG_BYTES``, and a weights file whose arrays claim
  more bytes than the file holds, or whose data lives in other files
  (``UnsafeFileError``);
- any serialized object that is not Keras's own for the place it is in: layers and
  models (but not those that run foreign code: ``Lambda``, ``TFSMLayer``,
  ``TorchModuleWrapper``, ``JaxLayer``, ``FlaxLayer``), and, each only where it
  belongs, the activations, initializers, regularizers, constraints, losses,
  metrics, optimizers, learning-rate schedules and dtype policies of Keras's own
  registries (``UnsafeFileError``); imgrec registers no objects of its own;
- declared shapes (inputs, build shapes, symbolic tensors) with a dimension that is
  not a positive whole number, or beyond the caps: ``DEFAULT_MAX_PIXELS`` pixels
  (the image pixel cap) across the spatial dimensions, ``MAX_CHANNELS`` channels,
  ``MAX_ELEMENTS`` numbers per sample, ``MAX_BATCH`` for a declared batch size
  (``ModelError``);
- an architecture whose weights would hold more than ``MAX_PARAMETERS`` numbers,
  counted on a build that allocates none (``ModelError``).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import io
import json
import math
import os
import shutil
import struct
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from imgrec.core.errors import ModelError, UnsafeFileError
from imgrec.core.images import DEFAULT_MAX_PIXELS

CONFIG_MEMBER = "config.json"
WEIGHTS_MEMBER = "model.weights.h5"
MAX_CONFIG_BYTES = 64 << 20
# Deflate cannot do much better than 1000:1; real weights hardly compress at all.
MAX_COMPRESSION_RATIO = 100
SMALL_MEMBER_BYTES = 1 << 20  # below this, any ratio (a JSON file of zeros is fine)
MAX_CHANNELS = 8192
MAX_ELEMENTS = 4 * DEFAULT_MAX_PIXELS
MAX_BATCH = 4096
# Numbers in a model's weights: 2 GiB as float32, above every Keras application
# (ConvNeXtXLarge has 350 million).
MAX_PARAMETERS = 500_000_000
WINDOW_BUFFER = 256 << 10

# Layers whose config carries, or loads, code or graphs from elsewhere.
CODE_LAYERS = frozenset({"Lambda", "TFSMLayer", "TorchModuleWrapper", "JaxLayer", "FlaxLayer"})
# Serialized values that are data, not objects to look up (serialization_lib's own).
DATA_CLASSES = frozenset(
    {"__keras_tensor__", "__tensor__", "__numpy__", "__bytes__", "__ellipsis__", "__slice__"}
    | {"__tuple__"}
)
# Config keys that declare a shape with its batch dimension first / without it.
BATCH_SHAPE_KEYS = frozenset({"batch_shape", "batch_input_shape", "build_input_shape"})
SAMPLE_SHAPE_KEYS = frozenset({"shape", "input_shape"})


def check_keras_archive(path: str | os.PathLike) -> None:
    """Refuse a ``.keras`` file that holds more than Keras's own objects, sanely sized.

    Args:
        path: the ``.keras`` file (a zip archive).

    Raises:
        UnsafeFileError: a zip bomb, an object that is not Keras's own for its
            place, a weights file that claims more than it holds.
        ModelError: not a zip with a readable ``config.json``, or a declared shape
            beyond the caps.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            _check_members(path, archive)
            config = _read_config(path, archive)
            if WEIGHTS_MEMBER in archive.namelist():
                _check_weights(path, archive)
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ModelError(f"{path}: not a readable .keras model file ({err})") from err
    try:
        _ConfigCheck(path).object(config, "layer", "the model")
    except RecursionError as err:
        raise UnsafeFileError(f"{path}: config.json is nested too deeply; refused") from err
    _check_parameter_count(path, config)


def _check_parameter_count(path: Path, config: dict) -> None:
    """Refuse an architecture whose weights would hold more than ``MAX_PARAMETERS`` numbers.

    A layer's size (``units``, ``filters``...) times what flows into it decides how much
    memory building it takes, before any weight is read: a config asking for tens of
    gigabytes would have the process killed. The architecture is built here with Keras's
    variable creation deferred (a ``StatelessScope`` that does not initialise them), so
    every weight's shape is known and none is allocated; then it is dropped.
    """
    import keras
    from keras.src.backend.common import global_state
    from keras.src.backend.common.stateless_scope import StatelessScope

    # Deferred variables are listed per thread for a later initialisation: keep this
    # build's out of that list, and whatever the thread had in it.
    pending = global_state.get_global_attribute("uninitialized_variables", [])
    global_state.set_global_attribute("uninitialized_variables", [])
    try:
        # The architecture alone: compiling would make the optimizer's variables now.
        architecture = {key: value for key, value in config.items() if key != "compile_config"}
        with StatelessScope(initialize_variables=False):
            model = keras.saving.deserialize_keras_object(architecture, safe_mode=True)
        count = sum(math.prod(weight.shape) for weight in model.weights)
    except Exception as err:  # Keras raises many types for configs it cannot build
        raise ModelError(f"{path}: cannot build this model ({err})") from err
    finally:
        global_state.set_global_attribute("uninitialized_variables", pending)
    if count > MAX_PARAMETERS:
        raise ModelError(
            f"{path}: its weights would hold {count:,} numbers (more than {MAX_PARAMETERS:,}, "
            f"{MAX_PARAMETERS * 4 >> 30} GiB as float32); refused before building it"
        )


# --- The zip and the weights -------------------------------------------------------------


def _check_members(path: Path, archive: zipfile.ZipFile) -> None:
    size = path.stat().st_size
    if sum(info.compress_size for info in archive.infolist()) > size:
        raise UnsafeFileError(f"{path}: its members claim more bytes than the file holds")
    for info in archive.infolist():
        limit = max(SMALL_MEMBER_BYTES, MAX_COMPRESSION_RATIO * info.compress_size)
        if info.file_size > limit:
            raise UnsafeFileError(
                f"{path}: member {info.filename} would unpack {info.compress_size} bytes "
                f"to {info.file_size} (a zip bomb?); refused"
            )


def _read_config(path: Path, archive: zipfile.ZipFile) -> Any:
    try:
        info = archive.getinfo(CONFIG_MEMBER)
    except KeyError:
        raise ModelError(f"{path}: not a .keras model file (no {CONFIG_MEMBER})") from None
    if info.file_size > MAX_CONFIG_BYTES:
        raise UnsafeFileError(
            f"{path}: {CONFIG_MEMBER} is {info.file_size} bytes (more than {MAX_CONFIG_BYTES})"
        )
    try:
        return json.loads(archive.read(info))
    except RecursionError as err:
        raise UnsafeFileError(f"{path}: {CONFIG_MEMBER} is nested too deeply; refused") from err
    except ValueError as err:
        raise ModelError(f"{path}: damaged {CONFIG_MEMBER} ({err})") from err


def _check_weights(path: Path, archive: zipfile.ZipFile) -> None:
    """The arrays of the weights file claim no more bytes than it holds, all inside it."""
    import h5py

    info = archive.getinfo(WEIGHTS_MEMBER)
    claimed = 0
    with _member_file(path, archive, info) as member:
        try:
            weights = h5py.File(member, "r")
        except OSError as err:
            raise ModelError(f"{path}: damaged {WEIGHTS_MEMBER} ({err})") from err
        with weights:
            for name, dataset in _datasets(weights):
                if dataset.external or dataset.is_virtual:
                    raise UnsafeFileError(
                        f"{path}: {WEIGHTS_MEMBER} array {name} reads its data from other "
                        "files; refused"
                    )
                claimed += dataset.size * dataset.dtype.itemsize
    if claimed > info.file_size:
        raise UnsafeFileError(
            f"{path}: {WEIGHTS_MEMBER} holds {info.file_size} bytes but its arrays claim "
            f"{claimed}; refused"
        )


@contextlib.contextmanager
def _member_file(path: Path, archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[IO]:
    """A seekable file of one member: a window on the archive when it is stored as it is.

    (Seeking back in a ``ZipExtFile`` reads the member again from its start, which
    makes h5py's many small reads slow; Keras stores its members uncompressed.)
    """
    if info.compress_type != zipfile.ZIP_STORED:
        with tempfile.TemporaryFile() as copy, archive.open(info) as member:
            shutil.copyfileobj(member, copy)
            copy.seek(0)
            yield copy
        return
    with open(path, "rb") as raw:
        raw.seek(info.header_offset)
        header = raw.read(zipfile.sizeFileHeader)
        if len(header) != zipfile.sizeFileHeader or header[:4] != zipfile.stringFileHeader:
            raise ModelError(f"{path}: damaged zip entry {info.filename}")
        fields = struct.unpack(zipfile.structFileHeader, header)
        start = raw.tell() + sum(fields[-2:])  # the local name and extra field come first
        yield io.BufferedReader(_Window(raw, start, info.file_size), WINDOW_BUFFER)


class _Window(io.RawIOBase):
    """Bytes ``start`` to ``start + size`` of an open file, as a file of their own."""

    def __init__(self, raw: IO[bytes], start: int, size: int) -> None:
        super().__init__()
        self._raw, self._start, self._size, self._pos = raw, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        count = max(0, min(len(buffer), self._size - self._pos))
        self._raw.seek(self._start + self._pos)
        data = self._raw.read(count)
        buffer[: len(data)] = data
        self._pos += len(data)
        return len(data)


def _datasets(weights: Any) -> Iterator[tuple[str, Any]]:
    """Every array in an HDF5 file, by name (listed without opening the groups)."""
    import h5py

    names: list[bytes] = []

    def found(name: bytes, info: Any) -> None:
        if info.type == h5py.h5o.TYPE_DATASET:
            names.append(name)

    h5py.h5o.visit(weights.id, found, info=True)
    for name in names:
        yield name.decode(errors="replace"), weights[name]


# --- The config ---------------------------------------------------------------------------


@functools.cache
def _allowed() -> dict[str, frozenset[int]]:
    """For each place in a config, the ids of the Keras objects that may stand there."""
    import keras

    def registry(name: str) -> set[Any]:
        return set(importlib.import_module(f"keras.src.{name}").ALL_OBJECTS_DICT.values())

    layers = {
        obj
        for name, obj in vars(keras.layers).items()
        if isinstance(obj, type) and issubclass(obj, keras.layers.Layer) and name not in CODE_LAYERS
    }
    from keras.src.models.functional import Functional

    layers |= {keras.Model, keras.Sequential, Functional}
    schedule = keras.optimizers.schedules.LearningRateSchedule
    schedules = {
        obj
        for obj in vars(keras.optimizers.schedules).values()
        if isinstance(obj, type) and issubclass(obj, schedule)
    }
    places = {
        "layer": layers,
        "activation": registry("activations"),
        "initializer": registry("initializers"),
        "regularizer": registry("regularizers"),
        "constraint": registry("constraints"),
        "loss": registry("losses"),
        "metric": registry("metrics") | registry("losses"),
        "optimizer": registry("optimizers"),
        "schedule": schedules,
        "dtype_policy": registry("dtype_policies"),
    }
    return {place: frozenset(id(obj) for obj in objects) for place, objects in places.items()}


def _place_of(key: str) -> str | None:
    """What kind of object a config key holds, or None when it says nothing."""
    if key == "activation" or key.endswith("_activation"):
        return "activation"
    for suffix in ("initializer", "regularizer", "constraint", "optimizer"):
        if key.endswith(suffix):
            return suffix
    return {
        "loss": "loss",
        "metrics": "metric",
        "weighted_metrics": "metric",
        "learning_rate": "schedule",
        "dtype": "dtype_policy",
        "dtype_policy": "dtype_policy",
        "function": "code",
        "call_fn": "code",
        "init_fn": "code",
        "module": "code",
    }.get(key)


def _resolve(module: Any, name: str, function: bool) -> list[Any]:
    """The objects Keras could take for ``module``/``name`` (none: it takes none here).

    Only modules Keras has already imported are looked in: nothing is imported.
    """
    if function and module == "builtins":
        # Keras searches its modules of built-in functions (a set: in no fixed order).
        from keras.src.saving.serialization_lib import BUILTIN_MODULES

        found = (_member(f"keras.{candidate}", name) for candidate in BUILTIN_MODULES)
        return [obj for obj in found if obj is not None]
    if isinstance(module, str) and (module == "keras" or module.startswith("keras.")):
        obj = _member(module, name)
        return [] if obj is None else [obj]
    return []


def _member(module: str, name: str) -> Any:
    loaded = sys.modules.get(module)
    return None if loaded is None else vars(loaded).get(name)


@functools.cache
def _activation_names() -> frozenset[str]:
    """The names ``keras.activations.get`` resolves (Keras's registry of activations)."""
    return frozenset(importlib.import_module("keras.src.activations").ALL_OBJECTS_DICT)


class _ConfigCheck:
    """Walks a ``.keras`` config, refusing what may not be deserialized or built."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.allowed = _allowed()

    def refuse(self, where: str, what: str) -> None:
        raise UnsafeFileError(
            f"{self.path}: refused: {where} {what}; a model file may hold only Keras's "
            "own layers and, where each belongs, its activations, initializers, "
            "regularizers, constraints, losses, metrics and optimizers"
        )

    def value(self, value: Any, place: str, where: str) -> None:
        """Any config value in a place that holds objects of kind ``place``."""
        if isinstance(value, list):
            for item in value:
                self.value(item, place, where)
        elif isinstance(value, dict) and "class_name" in value:
            self.object(value, place, where)
        elif isinstance(value, dict):
            self.fields(value, place, where)
        elif isinstance(value, str) and place == "activation":
            if value not in _activation_names():
                self.refuse(where, f"names {value!r}, which is not a Keras activation")
        elif isinstance(value, str) and place == "code":
            self.refuse(where, "names code to run")

    def fields(self, config: dict, place: str, where: str, owner: str = "") -> None:
        for key, item in config.items():
            here = f"{where}, field {key!r}"
            if key in BATCH_SHAPE_KEYS or (key == "input_shape" and owner == "build_config"):
                _check_shapes(self.path, item, here, batch=True)
            elif key in SAMPLE_SHAPE_KEYS:
                _check_shapes(self.path, item, here, batch=owner == "__keras_tensor__")
            elif key == "batch_size" and item is not None:
                _check_shapes(self.path, [item], here, batch=True)
            elif key == "input_dim" and item is not None:
                _check_shapes(self.path, [item], here, batch=False)
            elif key == "vocabulary" and isinstance(item, str):
                self.refuse(here, "names a file to read")
            self.value(item, _place_of(key) or place, here)

    def object(self, entry: dict, place: str, where: str) -> None:
        """One serialized object (``module``, ``class_name``, ``config``...)."""
        class_name = entry.get("class_name")
        if not isinstance(class_name, str):
            self.refuse(where, f"has a class_name of type {type(class_name).__name__}")
        config = entry.get("config")
        if class_name in DATA_CLASSES:
            if isinstance(config, dict):
                self.fields(config, "data", where, owner=class_name)
            return
        self._resolves_here(entry, class_name, place, where)
        label = config.get("name") if isinstance(config, dict) else None
        inner = f"{class_name} {label!r}" if label else class_name
        if isinstance(config, dict):
            self.fields(config, "layer", inner)
        for key, item in entry.items():
            if key in ("build_config", "compile_config") and isinstance(item, dict):
                self.fields(item, "layer", f"{inner} {key}", owner=key)
            elif key not in _ENTRY_KEYS:
                self.value(item, "data", f"{inner}, {key!r}")

    def _resolves_here(self, entry: dict, class_name: str, place: str, where: str) -> None:
        """Refuse an object that is not one of Keras's own for ``place``."""
        function = class_name == "function"
        name = entry.get("config") if function else class_name
        module = entry.get("module")
        if not isinstance(name, str):
            self.refuse(where, "holds a function without a name")
        if entry.get("registered_name") not in (None, name, class_name):
            self.refuse(where, f"asks for the registered object {entry['registered_name']!r}")
        found = _resolve(module, name, function)
        allowed = self.allowed.get(place, frozenset())
        if (
            not found
            or any(id(obj) not in allowed for obj in found)
            or (function and any(isinstance(obj, type) for obj in found))
        ):
            kind = "function" if function else "class"
            self.refuse(where, f"names the {kind} {module}.{name}, not a Keras {place} here")


# What a serialized object holds besides its config: not walked as data.
_ENTRY_KEYS = frozenset(
    {"module", "class_name", "config", "registered_name", "shared_object_id", "name"}
)


def _check_shapes(path: Path, shape: Any, where: str, *, batch: bool) -> None:
    """A declared shape (or list or dict of them): positive whole dimensions, within caps."""
    if isinstance(shape, dict):
        for item in shape.values():
            _check_shapes(path, item, where, batch=batch)
        return
    if not isinstance(shape, list):
        return
    if any(isinstance(item, list | dict) for item in shape):  # one shape per input
        for item in shape:
            _check_shapes(path, item, where, batch=batch)
        return
    for dim in shape:
        if dim is not None and (not isinstance(dim, int) or isinstance(dim, bool) or dim < 1):
            raise ModelError(
                f"{path}: {where} declares the shape {shape}: the dimension {dim!r} is not a "
                "positive whole number"
            )
    sample = [d or 1 for d in (shape[1:] if batch else shape)]
    problem = None
    if batch and shape and (shape[0] or 0) > MAX_BATCH:
        problem = f"a batch of {shape[0]} (more than {MAX_BATCH})"
    elif len(sample) >= 2 and sample[-1] > MAX_CHANNELS:
        problem = f"{sample[-1]} channels (more than {MAX_CHANNELS})"
    elif len(sample) >= 2 and math.prod(sample[:-1]) > DEFAULT_MAX_PIXELS:
        problem = f"{math.prod(sample[:-1])} pixels (more than {DEFAULT_MAX_PIXELS})"
    elif math.prod(sample) > MAX_ELEMENTS:
        problem = f"{math.prod(sample)} numbers per sample (more than {MAX_ELEMENTS})"
    if problem is not None:
        raise ModelError(f"{path}: {where} declares the shape {shape}: {problem}; refused")


def check_model_shapes(path: str | os.PathLike, model: Any) -> None:
    """Refuse a built model any of whose layers makes a tensor beyond the caps.

    The config's declared shapes are checked before Keras builds the model; this
    checks what the layers then compute (a ``Resizing`` or ``UpSampling2D`` to
    tens of thousands of pixels), before anything runs or converts the model.

    Raises:
        ModelError: a layer's output is beyond the caps, naming the layer.
    """
    import keras

    pending = list(getattr(model, "layers", []))
    while pending:
        layer = pending.pop(0)
        pending.extend(getattr(layer, "layers", []))
        try:
            outputs = keras.tree.flatten(layer.output)
        except (AttributeError, ValueError, RuntimeError):
            continue  # a layer used more than once has no one output; its uses are checked
        for tensor in outputs:
            shape = [None if d is None else int(d) for d in tensor.shape]
            _check_shapes(Path(path), shape, f"the output of layer {layer.name!r}", batch=True)
