"""2x super-resolution networks (the Keras.js demo's), and upscaling any photo with one.

Two architectures, both in the registry under the kind ``"super-resolution"``
(``imgrec train PHOTOS --arch sr-cnn``):

- ``sr-cnn``: SRCNN (Dong et al., 2014), the 9-1-5 network with 64 and 32 filters,
  on the bicubic upscaling of the photo, predicting what bicubic misses (the
  residual) rather than the whole photo.
- ``sr-resnet``: a small EDSR-style residual network (no batch normalisation) that
  works at the low resolution and upscales at its end with a sub-pixel layer (a
  stride-2 ``Conv2DTranspose`` with a 2 x 2 kernel, which is a 1 x 1 convolution
  followed by depth-to-space), again adding its output to the bicubic upscaling.

Both are plain ``keras.Model`` of Keras's own layers (nothing custom, so a saved
file passes ``imgrec.models.file_check``): they take a low-resolution RGB photo of
any height and width, with pixels in [0, 1], and give the photo twice as large.
Their last layers start at zero, so that an untrained network is bicubic upscaling.

``upscale`` runs a network over a photo of any size in overlapping tiles: each tile
carries a margin of context at least as wide as the network's receptive field, and
only its centre is kept, so the result equals that of the whole photo at once (no
seams) while memory stays bounded.

This module imports Keras only when a network is built or run, so that the registry
can list the networks without starting TensorFlow.
"""

from __future__ import annotations

import json
import math
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgrec.core.errors import ImageError, ModelError

if TYPE_CHECKING:
    import keras

SUPER_RESOLUTION = "super-resolution"
SCALE = 2
# The low-resolution side of a training patch (the Keras.js demo's 32 x 32 patches).
PATCH = 32
DEFAULT_TILE = 128
# imgrec.json inside a .keras file is small; more than this is not imgrec's.
_MAX_METADATA_BYTES = 1 << 20
_METADATA_MEMBER = "imgrec.json"


@dataclass(frozen=True)
class SuperResolutionArchitecture:
    """One super-resolution network of the registry.

    Args:
        name: the name users type (``sr-cnn``).
        description: one line for people.
        build: ``build(channels=3)``, the untrained network.
        epochs: the recipe's epochs.
        steps_per_epoch: the recipe's batches per epoch.
        batch_size: the recipe's patches per batch.
        learning_rate: the recipe's Adam learning rate (decayed to a tenth, cosine).
    """

    name: str
    description: str
    build: Callable[..., keras.Model]
    epochs: int
    steps_per_epoch: int
    batch_size: int
    learning_rate: float


def _bicubic(inputs: Any) -> Any:
    from keras import layers

    return layers.UpSampling2D(SCALE, interpolation="bicubic", name="bicubic")(inputs)


# ITU-R BT.601 luma, as SRCNN measures and learns on it.
LUMA = (0.299, 0.587, 0.114)


def build_sr_cnn(channels: int = 3) -> keras.Model:
    """SRCNN 9-1-5 (64, 32 filters) on the luminance of the bicubic upscaling.

    As in the paper, the network sees only the luminance (Y) and corrects it: a fixed
    1 x 1 convolution takes Y from RGB, and the correction is added to the three
    colour channels alike, which changes Y by exactly it and leaves the colour as
    bicubic upscaling made it. It predicts the residual, not the whole photo.

    Args:
        channels: 3 for RGB photos, 1 for grey.
    """
    import keras
    from keras import layers

    inputs = keras.Input((None, None, channels), name="low_res")
    upscaled = _bicubic(inputs)
    luma = upscaled
    if channels == 3:
        to_luma = layers.Conv2D(1, 1, use_bias=False, trainable=False, name="luma")
        luma = to_luma(upscaled)
        to_luma.set_weights([np.array(LUMA, np.float32).reshape(1, 1, 3, 1)])
    x = layers.Conv2D(64, 9, padding="same", activation="relu", name="patch_extraction")(luma)
    x = layers.Conv2D(32, 1, activation="relu", name="nonlinear_mapping")(x)
    x = layers.Conv2D(1, 5, padding="same", kernel_initializer="zeros", name="residual")(x)
    if channels == 3:
        x = layers.Concatenate(name="to_rgb")([x, x, x])
    outputs = layers.Add(name="high_res")([upscaled, x])
    return keras.Model(inputs, outputs, name="sr_cnn")


