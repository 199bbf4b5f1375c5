"""The Keras.js demo's convolutional VAE: build it, decode a point of its latent plane.

The network is Keras's own "Variational AutoEncoder" example with half its decoder's
filters (a quarter of its work, so that it trains in minutes on two CPU cores): an
encoder (two strided convolutions, then the mean and log-variance of a 2-D latent
code) and a decoder (a dense layer, a reshape and three transposed convolutions back
to the image).

What is saved (and loaded back through ``imgrec.load_model``, ``safe_mode`` and
``imgrec.models.file_check``) is a plain functional ``keras.Model`` made only of
Keras's own layers: ``image -> encoder -> z_mean -> decoder -> reconstruction``, with
the encoder and decoder nested inside it as the layers ``"encoder"`` and
``"decoder"``. The sampling step and the VAE's loss belong to training only
(``imgrec.training.vae``), so no class of imgrec's own is ever written to a file.

>>> model = build_conv_vae((28, 28, 1))
>>> decode(model, [[0.5, -0.2]]).shape
(1, 28, 28, 1)
>>> latent_grid(model, 3).shape  # 3 x 3 decodings over the plane [-1, 1]^2
(84, 84, 1)
"""

from __future__ import annotations

import io
import os
import threading
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from PIL import Image

from imgrec.core.errors import ImgrecError, ModelError
from imgrec.core.storage import write_bytes_atomic

ARCHITECTURE = "conv-vae"
LATENT_DIM = 2
#: The demo's latent plane, and ``latent_grid``'s, spans [-PLANE_EXTENT, PLANE_EXTENT].
PLANE_EXTENT = 1.0
#: Most points ``decode`` and ``latent_grid`` decode in one call.
MAX_DECODINGS = 4096
ENCODER, DECODER = "encoder", "decoder"

# One model per decoder that outputs every decoder layer (built once, like layer_view's).
_TAPS: weakref.WeakKeyDictionary[keras.Model, keras.Model] = weakref.WeakKeyDictionary()
_TAPS_LOCK = threading.Lock()


def is_conv_vae(arch: str) -> bool:
    """Whether ``arch`` names this network (``conv-vae``, ``conv_vae``, ``ConvVAE``...)."""
    return str(arch).lower().replace("-", "").replace("_", "") == "convvae"


def build_encoder(input_shape: Sequence[int], latent_dim: int = LATENT_DIM) -> keras.Model:
    """The encoder: pixels (0-255) in; ``[z_mean, z_log_var]`` out, ``latent_dim`` each.

    Raises:
        ModelError: an input whose height or width is not a multiple of 4.
    """
    height, width, channels = _check_input_shape(input_shape)
    images = keras.Input((height, width, channels), name="image")
    x = keras.layers.Rescaling(1 / 255, name="rescale")(images)
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu", name="conv2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(16, activation="relu", name="dense")(x)
    z_mean = keras.layers.Dense(latent_dim, name="z_mean")(x)
    z_log_var = keras.layers.Dense(latent_dim, name="z_log_var")(x)
    return keras.Model(images, [z_mean, z_log_var], name=ENCODER)


