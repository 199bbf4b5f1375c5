"""What one batch worker holds: a model's forward pass, loaded once, and imgrec's safe loader.

``imgrec predict --engine ray`` (``imgrec.prediction.ray_batch``) runs a pool of
:class:`BatchClassifier` objects, one per worker process, through Ray Data. Each
takes a batch of image paths or URIs and returns their rows of the results table
(``imgrec.core.tables``): the images are read and decoded by ``load_image`` (its
format allow-list and pixel cap hold: Ray's own image decoder is never used), and an
image that cannot be read or decoded becomes a row with its error, never a failed
batch.

Nothing here imports Ray, Keras or TensorFlow: a worker that runs an ONNX model
(the default) starts in about a second, and the class can be used and tested
without Ray. The model travels to the workers as :class:`WorkerModel`: the ONNX
file's bytes (no shared disk needed on a cluster) with the model's class names and
preprocessing; only a model that runs on Keras is loaded by each worker itself.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from imgrec.core.errors import ImageError, ImgrecError
from imgrec.core.images import load_image
from imgrec.core.tables import arrow_schema, result_row
from imgrec.deploy.onnx_session import open_session
from imgrec.models.outputs import class_probabilities, top_classes
from imgrec.models.preprocessing import Preprocessing
from imgrec.models.tta import check_tta, predict_with_tta

# The largest remote object (s3://, gs://, ...) a worker reads into memory: far above any
# photo within the pixel cap, far below what would hurt a worker.
MAX_REMOTE_BYTES = 256 * 1024 * 1024
# Threads per worker that read and decode the images of a batch (Pillow and remote reads
# release the GIL), so that a worker's core is not idle while it waits on storage.
DECODING_THREADS = 2


@dataclass(frozen=True)
class WorkerModel:
    """A model as it travels to the workers.

    Attributes:
        name: the model's name for people.
        weights: where its weights came from (for people).
        class_names: one name per class.
        preprocessing: how to turn a photo into its input.
        mode: ``"RGB"`` or ``"L"`` (a grey model).
        onnx: the ONNX file's content, for ONNX Runtime; ``None`` to run Keras.
        keras_source: for Keras: a zoo name, a ``.keras`` file the workers can read,
            or a ``keras.Model`` (pickled to them).
        weights_file: for Keras and a zoo name, a weights file the workers can read.
        tta: the test-time augmentation the workers average (``imgrec.models.tta``).
    """

    name: str
    weights: str
    class_names: tuple[str, ...]
    preprocessing: Preprocessing
    mode: str
    onnx: bytes | None = None
    keras_source: Any = None
    weights_file: str | None = None
    tta: str = "none"

    @property
    def runtime(self) -> str:
        """``"onnx"`` or ``"keras"``: what runs the forward pass in the workers."""
        return "keras" if self.onnx is None else "onnx"


def worker_model(
    engine: Any,
    model: Any = None,
    weights: str | os.PathLike | None = None,
    *,
    tta: str = "none",
) -> WorkerModel:
    """The :class:`WorkerModel` of a runtime the driver loaded.

    Args:
        engine: an ``imgrec.deploy.runtime.Runtime`` (from ``load_runtime``).
        model: what ``engine`` was loaded from; for a Keras runtime, a zoo name or a
            ``.keras`` path that the workers load themselves (else the Keras model is
            pickled to them).
        weights: the weights file given with a zoo name.
        tta: the test-time augmentation to run (resolved: ``"none"``, ``"flip"``...).
    """
    from imgrec.deploy.runtime import OnnxRuntime  # the driver has Keras already

    info = engine.info
    common = {
        "name": info.name,
        "weights": info.weights,
        "class_names": tuple(info.class_names),
        "preprocessing": info.preprocessing,
        "mode": "L" if engine.input_shape[-1] == 1 else "RGB",
        "tta": check_tta(tta),
    }
    if isinstance(engine, OnnxRuntime):
        return WorkerModel(**common, onnx=engine.path.read_bytes())
    source = model if isinstance(model, str | os.PathLike) else engine.model
    return WorkerModel(
        **common,
        keras_source=os.fspath(source) if isinstance(source, os.PathLike) else source,
        weights_file=None if weights is None else os.fspath(weights),
    )


class BatchClassifier:
    """Classifies batches of images; holds the model, loaded once.

    Args:
        model: the model (:func:`worker_model`), or a one-item list holding a Ray
            object reference to it (``[ray.put(model)]``): Ray would put a large
            constructor argument (the ONNX bytes) in its object store itself, and
            warn that a restarted worker may not find it; a reference the driver
            holds lasts the whole job.
        top: classes per row.
        threads: threads for the forward pass (a worker's share of the cores).
    """

    def __init__(self, model: WorkerModel | list, *, top: int, threads: int = 1) -> None:
        if isinstance(model, list):
            import ray  # only a worker that Ray started gets a reference

            (model,) = ray.get(model)
        self.model: WorkerModel = model
        self.top = top
        self.schema = arrow_schema(top)
        if model.onnx is not None:
            session = open_session(model.onnx, threads=threads, name=f"{model.name} (ONNX)")
            inputs = session.get_inputs()[0].name
            outputs = [session.get_outputs()[0].name]
            self._forward = lambda x: class_probabilities(session.run(outputs, {inputs: x})[0])
        else:
            from imgrec.deploy.export_cache import load_runtime

            runtime = load_runtime(
                model.keras_source, "keras", weights=model.weights_file, verbose=False
            )
            self._forward = runtime.predict
        self._pool = ThreadPoolExecutor(DECODING_THREADS, thread_name_prefix="imgrec-decode")

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        """The rows of a batch, as a ``pyarrow.Table``.

        Args:
            batch: ``image``: the names the rows carry; ``path`` (optional): where
                each is read, a local path or a URI (default: ``image``).
        """
        import pyarrow

        images = [str(image) for image in batch["image"]]
        paths = [str(path) for path in batch["path"]] if "path" in batch else images
        pixels = list(self._pool.map(self._read, paths, images))
        good = [i for i, p in enumerate(pixels) if not isinstance(p, str)]
        records: list[dict] = [
            {"image": image, "error": p} for image, p in zip(images, pixels, strict=True)
        ]
        if good:
            start = time.perf_counter()
            x = self.model.preprocessing.normalize(np.stack([pixels[i] for i in good]))
            probabilities = predict_with_tta(self._forward, x, self.model.tta)
            time_ms = (time.perf_counter() - start) * 1000 / len(good)
            for i, row in zip(good, probabilities, strict=True):
                ranked = top_classes(row, self.model.class_names, self.top)
                records[i] = {"image": images[i], "top": ranked, "time_ms": time_ms}
        rows = [result_row(record, self.top) for record in records]
        return pyarrow.Table.from_pylist(rows, schema=self.schema)

    def _read(self, path: str, image: str) -> np.ndarray | str:
        """One image at the model's input size, or why it could not be read (named
        ``image`` in messages)."""
        try:
            source: str | bytes = path
            if "://" in path and not path.startswith("file://"):
                source = read_remote(path)
            elif path.startswith("file://"):
                source = path.removeprefix("file://")
            decoded = load_image(source, mode=self.model.mode, name=image)
            return self.model.preprocessing.resize_and_crop(decoded)
        except ImgrecError as err:
            return str(err)
        except Exception as err:  # a decoder's bug must cost one row, never the job
            return f"{image}: cannot be read ({type(err).__name__}: {err})"


def read_remote(uri: str, *, max_bytes: int = MAX_REMOTE_BYTES) -> bytes:
    """The content of an object that pyarrow's file systems reach (``s3://``, ``gs://``, ...).

    Raises:
        ImageError: it cannot be reached, is not a file, or holds over ``max_bytes``.
    """
    import pyarrow.fs

    try:
        fs, path = pyarrow.fs.FileSystem.from_uri(uri)
        info = fs.get_file_info(path)
        if info.type != pyarrow.fs.FileType.File:
            raise ImageError(f"{uri}: no such file")
        if info.size is not None and info.size > max_bytes:
            raise ImageError(f"{uri}: {info.size} bytes; images over {max_bytes} are refused")
        with fs.open_input_stream(path) as f:
            data = f.read(max_bytes + 1)
    except (OSError, ValueError) as err:  # pyarrow's errors derive from these
        raise ImageError(f"{uri}: cannot read it ({err})") from err
    if len(data) > max_bytes:
        raise ImageError(f"{uri}: over {max_bytes} bytes; larger images are refused")
    return data
