"""Look inside a network: its layers as a table, and what each layer makes of a photo.

``describe_layers`` is Keras's ``model.summary()`` as data (nested models opened);
``feature_maps`` gives the first channels of every 4-D layer's output for one photo,
the pictures of the chapter's "visualising intermediate activations"; and
``layers_report`` (behind ``imgrec layers``) writes them as one PNG grid per layer.
"""

from __future__ import annotations

import json
import math
import os
import threading
import weakref
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from imgrec.core.errors import ImgrecError, SpecError
from imgrec.core.images import image_from_array
from imgrec.core.storage import write_bytes_atomic
from imgrec.explanation.cam import colorize, read_image
from imgrec.models.graph import SEPARATOR, resolve_layer, spatial_layers, tap_model, walk_layers
from imgrec.models.loading import load_model
from imgrec.models.metadata import model_info

DEFAULT_CHANNELS = 16
GRID_COLORMAP = "viridis"
# Small maps (MobileNetV2's last ones are 7 x 7) are enlarged to at least this many
# pixels a side, pixel for pixel, so that the grid shows them.
_MIN_TILE = 64
_GAP = 2
_GAP_COLOUR = 255

# One model that outputs every 4-D layer, per model: built and compiled once, it
# serves any choice of layers (the forward pass runs through all of them anyway).
_TAPS: weakref.WeakKeyDictionary[keras.Model, keras.Model] = weakref.WeakKeyDictionary()
_TAPS_LOCK = threading.Lock()


def describe_layers(model: keras.Model) -> list[dict]:
    """Every layer of ``model``, as Keras's summary lists them, nested models opened.

    Args:
        model: a built Keras model.

    Returns:
        One JSON-ready dict per layer, in order: ``name`` (the path, nested layers
        prefixed with their model's name: ``"backbone/Conv1"``), ``type`` (the
        class name), ``output_shape`` (a list, ``None`` for the batch; a list of
        lists for several outputs; ``None`` for a layer never called), ``parameters``
        (weights of the layer, a nested model's row counting all of its layers
        again), ``trainable`` and ``depth`` (0 at the top, 1 inside a nested model).
    """
    return [
        {
            "name": path,
            "type": type(layer).__name__,
            "output_shape": _output_shape(layer),
            "parameters": int(sum(math.prod(w.shape) for w in layer.weights)),
            "trainable": bool(layer.trainable),
            "depth": path.count(SEPARATOR),
        }
        for path, layer in walk_layers(model)
    ]


def feature_maps(
    model: keras.Model,
    image: np.ndarray,
    *,
    layers: Sequence[str] | None = None,
    channels: int = DEFAULT_CHANNELS,
) -> dict[str, np.ndarray]:
    """What each 4-D layer makes of a photo: the first channels of its output.

    Args:
        model: a model imgrec loaded or built (it carries ``model_info``).
        image: a decoded uint8 photo, ``H x W x 3`` or ``H x W x 1``, any size: it is
            resized, cropped and normalised as the model's preprocessing says.
        layers: names or paths (``"backbone/block_1_expand"``) of 4-D layers;
            default: all of them (``imgrec.models.graph.spatial_layers``).
        channels: at most this many channels per layer, the first ones.

    Returns:
        Layer path to float32 ``h x w x c`` (``c = min(channels, the layer's)``), in
        the network's order.

    Raises:
        SpecError: ``channels`` is not a positive integer.
        ModelError: no imgrec metadata, or a layer that is not a 4-D layer of the
            model (the message lists the candidates).
        ImageError: ``image`` is not a uint8 image.
    """
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise SpecError(f"channels must be a positive integer, got {channels!r}")
    info = model_info(model)
    paths = spatial_layers(model)
    wanted = set(paths if layers is None else (resolve_layer(model, n, paths) for n in layers))
    if not wanted:
        return {}
    tapped = _tapped(model, paths)
    mode = "L" if model.input_shape[-1] == 1 else "RGB"
    batch = info.preprocessing([image_from_array(image, mode=mode, name="image")])
    # predict_on_batch calls the model with training=False (augmentation stays off).
    outputs = tapped.predict_on_batch(batch)
    return {
        path: np.asarray(output[0, ..., :channels], dtype=np.float32)
        for path, output in zip(paths, outputs, strict=True)
        if path in wanted
    }


