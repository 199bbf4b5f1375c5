"""Load a model by zoo name or ``.keras`` file, and save one with imgrec's metadata.

A ``.keras`` file is a zip that Keras writes (config, weights, optimizer state);
imgrec adds one member, ``imgrec.json``, holding the ``ModelInfo`` (class names,
preprocessing, origin). Keras ignores the extra member, so the file stays an
ordinary Keras model for anyone else. Files are loaded with ``safe_mode=True``:
a ``Lambda`` layer's pickled code is refused, never run. Before Keras reads a file,
``imgrec.models.file_check`` checks it: only Keras's own objects, each where it
belongs, declared shapes within the image caps, no zip bomb; and once built, no
layer's output beyond those caps.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import keras

from imgrec.core.choices import DEFAULT_MODEL
from imgrec.core.errors import ModelError
from imgrec.core.storage import atomic_path
from imgrec.models.file_check import check_keras_archive, check_model_shapes
from imgrec.models.labels import imagenet_class_names
from imgrec.models.metadata import ModelInfo, attach_info, model_info
from imgrec.models.preprocessing import Preprocessing
from imgrec.models.pretrained import load_pretrained

METADATA_MEMBER = "imgrec.json"
# The largest imgrec.json that stored_architecture reads (a training record with its
# history and a VAE's latent sample is well under 1 MB).
MAX_METADATA_BYTES = 4 << 20


def load_model(
    model: str | os.PathLike = DEFAULT_MODEL,
    weights: str | os.PathLike | None = None,
    compile: bool = False,
) -> keras.Model:
    """A ready-to-use model with its ``ModelInfo``, from a zoo name or a ``.keras`` file.

    Args:
        model: a zoo name (``"mobilenet_v2"``) or a path to a ``.keras`` file.
        weights: for zoo names only, a weights file to use (see ``load_pretrained``).
        compile: restore the loss, metrics and optimizer too (for resuming training).

    Raises:
        ModelError: unknown name, or a file that is missing, unsafe or not a model.
        WeightsError: a zoo network's weights cannot be found.
    """
    if str(model).endswith(".keras"):
        if weights is not None:
            raise ModelError(f"{model}: --weights applies to zoo networks, not to model files")
        return load_keras_file(model, compile=compile)
    return load_pretrained(str(model), weights)


def load_keras_file(path: str | os.PathLike, compile: bool = False) -> keras.Model:
    """Load a ``.keras`` file safely; attach its imgrec metadata, or a stated guess.

    Args:
        path: the ``.keras`` file.
        compile: restore the loss, metrics and optimizer too.

    Raises:
        ModelError: a missing or damaged file, or one whose declared shapes (or its
            layers' outputs) are beyond the caps of ``imgrec.models.file_check``.
        UnsafeFileError: a file that holds objects other than Keras's own, each where
            it belongs, or a zip bomb.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such model file")
    if not zipfile.is_zipfile(path):
        raise ModelError(f"{path}: not a .keras model file (it is not a zip archive)")
    check_keras_archive(path)
    try:
        model = keras.saving.load_model(path, compile=compile, safe_mode=True)
    except Exception as err:  # Keras raises many types for bad files; name the file
        raise ModelError(f"{path}: cannot load this model ({err})") from err
    check_model_shapes(path, model)
    # Where the model came from: converting a user's file runs in a child process.
    model._imgrec_source_file = str(path.resolve())
    return attach_info(model, _read_info(path, model))


def source_file(model: keras.Model) -> str | None:
    """The ``.keras`` file ``model`` was loaded from by imgrec, or None (built in Python,
    a zoo network)."""
    return getattr(model, "_imgrec_source_file", None)


def stored_architecture(path: str | os.PathLike) -> str | None:
    """The architecture named by a ``.keras`` file's training record, read without Keras.

    Returns:
        The record's ``architecture`` (``"conv-vae"``, ``"cifar-cnn"``...), or None for a
        file that is not a zip, has no imgrec metadata, or was not trained by imgrec.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(METADATA_MEMBER)
            if info.file_size > MAX_METADATA_BYTES:
                return None
            with archive.open(info) as member:  # a header may understate the size
                config = json.loads(member.read(MAX_METADATA_BYTES + 1))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, RecursionError):
        return None
    training = config.get("training") if isinstance(config, dict) else None
    architecture = training.get("architecture") if isinstance(training, dict) else None
    return architecture if isinstance(architecture, str) else None


def _read_info(path: Path, model: keras.Model) -> ModelInfo:
    with zipfile.ZipFile(path) as archive:
        if METADATA_MEMBER in archive.namelist():
            try:
                return ModelInfo.from_config(json.loads(archive.read(METADATA_MEMBER)))
            except (ValueError, KeyError, TypeError) as err:
                raise ModelError(f"{path}: damaged imgrec metadata ({err})") from err
    # A model saved by plain Keras: say what is assumed instead of guessing silently.
    height, width = model.input_shape[1:3]
    classes = max(2, model.output_shape[-1])  # a single sigmoid unit answers two classes
    if classes == 1000:
        names = imagenet_class_names()
    else:
        names = tuple(f"class {i}" for i in range(classes))
    # The chapter's models rescale inside (Rescaling(1/255) first); others get it here.
    rescales = any(isinstance(layer, keras.layers.Rescaling) for layer in model.layers[:4])
    preprocessing = Preprocessing(
        size=(height, width),
        scale=1.0 if rescales else 1 / 255,
        name="assumed:pixels" if rescales else "assumed:rescale",
    )
    return ModelInfo(path.name, names, preprocessing, f"{path} (no imgrec metadata)")


def save_model(model: keras.Model, path: str | os.PathLike) -> Path:
    """Save ``model`` with its ``ModelInfo`` as one ``.keras`` file, atomically.

    Raises:
        ModelError: ``path`` does not end in ``.keras``, or the model has no ModelInfo.
    """
    path = Path(path)
    if path.suffix != ".keras":
        raise ModelError(f"{path}: a model file must end in .keras")
    info = model_info(model)
    with atomic_path(path) as tmp:
        model.save(tmp)
        with zipfile.ZipFile(tmp, "a") as archive:
            archive.writestr(METADATA_MEMBER, json.dumps(info.to_config(), indent=1))
    return path
