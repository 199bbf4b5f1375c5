"""Run a model's forward pass on the fastest runtime at hand: ONNX Runtime or Keras.

A ``Runtime`` is what prediction and evaluation call: it knows the model's
``ModelInfo`` and input shape, and turns a preprocessed float32 batch into class
probabilities. Two implementations:

- ``KerasRuntime``: the Keras model itself (``predict_on_batch``, inference mode).
- ``OnnxRuntime``: an ONNX export of the model, run by ONNX Runtime, which on a CPU
  is faster than Keras (``bench/runtime_speed.py`` measures by how much).

``imgrec.deploy.export_cache.load_runtime`` picks one and keeps the ONNX exports.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from pathlib import Path

import keras
import numpy as np

from imgrec.core.errors import ModelError
from imgrec.deploy.onnx_session import open_session
from imgrec.deploy.sidecar import file_digest, read_sidecar
from imgrec.models.metadata import ModelInfo, class_probabilities, model_info
from imgrec.models.tta import check_tta, predict_with_tta

ModelSource = str | os.PathLike | keras.Model


class Runtime(ABC):
    """A model's forward pass, from a preprocessed batch to class probabilities.

    Attributes:
        name: what runs the forward pass: ``"keras"`` or ``"onnx"`` (and, for the
            checks of ``imgrec.deploy.exporter``, ``"tflite"`` or ``"savedmodel"``).
        info: the model's ``ModelInfo``: class names, preprocessing, origin.
        input_shape: ``(height, width, channels)`` of one input image.
    """

    name: str

    def __init__(self, info: ModelInfo, input_shape: tuple[int, int, int]) -> None:
        self.info = info
        self.input_shape = tuple(int(d) for d in input_shape)

    @abstractmethod
    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Class probabilities of a batch.

        Args:
            batch: float32 ``N x H x W x C``, already preprocessed
                (``info.preprocessing``), at ``input_shape``.

        Returns:
            float32 ``N x classes``, one column per class name (a single sigmoid
            unit gives two columns).
        """

    def warm_up(self) -> None:
        """Run one forward pass on a blank image, so that later ones run at full speed.

        The first call compiles (Keras) or allocates (ONNX Runtime); timing it would
        overstate the steady cost, which is what imgrec reports.
        """
        self.predict(np.zeros((1, *self.input_shape), np.float32))


class KerasRuntime(Runtime):
    """The Keras model itself, always in inference mode (augmentation and dropout off).

    Args:
        model: a model that carries a ``ModelInfo`` (``imgrec.load_model`` gives one).
    """

    name = "keras"

    def __init__(self, model: keras.Model) -> None:
        super().__init__(model_info(model), model.input_shape[1:])
        self.model = model

    def predict(self, batch: np.ndarray) -> np.ndarray:
        # predict_on_batch runs Keras's compiled predict function with training=False.
        return class_probabilities(np.asarray(self.model.predict_on_batch(batch)))


class OnnxRuntime(Runtime):
    """An ONNX file run by ONNX Runtime.

    Args:
        path: the ``.onnx`` file; its input is ``N x H x W x C`` float32, its one
            output the model's output (as ``imgrec export`` writes them).
        info: the model's ``ModelInfo`` (from the file's sidecar).

    Raises:
        ModelError: ONNX Runtime cannot load the file.
    """

    name = "onnx"

    def __init__(self, path: str | os.PathLike, info: ModelInfo) -> None:
        self.session = open_session(path)
        (model_input,) = self.session.get_inputs()
        self._input = model_input.name
        self._outputs = [self.session.get_outputs()[0].name]
        super().__init__(info, model_input.shape[1:])
        self.path = Path(path)

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return class_probabilities(self.session.run(self._outputs, {self._input: batch})[0])


def as_runtime(model: keras.Model | Runtime) -> Runtime:
    """``model`` itself if it is a ``Runtime``, else a ``KerasRuntime`` around it."""
    return model if isinstance(model, Runtime) else KerasRuntime(model)


def predict_probabilities(
    model: keras.Model | Runtime, images: np.ndarray, batch_size: int, *, tta: str = "none"
) -> np.ndarray:
    """Class probabilities, N x classes; a single sigmoid unit becomes two columns.

    Args:
        model: a model from ``imgrec.load_model`` (run by Keras) or a ``Runtime``.
        images: uint8 ``N x H x W x C`` at the model's input size.
        batch_size: images per forward pass.
        tta: test-time augmentation (``imgrec.models.tta``): ``"none"``, ``"flip"`` or
            ``"flip,shift"``; each view of a batch is one more forward pass.

    Raises:
        SpecError: an unknown ``tta``.
    """
    check_tta(tta)
    network = as_runtime(model)
    normalize = network.info.preprocessing.normalize

    def forward(batch: np.ndarray) -> np.ndarray:
        return network.predict(normalize(batch))

    outputs = [
        predict_with_tta(forward, np.asarray(images[start : start + batch_size]), tta)
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(outputs)


def open_onnx(path: str | os.PathLike) -> OnnxRuntime:
    """An ``.onnx`` file that ``imgrec export`` wrote, with the ``ModelInfo`` of its sidecar.

    Raises:
        ModelError: the sidecar is missing or damaged, or it describes another file
            (the ``.onnx`` file changed after it was exported).
    """

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: no such ONNX file")
    sidecar = read_sidecar(path)
    if sidecar.get("sha256") != file_digest(path):
        raise ModelError(
            f"{path}: the file changed after it was exported (its digest is not the one "
            "its sidecar recorded); export the model again"
        )
    return OnnxRuntime(path, ModelInfo.from_config(sidecar["model"]))
