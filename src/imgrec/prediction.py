"""Classify photos: the top-K classes with probabilities, and the inference time.

``predict`` is the Python API behind ``imgrec predict``: it returns plain data
(lists and dicts of strings and numbers), one record per image, and never stops
at a bad image: that image's record carries an ``error`` instead.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable
from pathlib import Path

import keras
import numpy as np

from imgrec.errors import ImgrecError
from imgrec.images import find_images, image_from_array, load_image
from imgrec.models.loading import load_model
from imgrec.models.metadata import ModelInfo, model_info
from imgrec.models.zoo import DEFAULT_MODEL

ImageInput = str | os.PathLike | np.ndarray


def expand_inputs(inputs: ImageInput | Iterable[ImageInput]) -> list[ImageInput]:
    """Images in the order given, each folder replaced by the image files inside it."""
    if isinstance(inputs, str | os.PathLike | np.ndarray):
        inputs = [inputs]
    expanded: list[ImageInput] = []
    for item in inputs:
        if not isinstance(item, np.ndarray) and Path(item).is_dir():
            expanded.extend(find_images(item))
        else:
            expanded.append(item)
    return expanded


def predict(
    images: ImageInput | Iterable[ImageInput],
    model: str | os.PathLike | keras.Model = DEFAULT_MODEL,
    *,
    top: int = 5,
    weights: str | os.PathLike | None = None,
) -> list[dict]:
    """Classify each image and time the network.

    Args:
        images: a path, a folder (every image in it), a uint8 ``H x W x 3`` array,
            or a list of those.
        model: a zoo name, a ``.keras`` file, or a model from ``imgrec.load_model``.
        top: how many classes to report per image.
        weights: for a zoo name, a weights file to use instead of looking for one.

    Returns:
        One dict per image: ``image`` (its path, or ``array[i]``), ``model``,
        ``weights`` (where the weights came from), ``top``
        (a list of ``{"rank", "class", "index", "probability"}``), ``time_ms`` and
        ``fps`` of the network's forward pass; or ``image`` and ``error`` when the
        image could not be read.

    Raises:
        ModelError, WeightsError: the model cannot be had; nothing is classified.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    if not isinstance(model, keras.Model):
        model = load_model(model, weights=weights)
    info = model_info(model)
    _warm_up(model, info)
    mode = "L" if model.input_shape[-1] == 1 else "RGB"
    results = []
    for index, item in enumerate(expand_inputs(images)):
        label = f"array[{index}]" if isinstance(item, np.ndarray) else str(item)
        try:
            if isinstance(item, np.ndarray):
                image = image_from_array(item, mode=mode, name=label)
            else:
                image = load_image(item, mode=mode)
            results.append(classify(model, info, image, top) | {"image": label})
        except ImgrecError as err:
            results.append({"image": label, "error": str(err)})
    return results


def classify(model: keras.Model, info: ModelInfo, image: np.ndarray, top: int) -> dict:
    """The top classes of one decoded uint8 image, and the forward pass's time."""
    batch = info.preprocessing([image])
    start = time.perf_counter()
    output = np.asarray(model.predict_on_batch(batch))[0]
    seconds = time.perf_counter() - start
    probabilities = _probabilities(output)
    order = np.argsort(probabilities)[::-1][:top]
    return {
        "model": info.name,
        "weights": info.weights,
        "top": [
            {
                "rank": rank,
                "class": info.class_names[i],
                "index": int(i),
                "probability": float(probabilities[i]),
            }
            for rank, i in enumerate(order, start=1)
        ],
        "time_ms": seconds * 1000,
        "fps": 1 / seconds,
    }


def _probabilities(output: np.ndarray) -> np.ndarray:
    # A single sigmoid unit (a two-class network) gives P(second class).
    if output.shape[-1] == 1:
        return np.array([1 - output[0], output[0]])
    return output


def _warm_up(model: keras.Model, info: ModelInfo) -> None:
    # The first call compiles the forward pass (about a second); timing it would
    # overstate the steady cost, which is what the reported time is for.
    height, width = info.preprocessing.size
    channels = model.input_shape[-1]
    model.predict_on_batch(np.zeros((1, height, width, channels), np.float32))
