"""Classify photos: the top-K classes with probabilities, and the inference time.

``predict`` is the Python API behind ``imgrec predict``: it returns plain data
(lists and dicts of strings and numbers), one record per image, and never stops
at a bad image: that image's record carries an ``error`` instead.

One path serves a single photo and a folder of thousands: photos are decoded,
oriented and resized by a pool of threads (Pillow releases the GIL while it
works), a few batches ahead of the network, and classified ``batch_size`` at a
time by the model's runtime (``imgrec.deploy.runtime``: ONNX Runtime or Keras).
``predict_many`` also reports the throughput of the whole run.
"""

from __future__ import annotations

import os
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import keras
import numpy as np

from imgrec.core.choices import DEFAULT_MODEL
from imgrec.core.errors import ImgrecError
from imgrec.core.images import image_from_array, load_image, scan_images
from imgrec.datasets.cache import workers as decoding_threads
from imgrec.deploy.export_cache import load_runtime
from imgrec.deploy.runtime import Runtime, as_runtime
from imgrec.models.metadata import ModelInfo
from imgrec.models.outputs import top_classes
from imgrec.models.tta import check_tta, predict_with_tta, resolve_tta

ImageInput = str | os.PathLike | np.ndarray
# Decoded images waiting for the network, per batch: enough to keep it fed.
BATCHES_AHEAD = 2


def expand_inputs(inputs: ImageInput | Iterable[ImageInput]) -> list[ImageInput]:
    """Images in the order given, each folder replaced by the image files inside it."""
    if isinstance(inputs, str | os.PathLike | np.ndarray):
        inputs = [inputs]
    expanded: list[ImageInput] = []
    for item in inputs:
        if not isinstance(item, np.ndarray) and Path(item).is_dir():
            # Names of images that are no file to read (a FIFO...) stay: each gets its error.
            found = scan_images(item)
            expanded.extend(sorted([*found.images, *(path for path, _ in found.rejected)]))
        else:
            expanded.append(item)
    return expanded


def predict(
    images: ImageInput | Iterable[ImageInput],
    model: str | os.PathLike | keras.Model | Runtime = DEFAULT_MODEL,
    *,
    top: int = 5,
    weights: str | os.PathLike | None = None,
    runtime: str = "auto",
    batch_size: int = 1,
    verbose: bool = True,
    tta: str | None = None,
) -> list[dict]:
    """Classify each image and time the network.

    Args:
        images: a path, a folder (every image in it), a uint8 ``H x W x 3`` array,
            or a list of those.
        model: a zoo name, a ``.keras`` file, a model from ``imgrec.load_model``, an
            ``.onnx`` file from ``imgrec export``, or a ``Runtime``.
        top: how many classes to report per image.
        weights: for a zoo name, a weights file to use instead of looking for one.
        runtime: ``"auto"`` (ONNX Runtime when the model can be exported, else
            Keras), ``"onnx"`` or ``"keras"``; see ``imgrec.deploy.export_cache.load_runtime``.
        batch_size: images per forward pass. 1 times each image alone; larger
            batches classify folders faster.
        verbose: show a progress bar on stderr when the run takes more than a
            second, and say when the model is exported for ONNX Runtime.
        tta: test-time augmentation (``imgrec.models.tta``): ``"none"``, ``"flip"``
            (the mean of the probabilities of the image and its mirror) or
            ``"flip,shift"`` (airbench's six views); ``None``: the one the model
            recorded (``ModelInfo.tta``), else none. It runs on whichever runtime
            runs the model. A class activation map (``imgrec explain``) is always of
            the image itself.

    Returns:
        One dict per image: ``image`` (its path, or ``array[i]``), ``model``,
        ``weights`` (where the weights came from), ``runtime``, ``tta`` (the
        test-time augmentation used), ``top`` (a list of ``{"rank", "class",
        "index", "probability"}``), ``time_ms`` and ``fps`` of the network's forward
        passes (all the views of an image; for a batch: its time shared by its
        images); or ``image`` and ``error`` when the image could not be read.

    Raises:
        ModelError, WeightsError: the model cannot be had; nothing is classified.
        SpecError: an unknown ``tta``.
    """
    return predict_many(
        images,
        model,
        top=top,
        weights=weights,
        runtime=runtime,
        batch_size=batch_size,
        verbose=verbose,
        tta=tta,
    )["results"]