def build_sr_resnet(channels: int = 3, filters: int = 32, blocks: int = 6) -> keras.Model:
    """An EDSR-style residual network at low resolution, sub-pixel upscaling at its end.

    Args:
        channels: 3 for RGB photos, 1 for grey.
        filters: feature maps in the residual blocks.
        blocks: residual blocks (two 3 x 3 convolutions and a skip each).
    """
    import keras
    from keras import layers

    inputs = keras.Input((None, None, channels), name="low_res")
    head = layers.Conv2D(filters, 3, padding="same", name="head")(inputs)
    x = head
    for i in range(1, blocks + 1):
        y = layers.Conv2D(filters, 3, padding="same", activation="relu", name=f"block{i}_conv1")(x)
        y = layers.Conv2D(filters, 3, padding="same", name=f"block{i}_conv2")(y)
        x = layers.Add(name=f"block{i}_add")([x, y])
    x = layers.Conv2D(filters, 3, padding="same", name="body_end")(x)
    x = layers.Add(name="body_skip")([head, x])
    residual = layers.Conv2DTranspose(
        channels, 2, strides=SCALE, kernel_initializer="zeros", name="subpixel"
    )(x)
    outputs = layers.Add(name="high_res")([_bicubic(inputs), residual])
    return keras.Model(inputs, outputs, name="sr_resnet")


SR_ARCHITECTURES: dict[str, SuperResolutionArchitecture] = {
    arch.name: arch
    for arch in (
        SuperResolutionArchitecture(
            "sr-cnn",
            "SRCNN 9-1-5: 2x super-resolution of the luminance (8,129 trained parameters)",
            build_sr_cnn,
            epochs=15,
            steps_per_epoch=20,
            batch_size=16,
            learning_rate=1e-3,
        ),
        SuperResolutionArchitecture(
            "sr-resnet",
            "EDSR-style residual network, sub-pixel 2x upscaling (122,019 parameters)",
            build_sr_resnet,
            epochs=12,
            steps_per_epoch=20,
            batch_size=16,
            learning_rate=1e-3,
        ),
    )
}


def context_margin(model: keras.Model) -> int:
    """Low-resolution pixels of context that decide one output pixel, at most.

    Every convolution's reach is added (an upper bound where branches run side by
    side), in low-resolution pixels: a layer working at twice the input's size
    reaches half as far; an upscaling layer reaches 2 pixels (bicubic's support).
    """
    from keras import layers

    margin = 0.0
    for layer in model.layers:
        if isinstance(layer, layers.UpSampling2D | layers.Conv2DTranspose):
            margin += 2
        elif isinstance(layer, layers.Conv2D):
            reach = (max(layer.kernel_size) - 1) // 2 * max(layer.dilation_rate)
            margin += reach / _scale_of(model, layer.input)
    return math.ceil(margin) + 1