def layers_report(
    model: str | os.PathLike | keras.Model,
    image: str | os.PathLike | np.ndarray | None = None,
    out: str | os.PathLike | None = None,
    *,
    channels: int = DEFAULT_CHANNELS,
) -> dict:
    """The layer table of a model and, for a photo, a picture of every 4-D layer.

    The API behind ``imgrec layers``.

    Args:
        model: a zoo name, a ``.keras`` file, or a Keras model.
        image: an image file or a decoded uint8 photo; needs ``out``.
        out: a folder for ``index.json`` (this function's result) and, with an
            image, one PNG per 4-D layer, named by position and layer
            (``003_block_1_expand.png``): its first ``channels`` channels in a grid,
            each scaled to its own range.
        channels: channels per grid.

    Returns:
        JSON-ready: ``model``, ``layers`` (``describe_layers``), ``parameters``,
        ``trainable_parameters``; with ``out``, ``index`` (the JSON's path); with an
        image, ``image`` and ``feature_maps`` (``{"layer", "shape", "png"}`` per layer).

    Raises:
        ImgrecError: an image without ``out``.
        ModelError, WeightsError, ImageError, SpecError: as ``load_model``,
        ``load_image`` and ``feature_maps`` raise them.
    """
    if image is not None and out is None:
        raise ImgrecError("the feature-map pictures of an image need an output folder (--out)")
    if not isinstance(model, keras.Model):
        model = load_model(model)
    rows = describe_layers(model)
    trainable = sum(math.prod(w.shape) for w in model.trainable_weights)
    result: dict = {
        "model": model.name,
        "layers": rows,
        "parameters": int(model.count_params()),
        "trainable_parameters": int(trainable),
    }
    if out is None:
        return result
    folder = Path(out)
    if image is not None:
        label, photo = read_image(model, image)
        maps = feature_maps(model, photo, channels=channels)
        position = {row["name"]: i for i, row in enumerate(rows)}
        digits = max(2, len(str(len(rows) - 1)))
        pictures = []
        for path, values in maps.items():
            png = folder / f"{position[path]:0{digits}d}_{path.replace(SEPARATOR, '_')}.png"
            _write_png(png, channel_grid(values))
            pictures.append({"layer": path, "shape": list(values.shape), "png": str(png)})
        result |= {"image": label, "feature_maps": pictures}
    index = folder / "index.json"
    result["index"] = str(index)
    write_bytes_atomic(index, json.dumps(result, indent=2).encode())
    return result


def channel_grid(values: np.ndarray, colormap: str = GRID_COLORMAP) -> np.ndarray:
    """Tile the channels of one feature map into a near-square grid picture.

    Args:
        values: float ``h x w x c``.
        colormap: how values are painted (one of ``imgrec.explanation.cam.COLORMAPS``).

    Returns:
        uint8 RGB: each channel scaled from its own minimum to its own maximum (a
        constant channel is drawn at 0), maps smaller than 64 pixels enlarged by a
        whole factor, tiles separated by white lines.
    """
    values = np.asarray(values, dtype=np.float32)
    height, width, count = values.shape
    scale = max(1, math.ceil(_MIN_TILE / max(height, width)))
    columns = math.ceil(math.sqrt(count))
    rows = math.ceil(count / columns)
    tile_h, tile_w = height * scale, width * scale
    grid = np.full(
        (rows * (tile_h + _GAP) - _GAP, columns * (tile_w + _GAP) - _GAP, 3),
        _GAP_COLOUR,
        dtype=np.uint8,
    )
    for channel in range(count):
        plane = values[..., channel]
        low, high = float(plane.min()), float(plane.max())
        scaled = (plane - low) / (high - low) if high > low else np.zeros_like(plane)
        tile = colorize(scaled, colormap).repeat(scale, axis=0).repeat(scale, axis=1)
        top = (channel // columns) * (tile_h + _GAP)
        left = (channel % columns) * (tile_w + _GAP)
        grid[top : top + tile_h, left : left + tile_w] = tile
    return grid


def _tapped(model: keras.Model, paths: list[str]) -> keras.Model:
    with _TAPS_LOCK:
        if model not in _TAPS:
            _TAPS[model] = tap_model(model, paths)
        return _TAPS[model]


def _output_shape(layer: keras.layers.Layer) -> list | None:
    try:
        output = layer.output
    except (AttributeError, ValueError):  # Keras's answers for a layer never called
        return None
    if isinstance(output, list | tuple):
        return [list(tensor.shape) for tensor in output]
    return list(output.shape)


def _write_png(path: Path, pixels: np.ndarray) -> None:
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())
