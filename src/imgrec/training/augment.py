"""Data augmentation, the textbook's ``ImageDataGenerator`` as Keras preprocessing layers.

A spec string such as ``"flip,rotate=15,zoom=0.1,shift=0.1,brightness=0.2,contrast=0.2"``
becomes a ``keras.Sequential`` named ``"augmentation"`` that sits at the front of a model
and runs on whatever device trains it, with any Keras backend. It works on float pixels
in 0-255 (the models rescale after it).

The layers change images only in training mode. ``fit`` passes ``training=True``;
``predict``, ``evaluate`` and ``model(x, training=False)`` pass images through unchanged,
so the layer can stay in a saved model. Beware a bare ``model(x)``: Keras 3's image
layers default to ``training=True`` when no caller says otherwise, so code that calls a
model directly (a ``GradientTape`` for CAM, an export trace) must pass ``training=False``.

Each name and its ``ImageDataGenerator`` counterpart:

- ``flip``: ``horizontal_flip=True``; ``RandomFlip("horizontal")``.
- ``rotate=D``: ``rotation_range=D`` degrees, 0 < D <= 180; ``RandomRotation(D / 360)``.
- ``zoom=F``: ``zoom_range=F``, scale 1 - F to 1 + F, height and width drawn
  independently; ``RandomZoom(F, F)``.
- ``shift=F``: ``width_shift_range=F, height_shift_range=F``; ``RandomTranslation(F, F)``.
- ``brightness=F``: like ``brightness_range=[1 - F, 1 + F]``, but Keras adds up to
  +-F x 255 instead of multiplying; ``RandomBrightness(F, value_range=(0, 255))``.
- ``contrast=F``: no counterpart; ``RandomContrast(F)`` scales each image's deviation
  from its mean by 1 - F to 1 + F.

Pixels that a rotation, zoom or shift brings in from outside the image repeat the
nearest edge pixel, ``ImageDataGenerator``'s default ``fill_mode="nearest"``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from imgrec.core.choices import AUGMENTATIONS
from imgrec.core.errors import SpecError
from imgrec.core.images import image_from_array, load_image

# The canonical order: the layers are built, and specs written, in this order.
NAMES = AUGMENTATIONS

_FILL_MODE = "nearest"  # ImageDataGenerator's default

# The grid shows what augmentation does, not the photo's full resolution: without
# ``size`` a larger image is scaled down to this many pixels on its longer side.
_GRID_MAX_SIDE = 512

_NONE = ("", "none")

# Shown in "needs a value" errors.
_EXAMPLES = {"rotate": "15", "zoom": "0.1", "shift": "0.1", "brightness": "0.2", "contrast": "0.2"}


def parse_augment(spec: str) -> dict[str, float | bool]:
    """Read an augmentation spec such as ``"flip,rotate=15,zoom=0.1"``.

    Names: ``flip`` (no value); ``rotate=DEGREES`` with 0 < DEGREES <= 180;
    ``zoom``, ``shift``, ``brightness``, ``contrast`` with a fraction in (0, 1).
    Names are case-insensitive and may come in any order, each once.

    Returns:
        ``{"flip": True, "rotate": 15.0, ...}`` in the canonical order of ``NAMES``;
        ``{}`` for ``""`` or ``"none"``.

    Raises:
        SpecError: an unknown name, a missing, extra or out-of-range value, or a name
            given twice; the message quotes the part at fault.
    """
    if not isinstance(spec, str):
        raise SpecError(f"augmentation spec must be a string, got {type(spec).__name__}")
    if spec.strip().lower() in _NONE:
        return {}
    found: dict[str, float | bool] = {}
    for raw in spec.split(","):
        part = raw.strip()
        name, has_value, text = (s.strip() for s in part.partition("="))
        name = name.lower()
        where = f"augmentation {part!r} in {spec!r}"
        if not part:
            raise SpecError(f"empty part in augmentation spec {spec!r}")
        if name not in NAMES:
            raise SpecError(f"{where}: unknown name {name!r}; known: {', '.join(NAMES)}")
        if name in found:
            raise SpecError(f"{where}: {name!r} is given twice")
        if name == "flip":
            if has_value:
                raise SpecError(f"{where}: 'flip' takes no value (write just 'flip')")
            found[name] = True
            continue
        if not has_value or not text:
            raise SpecError(f"{where}: {name!r} needs a value, as in {name}={_EXAMPLES[name]}")
        try:
            value = float(text)
        except ValueError:
            raise SpecError(f"{where}: {text!r} is not a number") from None
        if name == "rotate":
            if not 0 < value <= 180:
                raise SpecError(f"{where}: rotate is in degrees, more than 0 and at most 180")
        elif not 0 < value < 1:
            raise SpecError(f"{where}: {name} must be a fraction between 0 and 1 (exclusive)")
        found[name] = value
    return {name: found[name] for name in NAMES if name in found}


def spec_to_string(spec: dict[str, float | bool]) -> str:
    """The canonical spec string of a parsed spec: ``"flip,rotate=15,zoom=0.1"``.

    Names come in the order of ``NAMES``; ``flip: False`` is left out; an empty spec
    gives ``"none"``. ``parse_augment(spec_to_string(d)) == d`` for a parsed ``d``.

    Raises:
        SpecError: the dict holds an unknown name or a bad value.
    """
    unknown = [str(name) for name in spec if name not in NAMES]
    if unknown:
        raise SpecError(f"unknown augmentation {', '.join(unknown)}; known: {', '.join(NAMES)}")
    parts = []
    for name in NAMES:
        value = spec.get(name)
        if name == "flip":
            if value not in (None, False, True):
                raise SpecError(f"augmentation 'flip' must be True or False, got {value!r}")
            if value:
                parts.append("flip")
        elif value is not None:
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise SpecError(f"augmentation {name!r} needs a number, got {value!r}")
            parts.append(f"{name}={_number(float(value))}")
    text = ",".join(parts) or "none"
    parse_augment(text)  # the same ranges as a spec string
    return text


def augmentation_layer(
    spec: str | dict[str, float | bool], seed: int | None = None
) -> keras.Sequential | None:
    """Build the augmentation layers for ``spec``, or None when it asks for nothing.

    Args:
        spec: a spec string (see ``parse_augment``) or a dict it returned.
        seed: makes the random transforms repeatable; each layer gets its own seed
            derived from it. None: different on every run.

    Returns:
        A ``keras.Sequential`` named ``"augmentation"`` of ``RandomFlip``,
        ``RandomRotation``, ``RandomZoom``, ``RandomTranslation``, ``RandomBrightness``,
        ``RandomContrast`` (those asked for, in that order), for float inputs in 0-255,
        channels last, any number of channels. Identity in inference mode
        (``predict``, ``training=False``); note that a bare call ``layer(x)`` is in
        training mode, Keras 3's default for these layers.

    Raises:
        SpecError: a bad spec.
    """
    parsed = parse_augment(spec_to_string(spec) if isinstance(spec, dict) else spec)
    if not parsed:
        return None
    layers = []
    for name, value in parsed.items():
        layer_seed = None if seed is None else seed + NAMES.index(name)
        kwargs = {"seed": layer_seed, "name": f"augment_{name}"}
        if name == "flip":
            layer = keras.layers.RandomFlip("horizontal", **kwargs)
        elif name == "rotate":
            layer = keras.layers.RandomRotation(value / 360.0, fill_mode=_FILL_MODE, **kwargs)
        elif name == "zoom":
            layer = keras.layers.RandomZoom(value, value, fill_mode=_FILL_MODE, **kwargs)
        elif name == "shift":
            layer = keras.layers.RandomTranslation(value, value, fill_mode=_FILL_MODE, **kwargs)
        elif name == "brightness":
            layer = keras.layers.RandomBrightness(value, value_range=(0, 255), **kwargs)
        else:
            layer = keras.layers.RandomContrast(value, value_range=(0, 255), **kwargs)
        layers.append(layer)
    return keras.Sequential(layers, name="augmentation")


def augment_grid(
    image: str | os.PathLike | np.ndarray,
    spec: str,
    out: str | os.PathLike,
    *,
    count: int = 16,
    seed: int = 0,
    size: int | None = None,
) -> Path:
    """Draw a PNG grid of ``count`` pictures: the image, then random augmentations of it.

    Args:
        image: an image file (read as RGB) or a uint8 array (H x W, H x W x 1 grey,
            H x W x 3 or 4).
        spec: the augmentation spec (see ``parse_augment``).
        out: the PNG to write.
        count: pictures in the grid, the original first.
        seed: the same seed draws the same grid.
        size: resize to ``size`` x ``size`` first, as a model's input would be;
            None keeps the image's shape, scaled down to at most 512 pixels a side.

    Returns:
        ``out`` as a Path.

    Raises:
        SpecError: a bad or empty spec.
        ImageError: the image cannot be read.
        ValueError: ``count`` or ``size`` below 1.
    """
    from imgrec.core.plots import plot_image_grid  # matplotlib only when a grid is drawn

    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if size is not None and size < 1:
        raise ValueError(f"size must be at least 1, got {size}")
    parsed = parse_augment(spec)
    layer = augmentation_layer(parsed, seed=seed)
    if layer is None:
        raise SpecError(f"augmentation spec {spec!r} asks for nothing: no grid to draw")

    if isinstance(image, np.ndarray):
        grey = image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 1)
        pixels = image_from_array(image, mode="L" if grey else "RGB")
    else:
        pixels = load_image(image)
    pixels = _resize(pixels, size)

    pictures = [pixels]
    if count > 1:
        batch = np.repeat(pixels[np.newaxis].astype("float32"), count - 1, axis=0)
        augmented = keras.ops.convert_to_numpy(layer(batch, training=True))
        pictures += list(np.clip(np.rint(augmented), 0, 255).astype(np.uint8))
    titles = ["original"] + [f"#{i}" for i in range(1, count)]
    return plot_image_grid(pictures, out, titles=titles, title=spec_to_string(parsed))


def _resize(pixels: np.ndarray, size: int | None) -> np.ndarray:
    height, width = pixels.shape[:2]
    if size is not None:
        target = (size, size)
    elif max(height, width) > _GRID_MAX_SIDE:
        scale = _GRID_MAX_SIDE / max(height, width)
        target = (max(1, round(width * scale)), max(1, round(height * scale)))
    else:
        return pixels
    if target == (width, height):
        return pixels
    resized = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).resize(
        target, Image.Resampling.BILINEAR
    )
    return np.asarray(resized, dtype=np.uint8).reshape(target[1], target[0], -1)


def _number(value: float) -> str:
    if math.isfinite(value) and value == int(value):
        return str(int(value))
    return repr(value)
