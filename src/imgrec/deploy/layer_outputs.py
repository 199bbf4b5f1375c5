"""Every layer's output in one forward pass, in Keras and as a cached ONNX export.

The page's "Draw a digit" demo shows every layer of a small network at work, live,
in the browser (onnxruntime-web) or on the server. Both run the same model:
``layers_model`` taps the output of every layer (``imgrec.models.graph.tap_model``),
flattens each and concatenates them into ONE output vector, cut into segments that
it lists (name, type, shape without the batch, offset, size). One output
keeps the export an ordinary single-output conversion, run in a child process like
any user's model (``imgrec.deploy.converter_process``); the browser slices the
vector by the description, exactly as the server does.

``layers_export`` keeps the export under ``imgrec_home()/onnx/layers``, named after
what the model computes (``imgrec.deploy.sidecar.weights_digest``: its architecture,
weights and metadata), the layers and the exporting software's versions, with a
JSON description beside it holding the ONNX file's digest; an entry whose file does
not match it is exported again. A fresh export is checked against Keras on random
inputs before it is kept.
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from imgrec.core.errors import ModelError
from imgrec.core.storage import atomic_path, write_bytes_atomic
from imgrec.deploy.converter_process import convert_in_child
from imgrec.deploy.converters import FORMATS, ONNX_OPSET, converting
from imgrec.deploy.export_cache import cache_dir, export_available
from imgrec.deploy.onnx_session import open_session
from imgrec.deploy.sidecar import exporter_versions, file_digest, weights_digest
from imgrec.models.graph import output_rank, tap_model, walk_layers
from imgrec.models.loading import save_model, source_file
from imgrec.models.metadata import attach_info, model_info

DESCRIPTION_FORMAT = 1
# How far the export may be from Keras, relative to the largest value of a segment.
TOLERANCE = 1e-4
_CHECK_INPUTS = 3

_MODELS: weakref.WeakKeyDictionary[keras.Model, tuple[keras.Model, list[dict]]] = (
    weakref.WeakKeyDictionary()
)
_KEYS: weakref.WeakKeyDictionary[keras.Model, str] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


@dataclass(frozen=True)
class LayerExport:
    """The ONNX file of a model's ``layers_model`` and what its output holds.

    Args:
        path: the ``.onnx`` file (input ``N x H x W x C`` float32, one output ``N x total``).
        sha256: its digest.
        layers: ``describe``'s segments, in order.
    """

    path: Path
    sha256: str
    layers: list[dict]


def layers_model(model: keras.Model) -> tuple[keras.Model, list[dict]]:
    """A model whose one output is every layer's output, flattened and concatenated.

    Built once per model (and shared: a model's weights are its layers').

    Args:
        model: a chain of layers whose last layer gives the model's output (every
            chapter network), with imgrec's metadata.

    Returns:
        ``(tapped, segments)``: ``segments`` holds one ``{"name", "type", "shape",
        "offset", "size"}`` per layer, ``shape`` without the batch; the last one
        is the model's output.

    Raises:
        ModelError: the last layer's output is not the model's output.
    """
    with _LOCK:
        if model not in _MODELS:
            _MODELS[model] = _build(model)
        return _MODELS[model]


def _build(model: keras.Model) -> tuple[keras.Model, list[dict]]:
    picked = [
        (path, layer)
        for path, layer in walk_layers(model)
        if output_rank(layer) is not None
        and not isinstance(layer, keras.layers.InputLayer | keras.Model)
    ]
    if not picked or picked[-1][1].output is not model.outputs[0]:
        raise ModelError(
            f"model {model.name!r}: its last layer does not give its output; only a chain "
            "of layers can show every layer's output"
        )
    tapped = tap_model(model, [path for path, _ in picked])
    flat = [keras.layers.Flatten(name=f"flat_{i}")(out) for i, out in enumerate(tapped.outputs)]
    joined = keras.layers.Concatenate(name="all_layers")(flat)
    combined = keras.Model(tapped.input, joined, name=f"{model.name}_layers")
    attach_info(combined, model_info(model))
    segments, offset = [], 0
    for path, layer in picked:
        shape = [int(d) for d in layer.output.shape[1:]]
        size = int(np.prod(shape))
        segments.append(
            {
                "name": path,
                "type": type(layer).__name__,
                "shape": shape,
                "offset": offset,
                "size": size,
            }
        )
        offset += size
    return combined, segments


def layer_values(model: keras.Model, batch: np.ndarray) -> np.ndarray:
    """Every layer's output for ``batch`` (float32 ``N x H x W x C``), as ``N x total``."""
    tapped, _ = layers_model(model)
    # predict_on_batch calls the model with training=False: dropout is off.
    return np.asarray(tapped.predict_on_batch(batch), dtype=np.float32)


