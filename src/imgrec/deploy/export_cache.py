"""The export cache: ``load_runtime`` runs a model on ONNX Runtime, exporting it on first use.

``load_runtime(model, "auto")`` takes ONNX Runtime when it is installed and an
export of the model is current, exporting it on first use. Exports are kept under
``imgrec_home()/onnx``, named after a key that changes with the model (a ``.keras``
file's content digest; for a zoo network or a model in memory, the digest of its
architecture, weights and metadata) and with the versions of the exporting
software. Every entry is checked before use: its sidecar must describe this model,
and the ``.onnx`` file must have the digest the sidecar recorded when it was
written and checked against Keras; anything else is exported again. ONNX files are
protobuf data, not pickles: reading one runs no code, so a damaged or tampered file
costs a re-export, not safety. When the export cannot be made (another backend than
TensorFlow, an operation ONNX lacks), ``auto`` says why and runs Keras.

Exports made here, but those of a zoo network named by its name, run their
converter in a child process (``imgrec.deploy.converter_process``): the model may
come from a user's file (a ``.keras`` path, or the model a server loaded from one),
and a converter that crashes on it (a signal) must not take the command or the
server with it; the crash is then one more reason for ``auto`` to run Keras. A
current export in the cache starts no process.

This module is the only caller of ``export`` besides the user.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from pathlib import Path

import keras

from imgrec.core.choices import RUNTIMES
from imgrec.core.errors import ImgrecError, ModelError
from imgrec.core.storage import imgrec_home, write_bytes_atomic
from imgrec.deploy.exporter import ONNX_OPSET, export
from imgrec.deploy.runtime import KerasRuntime, ModelSource, OnnxRuntime, Runtime, open_onnx
from imgrec.deploy.sidecar import exporter_versions, file_digest, sidecar_path, weights_digest
from imgrec.models.loading import load_model, source_file
from imgrec.models.metadata import model_info

CACHE_FOLDER = "onnx"


def load_runtime(
    model: ModelSource | Runtime,
    runtime: str = "auto",
    *,
    weights: str | os.PathLike | None = None,
    verbose: bool = True,
) -> Runtime:
    """The runtime that will run ``model``.

    Args:
        model: a zoo name, a ``.keras`` file, a model from ``imgrec.load_model``, an
            ``.onnx`` file that ``imgrec export`` wrote (its JSON sidecar beside
            it), or a ``Runtime`` (returned as it is).
        runtime: ``"keras"``; ``"onnx"`` (ONNX Runtime, exporting the model on first
            use); or ``"auto"``: ONNX Runtime when it is installed and the model can
            be exported, else Keras.
        weights: for a zoo name, a weights file to use instead of looking for one.
        verbose: say on stderr when a model is exported, or why ``auto`` falls back
            to Keras.

    Raises:
        ImgrecError: an unknown ``runtime``, or ``"onnx"`` where ONNX Runtime or the
            exporter is missing.
        ModelError, WeightsError: the model cannot be had, or (``"onnx"``) cannot be
            exported.
    """
    if runtime not in RUNTIMES:
        raise ImgrecError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIMES)}")
    if isinstance(model, Runtime):
        return model
    missing = onnx_available()
    if _is_onnx_file(model):
        if runtime == "keras":
            raise ModelError(f"{model}: an ONNX file runs on ONNX Runtime, not Keras")
        if missing:
            raise ImgrecError(f"{model}: {missing}")
        return open_onnx(model)
    if runtime == "keras" or (runtime == "auto" and missing):
        return KerasRuntime(_keras_model(model, weights))
    if missing:
        raise ImgrecError(f"--runtime onnx: {missing}")
    return _cached_onnx(model, weights, strict=runtime == "onnx", verbose=verbose)


def cache_dir() -> Path:
    """Where ``auto`` and ``onnx`` keep their exports: ``imgrec_home()/onnx``."""
    return imgrec_home() / CACHE_FOLDER


def _is_onnx_file(model: object) -> bool:
    return isinstance(model, str | os.PathLike) and str(model).endswith(".onnx")


def _is_keras_file(model: object) -> bool:
    return isinstance(model, str | os.PathLike) and str(model).endswith(".keras")


def _keras_model(model: ModelSource, weights: str | os.PathLike | None) -> keras.Model:
    return model if isinstance(model, keras.Model) else load_model(model, weights=weights)


def _cached_onnx(
    model: ModelSource, weights: str | os.PathLike | None, *, strict: bool, verbose: bool
) -> Runtime:
    """The current export of ``model`` from the cache, exported first when there is none.

    ``strict`` (``--runtime onnx``) raises when no export can be made; otherwise the
    reason is told and the Keras model runs.
    """

    if _is_keras_file(model) and weights is None:
        # A file is known by its bytes: a current export needs no Keras model at all.
        if not Path(model).is_file():
            raise ModelError(f"{model}: no such model file")
        identity = ("file_sha256", file_digest(model))
        keras_model = None
    else:
        keras_model = _keras_model(model, weights)
        identity = ("weights_sha256", weights_digest(keras_model))
    path = cache_dir() / f"{_cache_key(*identity)}.onnx"
    failed = path.with_suffix(".failed")
    cached = _open_cache_entry(path, identity, verbose)
    if cached is not None:
        return cached
    problem = export_available()
    if problem is None and failed.is_file() and not strict:
        problem = f"it could not be exported before ({failed.read_text().strip()})"
    if problem is None:
        source = model if keras_model is None else keras_model
        name = model if keras_model is None else model_info(keras_model).name
        if verbose:
            print(
                f"imgrec: exporting {name} to ONNX for faster inference "
                f"(once; kept in {cache_dir()})",
                file=sys.stderr,
            )
        try:
            # A user's model file is converted in a child process, where a converter's
            # crash is an error. A zoo network (imgrec's own code) or a model built in
            # Python (the user's own code) is converted here: no child to pay for.
            from_file = keras_model is None or source_file(keras_model) is not None
            export(source, path, format="onnx", isolate=from_file)
        except ModelError as err:
            if strict:
                raise
            write_bytes_atomic(failed, str(err).encode())
            problem = str(err)
        else:
            _remove_older_exports(path, model if keras_model is None else None)
            return open_onnx(path)
    if strict:
        raise ImgrecError(f"--runtime onnx: {problem}")
    if verbose:
        print(f"imgrec: running Keras: {problem}", file=sys.stderr)
    return KerasRuntime(keras_model if keras_model is not None else load_model(model))


def _cache_key(kind: str, digest: str) -> str:
    """A name for the export of one model by one version of the exporting software."""
    identity = {"source": f"{kind}:{digest}", "opset": ONNX_OPSET, **exporter_versions()}
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


def _open_cache_entry(path: Path, identity: tuple[str, str], verbose: bool) -> OnnxRuntime | None:
    """The cached export at ``path`` if it is intact and describes this model, else None."""

    if not path.is_file() or not sidecar_path(path).is_file():
        return None
    kind, digest = identity
    try:
        runtime = open_onnx(path)
        sidecar = json.loads(sidecar_path(path).read_text())
        if sidecar["source"][kind] != digest:
            raise ModelError(f"{path}: its sidecar describes another model")
    except (ModelError, ValueError, KeyError, TypeError) as err:
        if verbose:
            print(f"imgrec: not using the cached export: {err}", file=sys.stderr)
        return None
    return runtime


def _remove_older_exports(current: Path, source: ModelSource | None) -> None:
    """Delete the cached exports of earlier versions of the model file ``source``.

    A model file that is trained again gets a new digest, so a new export; the old
    ones would only take space.
    """
    if source is None:
        return
    source_file = str(Path(source).resolve())
    for sidecar in current.parent.glob("*.onnx.json"):
        exported = sidecar.with_suffix("")
        if exported == current:
            continue
        try:
            same_file = json.loads(sidecar.read_text())["source"].get("file") == source_file
        except (OSError, ValueError, KeyError, AttributeError):
            continue
        if same_file:
            exported.unlink(missing_ok=True)
            sidecar.unlink(missing_ok=True)


def onnx_available() -> str | None:
    """Why ONNX Runtime cannot be used to run exports here, or None when it can."""
    if importlib.util.find_spec("onnxruntime") is None:
        return "onnxruntime is not installed (pip install onnxruntime)"
    return None


def export_available() -> str | None:
    """Why models cannot be exported to ONNX here, or None when they can."""
    if keras.backend.backend() != "tensorflow":
        return f"exporting needs Keras's TensorFlow backend, not {keras.backend.backend()}"
    for package in ("tf2onnx", "onnx"):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed (pip install {package})"
    return None