def predict_many(
    images: ImageInput | Iterable[ImageInput],
    model: str | os.PathLike | keras.Model | Runtime = DEFAULT_MODEL,
    *,
    top: int = 5,
    weights: str | os.PathLike | None = None,
    runtime: str = "auto",
    batch_size: int = 1,
    threads: int | None = None,
    verbose: bool = True,
    tta: str | None = None,
) -> dict[str, Any]:
    """``predict``, with the throughput of the whole run.

    Args:
        images, model, top, weights, runtime, batch_size, verbose, tta: as for ``predict``.
        threads: decoding threads (default: one per core, at most 16).

    Returns:
        ``results`` (what ``predict`` returns), ``runtime``, ``tta``, ``batch_size``,
        ``threads``, ``images``, ``classified``, ``seconds`` (from the first decode
        to the last answer, the model's loading excluded) and ``images_per_second``
        (classified images per second).

    Raises:
        ValueError: ``top``, ``batch_size`` or ``threads`` below 1.
        ModelError, WeightsError: the model cannot be had; nothing is classified.
        SpecError: an unknown ``tta``.
    """
    if tta is not None:
        check_tta(tta)  # before the model is loaded
    threads = decoding_threads() if threads is None else threads
    for name, value in (("top", top), ("batch_size", batch_size), ("threads", threads)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    engine = load_runtime(model, runtime, weights=weights, verbose=verbose)
    engine.warm_up()
    tta = resolve_tta(tta, engine.info.tta)
    items = expand_inputs(images)
    labels = [
        f"array[{i}]" if isinstance(item, np.ndarray) else str(item) for i, item in enumerate(items)
    ]
    read = _reader(engine)
    results: list[dict] = [{} for _ in items]
    batch: list[tuple[int, np.ndarray]] = []

    def classify_batch() -> None:
        pixels = engine.info.preprocessing.normalize(np.stack([image for _, image in batch]))
        for (index, _), record in zip(batch, _classify(engine, pixels, top, tta), strict=True):
            results[index] = {"image": labels[index], **record}
        batch.clear()

    from tqdm import tqdm

    start = time.perf_counter()
    with tqdm(total=len(items), unit="img", file=sys.stderr, disable=not verbose, delay=1.0) as bar:
        decoded = _in_order(list(zip(items, labels, strict=True)), read, threads, batch_size)
        for index, image in enumerate(decoded):
            if isinstance(image, str):
                results[index] = {"image": labels[index], "error": image}
            else:
                batch.append((index, image))
                if len(batch) == batch_size:
                    classify_batch()
            bar.update()
        if batch:
            classify_batch()
    seconds = time.perf_counter() - start
    classified = sum("error" not in r for r in results)
    return {
        "results": results,
        "runtime": engine.name,
        "tta": tta,
        "batch_size": batch_size,
        "threads": threads,
        "images": len(items),
        "classified": classified,
        "seconds": seconds,
        "images_per_second": classified / seconds if seconds > 0 else 0.0,
    }


def classify(model: keras.Model | Runtime, info: ModelInfo, image: np.ndarray, top: int) -> dict:
    """The top classes of one decoded uint8 image, and the forward pass's time.

    Args:
        model: a model from ``imgrec.load_model`` (run by Keras) or a ``Runtime``.
        info: the model's ``ModelInfo``.
        image: uint8 ``H x W x C`` at any size; ``info.preprocessing`` resizes it.
        top: how many classes to report.
    """
    (record,) = _classify(as_runtime(model), info.preprocessing([image]), top)
    return record


def _classify(engine: Runtime, batch: np.ndarray, top: int, tta: str = "none") -> list[dict]:
    """Records for a preprocessed batch; each image's time is its share of the batch's
    (all its views, with test-time augmentation)."""
    start = time.perf_counter()
    probabilities = predict_with_tta(engine.predict, batch, tta)
    seconds = (time.perf_counter() - start) / len(batch)
    info = engine.info
    return [
        {
            "model": info.name,
            "weights": info.weights,
            "runtime": engine.name,
            "tta": tta,
            "top": top_classes(row, info.class_names, top),
            "time_ms": seconds * 1000,
            "fps": 1 / seconds,
        }
        for row in probabilities
    ]


def _reader(engine: Runtime) -> Callable[[tuple[ImageInput, str]], np.ndarray]:
    """Decode one input as the model wants it (grey or RGB), resized and cropped."""
    mode = "L" if engine.input_shape[-1] == 1 else "RGB"
    resize = engine.info.preprocessing.resize_and_crop

    def read(item: tuple[ImageInput, str]) -> np.ndarray:
        source, label = item
        if isinstance(source, np.ndarray):
            return resize(image_from_array(source, mode=mode, name=label))
        # load_image opens only regular files, non-blocking: a FIFO never hangs a worker.
        return resize(load_image(source, mode=mode))

    return read


def _in_order(
    items: list[tuple[ImageInput, str]],
    read: Callable[[tuple[ImageInput, str]], np.ndarray],
    threads: int,
    batch_size: int,
) -> Iterator[np.ndarray | str]:
    """Each item read by a pool of threads, yielded in order: the image, or why not.

    Only a few batches are decoded ahead, so a folder of any size takes little memory.
    """

    def attempt(item: tuple[ImageInput, str]) -> np.ndarray | str:
        try:
            return read(item)
        except ImgrecError as err:
            return str(err)

    ahead = max(BATCHES_AHEAD * batch_size, 2 * threads)
    queue = iter(items)
    with ThreadPoolExecutor(threads, thread_name_prefix="imgrec-predict") as pool:
        pending: deque[Future] = deque()
        try:
            for item in queue:
                pending.append(pool.submit(attempt, item))
                if len(pending) >= ahead:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