def build_decoder(output_shape: Sequence[int], latent_dim: int = LATENT_DIM) -> keras.Model:
    """The decoder: a latent point in; the image out, each pixel in [0, 1].

    Raises:
        ModelError: an image whose height or width is not a multiple of 4.
    """
    height, width, channels = _check_input_shape(output_shape)
    z = keras.Input((latent_dim,), name="z")
    x = keras.layers.Dense(height // 4 * (width // 4) * 32, activation="relu", name="dense")(z)
    x = keras.layers.Reshape((height // 4, width // 4, 32), name="reshape")(x)
    for index, filters in enumerate((32, 16), start=1):
        x = keras.layers.Conv2DTranspose(
            filters, 3, strides=2, padding="same", activation="relu", name=f"deconv{index}"
        )(x)
    image = keras.layers.Conv2DTranspose(
        channels, 3, padding="same", activation="sigmoid", name="image"
    )(x)
    return keras.Model(z, image, name=DECODER)


def build_conv_vae(
    input_shape: Sequence[int] = (28, 28, 1),
    latent_dim: int = LATENT_DIM,
    *,
    encoder: keras.Model | None = None,
    decoder: keras.Model | None = None,
) -> keras.Model:
    """The whole network as it is saved: ``image -> encoder -> z_mean -> decoder``.

    Args:
        input_shape: ``(height, width, channels)``; height and width multiples of 4.
        latent_dim: the size of the latent code (the demo's plane needs 2).
        encoder, decoder: the parts to join (they keep their weights); built new
            when not given.

    Raises:
        ModelError: a height or width that is not a multiple of 4.
    """
    encoder = encoder or build_encoder(input_shape, latent_dim)
    decoder = decoder or build_decoder(input_shape, latent_dim)
    images = keras.Input(tuple(encoder.input_shape[1:]), name="image")
    z_mean, _ = encoder(images)
    return keras.Model(images, decoder(z_mean), name="conv_vae")


def check_conv_vae(model: keras.Model, source: str = "the model") -> None:
    """Refuse a model that is not a VAE of :func:`build_conv_vae`'s shape.

    Raises:
        ModelError: no ``encoder`` or ``decoder`` inside, naming ``source``.
    """
    names = {layer.name for layer in getattr(model, "layers", [])}
    if not {ENCODER, DECODER} <= names:
        raise ModelError(
            f"{source}: not a variational autoencoder (it has no '{ENCODER}' and "
            f"'{DECODER}' layers); train one with: imgrec train mnist --arch {ARCHITECTURE}"
        )


def latent_dim_of(model: keras.Model) -> int:
    """The size of ``model``'s latent code."""
    check_conv_vae(model)
    return int(model.get_layer(DECODER).input_shape[-1])


def encode(model: keras.Model, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The latent means of ``images`` (uint8 ``N x H x W x C``) as float32 ``N x latent``."""
    check_conv_vae(model)
    encoder = model.get_layer(ENCODER)
    z_mean, _ = encoder.predict(np.asarray(images), batch_size=batch_size, verbose=0)
    return np.asarray(z_mean, dtype=np.float32)


def decode(model: keras.Model, z: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    """The images of the latent points ``z`` (``N x latent``), as uint8 ``N x H x W x C``.

    Raises:
        ImgrecError: ``z`` is not ``N`` finite points of the model's latent size, or
            more than ``MAX_DECODINGS`` of them.
    """
    points = _latent_points(model, z)
    decoded = keras.ops.convert_to_numpy(model.get_layer(DECODER)(points, training=False))
    return _to_uint8(decoded)


def decoder_outputs(model: keras.Model, z: Sequence[float]) -> list[dict[str, Any]]:
    """What each layer of the decoder makes of one latent point ``z``.

    Returns:
        One dict per decoder layer after its input, in order: ``name``, ``type`` (the
        class name) and ``values`` (float32, the output without its batch axis).
    """
    point = _latent_points(model, [z])
    decoder = model.get_layer(DECODER)
    with _TAPS_LOCK:
        if decoder not in _TAPS:
            outputs = [layer.output for layer in decoder.layers[1:]]
            _TAPS[decoder] = keras.Model(decoder.input, outputs, name="decoder_taps")
        tapped = _TAPS[decoder]
    values = tapped(point, training=False)
    return [
        {
            "name": layer.name,
            "type": type(layer).__name__,
            "values": keras.ops.convert_to_numpy(value)[0].astype(np.float32),
        }
        for layer, value in zip(decoder.layers[1:], values, strict=True)
    ]


def grid_points(size: int, extent: float = PLANE_EXTENT) -> np.ndarray:
    """``size x size`` latent points over [-extent, extent]^2, row by row from the top.

    Rows go from ``y = +extent`` (top) down to ``-extent``; columns from ``x = -extent``
    (left) to ``+extent``, as the page draws its plane.
    """
    axis = np.linspace(-extent, extent, size, dtype=np.float32)
    ys, xs = np.meshgrid(axis[::-1], axis, indexing="ij")
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def latent_grid(model: keras.Model, size: int = 15, extent: float = PLANE_EXTENT) -> np.ndarray:
    """The decodings of a ``size x size`` grid over the latent plane, as one uint8 image.

    Args:
        model: a VAE with a 2-D latent code.
        size: points per side (the picture is ``size * H`` by ``size * W``).
        extent: the plane spans [-extent, extent] on both axes.

    Raises:
        ImgrecError: ``size`` below 1 or above 64, ``extent`` not above 0, or a
            latent code that is not 2-D.
    """
    if not 1 <= size <= 64:
        raise ImgrecError(f"the grid takes 1 to 64 points a side, not {size}")
    if not (np.isfinite(extent) and extent > 0):
        raise ImgrecError(f"the grid's extent must be a number above 0, not {extent}")
    if latent_dim_of(model) != 2:
        raise ImgrecError(
            f"a grid over the latent plane needs a 2-D latent code, not {latent_dim_of(model)}-D"
        )
    images = decode(model, grid_points(size, extent))
    _, height, width, channels = images.shape
    tiled = images.reshape(size, size, height, width, channels).transpose(0, 2, 1, 3, 4)
    return tiled.reshape(size * height, size * width, channels)


def write_png(pixels: np.ndarray, out: str | os.PathLike) -> Path:
    """Write a uint8 ``H x W x C`` (C = 1 or 3) image as a PNG, atomically; return its path."""
    buffer = io.BytesIO()
    array = pixels[..., 0] if pixels.shape[-1] == 1 else pixels
    Image.fromarray(array).save(buffer, format="PNG")
    write_bytes_atomic(out, buffer.getvalue())
    return Path(out)


def parse_point(text: str) -> tuple[float, ...]:
    """``"0.5,-0.2"`` as ``(0.5, -0.2)``.

    Raises:
        ImgrecError: not comma-separated finite numbers.
    """
    try:
        point = tuple(float(part) for part in str(text).split(","))
    except ValueError:
        raise ImgrecError(f"--z: expected numbers separated by commas, got {text!r}") from None
    if not all(np.isfinite(point)):
        raise ImgrecError(f"--z: expected finite numbers, got {text!r}")
    return point


def _latent_points(model: keras.Model, z: Any) -> np.ndarray:
    latent = latent_dim_of(model)
    try:
        points = np.asarray(z, dtype=np.float32)
    except (TypeError, ValueError):
        raise ImgrecError(f"latent points must be numbers, got {z!r:.100}") from None
    if points.ndim != 2 or points.shape[1] != latent or not len(points):
        raise ImgrecError(
            f"expected latent points of {latent} numbers each, got an array of shape {points.shape}"
        )
    if len(points) > MAX_DECODINGS:
        raise ImgrecError(f"at most {MAX_DECODINGS} latent points at once, got {len(points)}")
    if not np.isfinite(points).all():
        raise ImgrecError("latent points must be finite numbers")
    return points


def _to_uint8(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values * 255), 0, 255).astype(np.uint8)


def _check_input_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    if len(shape) != 3:
        raise ModelError(
            f"{ARCHITECTURE}: expected an input shape (height, width, channels), got {tuple(shape)}"
        )
    height, width, channels = (int(s) for s in shape)
    if height % 4 or width % 4 or min(height, width) < 4:
        raise ModelError(
            f"{ARCHITECTURE}: the image's height and width must be multiples of 4 (28 x 28 "
            f"for the digits), not {height} x {width}; give --image-size 28"
        )
    return height, width, channels


def generate(
    model: str | os.PathLike | keras.Model,
    out: str | os.PathLike,
    *,
    z: str | Sequence[float] | None = None,
    grid: int | None = None,
    extent: float = PLANE_EXTENT,
) -> dict[str, Any]:
    """Decode one latent point, or a grid of them over the plane, into a PNG.

    Args:
        model: a ``.keras`` file that ``imgrec train --arch conv-vae`` wrote, or the
            loaded model.
        out: the PNG to write.
        z: one latent point: ``"0.5,-0.2"`` or ``(0.5, -0.2)``; the PNG is the
            decoded image at its own size (28 x 28 for the digits).
        grid: instead of ``z``, ``N`` for ``N x N`` decodings over
            [-extent, extent]^2, top row at ``y = +extent``, left column at
            ``x = -extent``.
        extent: half the side of the grid's square (default the page's plane, 1).

    Returns:
        Plain data: ``model``, ``out``, ``z`` (or None), ``grid`` (or None),
        ``extent`` and the PNG's ``width`` and ``height``.

    Raises:
        ImgrecError: neither or both of ``z`` and ``grid``, or a bad point.
        ModelError: the model cannot be loaded or is not a VAE.
    """
    if (z is None) == (grid is None):
        raise ImgrecError(
            "give --z X,Y (one decoding) or --grid N (N x N decodings over the plane), "
            "not both or neither"
        )
    if isinstance(model, keras.Model):
        loaded, name = model, model.name
    else:
        from imgrec.models.loading import load_model

        loaded, name = load_model(model), str(model)
    check_conv_vae(loaded, name)
    point = parse_point(z) if isinstance(z, str) else z
    pixels = latent_grid(loaded, grid, extent) if grid is not None else decode(loaded, [point])[0]
    path = write_png(pixels, out)
    return {
        "model": name,
        "out": str(path),
        "z": None if point is None else [float(v) for v in point],
        "grid": grid,
        "extent": extent,
        "width": int(pixels.shape[1]),
        "height": int(pixels.shape[0]),
    }
