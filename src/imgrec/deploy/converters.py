"""The export formats, one table: how each is written, and how each is run to be checked.

``FORMATS`` maps a format name (``imgrec.core.choices.EXPORT_FORMATS``) to an
``ExportFormat``: the file suffix it takes (``None``: a folder), whether it can be
quantized, the converter that writes it from a Keras model, and the runtime that
loads it again for the checks of ``imgrec.deploy.exporter.export``.

The forward pass is exported in inference mode (``model(x, training=False)``), so
random augmentation layers are the identity and dropout is off. Keras's own
``model.export`` calls the model without ``training`` and so keeps the random
augmentation layers in training mode: the ONNX file it writes for a model that
augments holds random operations that ONNX Runtime cannot run, and its SavedModel
gives different answers on every call.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from imgrec.core.choices import EXPORT_FORMATS
from imgrec.core.errors import ModelError
from imgrec.core.quiet import native_stderr_quiet
from imgrec.deploy.runtime import OnnxRuntime, Runtime
from imgrec.models.metadata import ModelInfo, class_probabilities

ONNX_OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "output"

# A converter: (model, path to write, quantize, int8 calibration images or None).
Converter = Callable[[keras.Model, Path, "str | None", "np.ndarray | None"], None]


@dataclass(frozen=True)
class ExportFormat:
    """One export format.

    Attributes:
        name: ``"onnx"``, ``"tflite"`` or ``"savedmodel"``.
        suffix: the suffix its file must have, or ``None`` for a folder.
        quantizable: whether ``fp16`` and ``int8`` apply.
        convert: writes the format from a Keras model (``Converter``).
        runner: loads a written file as a ``Runtime``, given the model's ``ModelInfo``.
    """

    name: str
    suffix: str | None
    quantizable: bool
    convert: Converter
    runner: Callable[[Path, ModelInfo], Runtime]


def converting(name: str, format: str, convert: Callable[[], Any]) -> Any:
    """Run a converter step; its failures (of many types) become a ModelError naming ``name``."""
    try:
        return convert()
    except Exception as err:  # converters raise anything from ValueError to ConverterError
        raise ModelError(
            f"{name}: cannot convert to {format} ({type(err).__name__}: {err})"
        ) from err


def _serving_function(model: keras.Model):
    """The inference-mode forward pass as a ``tf.function``, and its input signature."""
    import tensorflow as tf

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name=INPUT_NAME)

    # Nothing to convert (no Python control flow), and AutoGraph warns about closures.
    @tf.function(input_signature=[spec], autograph=False)
    def serve(x):
        return {OUTPUT_NAME: model(x, training=False)}

    return serve, spec


def _write_saved_model(model: keras.Model, path: Path) -> None:
    serve, spec = _serving_function(model)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve, input_signature=[spec])
    archive.write_out(str(path), verbose=False)


def _to_savedmodel(model: keras.Model, path: Path, quantize: None, calibration: None) -> None:
    _write_saved_model(model, path)


def _to_onnx(
    model: keras.Model, path: Path, quantize: str | None, calibration: np.ndarray | None
) -> None:
    import onnx
    import tf2onnx

    serve, spec = _serving_function(model)
    proto, _ = tf2onnx.convert.from_function(serve, input_signature=[spec], opset=ONNX_OPSET)
    if quantize == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        # Inputs and outputs stay float32: callers feed the same batches as before.
        proto = convert_float_to_float16(proto, keep_io_types=True)
    if quantize != "int8":
        onnx.save(proto, str(path))
        return
    from onnxruntime.quantization import QuantFormat, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as folder:
        float_file, prepared = Path(folder) / "float.onnx", Path(folder) / "prepared.onnx"
        onnx.save(proto, str(float_file))
        # Folds constants and fuses batch norms first, as ONNX Runtime advises; the
        # symbolic shape pass needs sympy and adds nothing for fixed image sizes.
        quant_pre_process(str(float_file), str(prepared), skip_symbolic_shape=True)
        quantize_static(
            str(prepared),
            str(path),
            _CalibrationReader(calibration),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
        )


def _to_tflite(
    model: keras.Model, path: Path, quantize: str | None, calibration: np.ndarray | None
) -> None:
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as folder:
        saved = Path(folder) / "saved_model"
        _write_saved_model(model, saved)
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
        if quantize is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "fp16":
            converter.target_spec.supported_types = [tf.float16]
        if quantize == "int8":
            # Integer kernels where TFLite has them; input and output stay float32.
            converter.representative_dataset = lambda: ([image[None]] for image in calibration)
        path.write_bytes(converter.convert())


class _CalibrationReader:
    """Feeds calibration images to ONNX Runtime's quantizer, one at a time."""

    def __init__(self, images: np.ndarray) -> None:
        self._images = iter(images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._images, None)
        return None if image is None else {INPUT_NAME: image[None]}


# --- Running the exports beside Keras ----------------------------------------------------


class _TFLiteRuntime(Runtime):
    """A ``.tflite`` file run by TensorFlow's TFLite interpreter."""

    name = "tflite"

    def __init__(self, path: Path, info: ModelInfo) -> None:
        import tensorflow as tf

        with warnings.catch_warnings(), native_stderr_quiet():
            # tf.lite.Interpreter warns that LiteRT (ai-edge-litert) replaces it; it
            # still runs every file, and LiteRT is not a dependency of imgrec. Allocating
            # applies the XNNPACK delegate, which TFLite announces on stderr.
            warnings.simplefilter("ignore", UserWarning)
            interpreter = tf.lite.Interpreter(model_path=str(path))
            interpreter.allocate_tensors()
            self._run = interpreter.get_signature_runner("serving_default")
        super().__init__(info, interpreter.get_input_details()[0]["shape_signature"][1:])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return class_probabilities(self._run(**{INPUT_NAME: batch})[OUTPUT_NAME])


class _SavedModelRuntime(Runtime):
    """A SavedModel folder run by TensorFlow, through its serving signature."""

    name = "savedmodel"

    def __init__(self, path: Path, info: ModelInfo) -> None:
        import tensorflow as tf

        self._loaded = tf.saved_model.load(str(path))  # keeps the variables alive
        self._serve = self._loaded.signatures["serving_default"]
        _, inputs = self._serve.structured_input_signature
        super().__init__(info, inputs[INPUT_NAME].shape[1:])

    def predict(self, batch: np.ndarray) -> np.ndarray:
        return class_probabilities(self._serve(**{INPUT_NAME: batch})[OUTPUT_NAME].numpy())


FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat("onnx", ".onnx", True, _to_onnx, OnnxRuntime),
        ExportFormat("tflite", ".tflite", True, _to_tflite, _TFLiteRuntime),
        ExportFormat("savedmodel", None, False, _to_savedmodel, _SavedModelRuntime),
    )
}
assert tuple(FORMATS) == EXPORT_FORMATS, "the format table and the CLI's choices must agree"