def _scale_of(model: keras.Model, tensor: Any) -> int:
    """How many times larger than the model's input ``tensor`` is (1 or ``SCALE``)."""
    import keras

    probe = keras.Model(model.input, tensor)
    shape = probe.compute_output_shape((1, 8, 8, model.input.shape[-1]))
    return max(1, shape[1] // 8)


def upscale(
    model: keras.Model,
    image: np.ndarray,
    *,
    tile: int = DEFAULT_TILE,
    margin: int | None = None,
) -> np.ndarray:
    """``image`` twice as large, by ``model``, over overlapping tiles (no seams).

    Args:
        model: a super-resolution network (``(H, W, C)`` in [0, 1] to ``(2H, 2W, C)``).
        image: uint8 ``H x W x C`` with the model's channels (any height and width).
        tile: the side of the part of the photo each tile keeps, in input pixels.
        margin: context around each tile, in input pixels (default: the network's
            receptive field, ``context_margin``), so tiles agree where they meet.

    Returns:
        uint8 ``2H x 2W x C``.

    Raises:
        ImageError: not uint8 ``H x W x C`` with the model's channels.
        ValueError: ``tile`` below 1.
    """
    channels = model.input.shape[-1]
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != channels:
        raise ImageError(
            f"expected a uint8 H x W x {channels} image, got {image.dtype} {image.shape}"
        )
    if tile < 1:
        raise ValueError(f"tile must be at least 1, got {tile}")
    margin = context_margin(model) if margin is None else margin
    height, width = image.shape[:2]
    pixels = image.astype(np.float32) / 255.0
    out = np.empty((SCALE * height, SCALE * width, channels), np.float32)
    for top in range(0, height, tile):
        for left in range(0, width, tile):
            y0, x0 = max(0, top - margin), max(0, left - margin)
            y1, x1 = min(height, top + tile + margin), min(width, left + tile + margin)
            result = model(pixels[np.newaxis, y0:y1, x0:x1], training=False)
            result = np.asarray(result)[0]
            keep_h, keep_w = min(tile, height - top), min(tile, width - left)
            dy, dx = SCALE * (top - y0), SCALE * (left - x0)
            out[SCALE * top : SCALE * (top + keep_h), SCALE * left : SCALE * (left + keep_w)] = (
                result[dy : dy + SCALE * keep_h, dx : dx + SCALE * keep_w]
            )
    return np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


def read_metadata(path: str | os.PathLike) -> dict[str, Any] | None:
    """The imgrec metadata inside a ``.keras`` file, read without Keras; None if none.

    Only the small ``imgrec.json`` member is read (at most 1 MiB, else None): nothing
    is loaded or built, so this is cheap enough for a listing.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo(_METADATA_MEMBER)
            if info.file_size > _MAX_METADATA_BYTES:
                return None
            with archive.open(info) as member:
                data = member.read(_MAX_METADATA_BYTES + 1)
        config = json.loads(data)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, RecursionError):
        return None
    return config if isinstance(config, dict) else None


def super_resolution_architecture(path: str | os.PathLike) -> str | None:
    """The super-resolution architecture a ``.keras`` file says it holds, or None.

    Read from its imgrec metadata (``training.architecture`` with ``training.kind``
    ``"super-resolution"``), without loading the model.
    """
    if not str(path).endswith(".keras") or not Path(path).is_file():
        return None
    training = (read_metadata(path) or {}).get("training")
    if not isinstance(training, dict) or training.get("kind") != SUPER_RESOLUTION:
        return None
    arch = training.get("architecture")
    return arch if isinstance(arch, str) else None


def check_super_resolution_model(model: keras.Model, name: str) -> None:
    """Refuse a model that does not make an image twice as large as it takes.

    Raises:
        ModelError: naming ``name``.
    """
    shape_in, shape_out = model.input_shape, model.output_shape
    if (
        not isinstance(shape_in, tuple)
        or len(shape_in) != 4
        or not isinstance(shape_out, tuple)
        or len(shape_out) != 4
        or shape_in[-1] != shape_out[-1]
        or shape_in[-1] not in (1, 3)
        or _output_side(model) != SCALE * 8
    ):
        raise ModelError(
            f"{name}: not a super-resolution network (input {shape_in}, output {shape_out})"
        )


def _output_side(model: keras.Model) -> int | None:
    try:
        shape = model.compute_output_shape((1, 8, 8, model.input_shape[-1]))
    except Exception:  # Keras raises many types for shapes a model cannot take
        return None
    return shape[1] if isinstance(shape, tuple) and len(shape) == 4 else None


def upscale_photo(model: keras.Model, image: np.ndarray, *, tile: int = DEFAULT_TILE) -> np.ndarray:
    """A uint8 photo (grey ``H x W x 1`` or RGB) twice as large by ``model``.

    A grey photo goes through an RGB network as three equal channels and comes back
    grey (the mean of the three); an RGB photo through a grey network one channel at a
    time.
    """
    channels = model.input.shape[-1]
    if image.shape[-1] == channels:
        return upscale(model, image, tile=tile)
    if channels == 3:  # grey photo, colour network
        big = upscale(model, np.repeat(image, 3, axis=-1), tile=tile).astype(np.float32)
        return np.round(big.mean(axis=-1, keepdims=True)).astype(np.uint8)
    planes = [upscale(model, image[..., [c]], tile=tile) for c in range(image.shape[-1])]
    return np.concatenate(planes, axis=-1)


def upscale_file(
    image: str | os.PathLike,
    model: str | os.PathLike | keras.Model,
    out: str | os.PathLike | None = None,
    *,
    tile: int = DEFAULT_TILE,
) -> dict[str, Any]:
    """Upscale a photo file 2x with a super-resolution network and write it as a PNG.

    Grey photos stay grey; transparent pixels are composited over white (as
    ``imgrec.load_image`` does everywhere), the rest is upscaled in colour.

    Args:
        image: the photo.
        model: a super-resolution ``.keras`` file (``imgrec train PHOTOS --arch
            sr-cnn``), or a loaded network.
        out: the PNG to write (default: the photo's name with ``_2x.png``, beside it).
        tile: the side of the tiles the photo is upscaled in (input pixels).

    Returns:
        ``{"image", "model", "out", "size": [w, h], "upscaled": [2w, 2h], "seconds"}``.

    Raises:
        ImageError: not a photo, or over the pixel cap.
        ModelError: not a super-resolution network.
    """
    import time

    from PIL import Image

    from imgrec.core.images import load_image
    from imgrec.core.storage import atomic_path
    from imgrec.models.loading import load_model

    network = model if not isinstance(model, str | os.PathLike) else load_model(model)
    name = str(model) if isinstance(model, str | os.PathLike) else network.name
    check_super_resolution_model(network, name)
    pixels = load_image(image, mode="RGB")
    if _is_grey(pixels):
        pixels = pixels[..., :1]
    out = Path(out) if out is not None else Path(image).with_name(f"{Path(image).stem}_2x.png")
    started = time.perf_counter()
    big = upscale_photo(network, pixels, tile=tile)
    seconds = time.perf_counter() - started
    with atomic_path(out) as tmp:
        Image.fromarray(big[..., 0] if big.shape[-1] == 1 else big).save(tmp, format="PNG")
    height, width = pixels.shape[:2]
    return {
        "image": str(image),
        "model": name,
        "out": str(out),
        "size": [width, height],
        "upscaled": [big.shape[1], big.shape[0]],
        "seconds": round(seconds, 3),
    }


def _is_grey(pixels: np.ndarray) -> bool:
    return bool(
        np.array_equal(pixels[..., 0], pixels[..., 1])
        and np.array_equal(pixels[..., 0], pixels[..., 2])
    )