def layers_export(model: keras.Model, *, verbose: bool = True) -> LayerExport:
    """The current ONNX export of ``layers_model(model)``, exported on first use.

    Args:
        model: a model imgrec loaded (from a ``.keras`` file: converted in a child
            process) or built.
        verbose: say on stderr when the model is exported.

    Raises:
        ModelError: the model cannot be converted, or its export disagrees with Keras.
        ImgrecError: the exporter is not installed.
    """
    tapped, segments = layers_model(model)
    folder = cache_dir() / "layers"
    path = folder / f"{_cache_key(model, segments)}.onnx"
    description = path.with_name(path.name + ".json")
    cached = _cached(path, description)
    if cached is not None:
        return cached
    problem = export_available()
    if problem is not None:
        raise ModelError(f"{model_info(model).name}: cannot export its layers ({problem})")
    if verbose:
        print(
            f"imgrec: exporting the layers of {model_info(model).name} to ONNX (once; kept "
            f"in {folder})",
            file=sys.stderr,
        )
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as staged:
        _convert(model, tapped, staged)
        _check(tapped, staged, segments, model_info(model).name)
        digest = file_digest(staged)
    record = {"imgrec_layers": DESCRIPTION_FORMAT, "sha256": digest, "layers": segments}
    write_bytes_atomic(description, json.dumps(record, indent=1).encode())
    return LayerExport(path, digest, segments)


def _cache_key(model: keras.Model, segments: list[dict]) -> str:
    """The export's name: what the model computes, its layers, the exporter's versions.

    The model in memory is what is exported, so it is what names the export (not the
    file it came from, which may have changed since); computed once per model.
    """
    with _LOCK:
        if model in _KEYS:
            return _KEYS[model]
    identity = {
        "weights_sha256": weights_digest(model),
        "layers": segments,
        "opset": ONNX_OPSET,
        "format": DESCRIPTION_FORMAT,
        **exporter_versions(),
    }
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]
    with _LOCK:
        _KEYS[model] = key
    return key


def _cached(path: Path, description: Path) -> LayerExport | None:
    """The export at ``path`` if it and its description are there and agree."""
    try:
        record = json.loads(description.read_text())
        if record.get("imgrec_layers") != DESCRIPTION_FORMAT or not path.is_file():
            return None
        if file_digest(path) != record["sha256"]:
            return None
        return LayerExport(path, record["sha256"], list(record["layers"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def _convert(model: keras.Model, tapped: keras.Model, staged: Path) -> None:
    """Write the ONNX file of ``tapped``: in a child process for a model from a file."""
    name = model_info(model).name
    if source_file(model) is None:
        converting(name, "onnx", lambda: FORMATS["onnx"].convert(tapped, staged, None, None))
        return
    with tempfile.TemporaryDirectory(prefix="imgrec-layers-") as folder:
        copy = Path(folder) / "layers.keras"
        save_model(tapped, copy)
        convert_in_child(copy, "onnx", staged, name=name)


def _check(tapped: keras.Model, staged: Path, segments: list[dict], name: str) -> None:
    """Refuse an export whose layers differ from Keras's on a few random inputs.

    Raises:
        ModelError: a segment differs by more than ``TOLERANCE`` times its largest value.
    """
    shape = tuple(int(d) for d in tapped.input_shape[1:])
    batch = np.random.default_rng(0).uniform(0, 255, (_CHECK_INPUTS, *shape)).astype(np.float32)
    session = open_session(staged, name=name)
    exported = session.run(None, {session.get_inputs()[0].name: batch})[0]
    expected = np.asarray(tapped.predict_on_batch(batch), dtype=np.float32)
    for segment in segments:
        part = slice(segment["offset"], segment["offset"] + segment["size"])
        scale = max(1.0, float(np.abs(expected[:, part]).max()))
        diff = float(np.abs(exported[:, part] - expected[:, part]).max())
        if diff > TOLERANCE * scale:
            raise ModelError(
                f"{name}: the ONNX export of layer {segment['name']!r} differs from Keras "
                f"by {diff:.3g} (more than {TOLERANCE:g} x {scale:.3g}); nothing was kept"
            )
