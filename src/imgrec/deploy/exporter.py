"""Export a model for deployment, as ONNX, TFLite or a TensorFlow SavedModel, checked.

``export`` converts any model imgrec builds, loads or trains (zoo networks, the seed
networks, transfer models with their nested backbone) and then runs the exported
model beside the Keras model before it keeps the file:

- on sample inputs (scikit-image's photos and a few random images, at two batch
  sizes), the largest difference in class probabilities; an unquantized export that
  differs by more than ``FP32_TOLERANCE`` is refused and nothing is written;
- with a validation data set, the accuracy of both, so that what quantization
  (``fp16``, ``int8``) costs is a measured number.

The forward pass is exported in inference mode (``model(x, training=False)``), so
random augmentation layers are the identity and dropout is off. Keras's own
``model.export`` calls the model without ``training`` and so keeps the random
augmentation layers in training mode: the ONNX file it writes for a model that
augments holds random operations that ONNX Runtime cannot run, and its SavedModel
gives different answers on every call.

The exported model takes what the Keras model takes: a float32 ``N x H x W x C``
batch (channels last) that the model's preprocessing produced. That recipe, the
class names and the input and output layout go into a JSON sidecar beside the
export (``model.onnx`` -> ``model.onnx.json``), so that a consumer needs nothing
else; ``imgrec predict --model model.onnx`` is such a consumer.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np

from imgrec.core.choices import EXPORT_FORMATS, QUANTIZATIONS
from imgrec.core.errors import ImgrecError, ModelError
from imgrec.core.images import load_image
from imgrec.core.metrics import classification_metrics
from imgrec.core.samples import SAMPLES, sample_path
from imgrec.core.storage import atomic_path, write_bytes_atomic
from imgrec.datasets import Dataset, evaluation_split
from imgrec.deploy.runtime import KerasRuntime, OnnxRuntime, Runtime, predict_probabilities
from imgrec.deploy.sidecar import (
    SIDECAR_FORMAT,
    exporter_versions,
    file_digest,
    sidecar_path,
    weights_digest,
)
from imgrec.models.loading import load_model
from imgrec.models.metadata import ModelInfo, class_probabilities, model_info
from imgrec.models.preprocessing import Preprocessing
from imgrec.training.held_out import load_held_out

FORMATS = EXPORT_FORMATS
ONNX_OPSET = 17
SUFFIXES = {"onnx": ".onnx", "tflite": ".tflite"}
FP32_TOLERANCE = 1e-4
INPUT_NAME = "input"
OUTPUT_NAME = "output"
# int8 calibration: enough images to see each activation's range, few enough to be quick.
CALIBRATION_IMAGES = 200
# Images per forward pass when the accuracy before and after the export is measured.
ACCURACY_BATCH = 256
CROPS_PER_SAMPLE = 8
RANDOM_CHECK_IMAGES = 4


def export(
    model: str | os.PathLike | keras.Model,
    out: str | os.PathLike,
    *,
    format: str = "onnx",
    quantize: str | None = None,
    val: str | os.PathLike | Dataset | None = None,
    weights: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Export ``model`` to ``out``, check it against Keras, and write its sidecar.

    Args:
        model: a zoo name, a ``.keras`` file, or a model from ``imgrec.load_model``.
        out: the file to write (``.onnx``, ``.tflite``), or for ``savedmodel`` the
            folder (an existing SavedModel folder there is replaced). The sidecar
            goes beside it: ``out`` plus ``.json``.
        format: ``"onnx"``, ``"tflite"`` or ``"savedmodel"``.
        quantize: ``None`` (float32), ``"fp16"`` (weights in half precision) or
            ``"int8"`` (weights and activations in 8 bits, calibrated on
            ``val``'s training images, else on crops of the sample photos);
            ONNX and TFLite only.
        val: a data set (name, path or loaded) with the model's classes: both
            models' accuracy on its test split (else its validation split) is
            measured and reported.
        weights: for a zoo name, a weights file to use instead of looking for one.

    Returns:
        ``format``, ``quantize``, ``path``, ``sidecar``, ``bytes``, ``seconds`` (the
        conversion and the checks), ``check`` (``inputs``: what was compared,
        ``images``, ``max_abs_diff`` of the probabilities, ``top1_agreement``,
        ``tolerance``: the bound enforced, or None for a quantized export),
        ``accuracy`` (``dataset``, ``split``, ``images``, ``keras``, ``exported``,
        ``change``; None without ``val``) and ``calibration`` (int8: what was used).

    Raises:
        ImgrecError: an unknown format or quantization, or one that does not go with
            the format; an ``out`` of the wrong kind.
        ModelError: the model cannot be had, cannot be converted, or its float32
            export disagrees with Keras beyond ``FP32_TOLERANCE`` (nothing is written).
        DatasetError: ``val`` cannot be read, or its classes are not the model's.
    """
    out = _check_options(Path(out), format, quantize)
    from_file = isinstance(model, str | os.PathLike) and str(model).endswith(".keras")
    source_file = Path(model) if from_file else None
    keras_model = model if isinstance(model, keras.Model) else load_model(model, weights=weights)
    if keras.backend.backend() != "tensorflow":
        raise ModelError(
            f"exporting needs Keras's TensorFlow backend; this one is {keras.backend.backend()}"
        )
    reference = KerasRuntime(keras_model)
    dataset = _load_val(val, reference) if val is not None else None
    calibration, calibration_note = (
        _calibration_images(reference, dataset) if quantize == "int8" else (None, None)
    )
    start = time.perf_counter()
    with _staging(out, format) as staged:
        _CONVERTERS[format](keras_model, staged, quantize, calibration)
        # A file its runtime cannot load or run (an operation it lacks) is a failed
        # conversion too.
        exported = _converting(
            keras_model, format, lambda: _RUNNERS[format](staged, reference.info)
        )
        check = _converting(keras_model, format, lambda: compare_on_samples(reference, exported))
        if quantize is None and check["max_abs_diff"] > FP32_TOLERANCE:
            raise ModelError(
                f"{reference.info.name}: the {format} export differs from Keras by "
                f"{check['max_abs_diff']:.2g} in probability on {check['inputs']} (more "
                f"than {FP32_TOLERANCE:g}); nothing was written"
            )
        accuracy = _accuracy_change(reference, exported, dataset) if dataset else None
        digest = file_digest(staged) if staged.is_file() else None
    seconds = time.perf_counter() - start
    check["tolerance"] = FP32_TOLERANCE if quantize is None else None
    sidecar = {
        "imgrec_export": SIDECAR_FORMAT,
        "format": format,
        "quantize": quantize,
        "file": out.name,
        "sha256": digest,
        "model": reference.info.to_config(),
        "input": _input_description(reference),
        "output": _output_description(keras_model, reference.info),
        "source": {
            "name": reference.info.name,
            "file": str(source_file.resolve()) if source_file else None,
            "file_sha256": file_digest(source_file) if source_file else None,
            "weights_sha256": weights_digest(keras_model),
        },
        "exporter": {**exporter_versions(), "onnx_opset": ONNX_OPSET},
        "check": check,
        "accuracy": accuracy,
        "calibration": calibration_note,
    }
    write_bytes_atomic(sidecar_path(out), json.dumps(sidecar, indent=1).encode())
    return {
        "format": format,
        "quantize": quantize,
        "path": str(out),
        "sidecar": str(sidecar_path(out)),
        "bytes": _size(out),
        "seconds": seconds,
        "check": check,
        "accuracy": accuracy,
        "calibration": calibration_note,
    }


def compare_on_samples(reference: Runtime, exported: Runtime) -> dict[str, Any]:
    """Both models on the sample photos and a few random images: how far apart they are.

    The exported model sees the first image alone and the rest as one batch, so
    that an export that only works at one batch size shows up here.

    Returns:
        ``inputs`` (what was compared, for people), ``images``, ``max_abs_diff`` (the
        largest difference in any class probability, on every input) and
        ``top1_agreement`` (on the photos: a random image has no right answer).
    """
    batch, description = sample_inputs(reference.info.preprocessing, reference.input_shape)
    expected = reference.predict(batch)
    got = np.concatenate([exported.predict(batch[:1]), exported.predict(batch[1:])])
    photos = slice(0, len(SAMPLES))
    same_top1 = got[photos].argmax(axis=1) == expected[photos].argmax(axis=1)
    return {
        "inputs": description,
        "images": len(batch),
        "max_abs_diff": float(np.abs(got - expected).max()),
        "top1_agreement": float(same_top1.mean()),
    }


def sample_inputs(
    preprocessing: Preprocessing, input_shape: tuple[int, int, int]
) -> tuple[np.ndarray, str]:
    """A preprocessed batch of scikit-image's sample photos, then a few random images.

    Returns:
        The float32 batch at ``input_shape``, and what it holds, for people.
    """
    height, width, channels = input_shape
    mode = "L" if channels == 1 else "RGB"
    photos = [load_image(sample_path(name), mode=mode) for name in SAMPLES]
    noise = np.random.default_rng(0).integers(
        0, 256, (RANDOM_CHECK_IMAGES, height, width, channels), dtype=np.uint8
    )
    batch = np.concatenate([preprocessing(photos), preprocessing.normalize(noise)])
    return batch, f"{len(photos)} sample photos and {RANDOM_CHECK_IMAGES} random images"


def _check_options(out: Path, format: str, quantize: str | None) -> Path:
    if format not in FORMATS:
        raise ImgrecError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ImgrecError(
            f"unknown quantization {quantize!r}; choose one of {', '.join(QUANTIZATIONS)}"
        )
    if quantize is not None and format == "savedmodel":
        raise ImgrecError("--quantize applies to onnx and tflite exports, not to savedmodel")
    suffix = SUFFIXES.get(format)
    if suffix is not None and out.suffix != suffix:
        raise ImgrecError(f"{out}: a {format} export must end in {suffix}")
    if suffix is not None and out.is_dir():
        raise ImgrecError(f"{out}: is a folder; give a file name ending in {suffix}")
    if format == "savedmodel" and out.exists():
        replaceable = out.is_dir() and (
            (out / "saved_model.pb").is_file() or not any(out.iterdir())
        )
        if not replaceable:
            raise ImgrecError(f"{out}: exists and is not a SavedModel folder; not replacing it")
    return out


@contextlib.contextmanager
def _staging(out: Path, format: str) -> Iterator[Path]:
    """A temporary path beside ``out`` that replaces it on success, never half-written."""
    if format != "savedmodel":
        with atomic_path(out) as tmp:
            yield tmp
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        staged = folder / out.name
        yield staged
        if out.exists():
            shutil.rmtree(out)
        os.replace(staged, out)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


# --- Conversion --------------------------------------------------------------------------


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
    _converting(model, "savedmodel", lambda: _write_saved_model(model, path))


def _to_onnx(
    model: keras.Model, path: Path, quantize: str | None, calibration: np.ndarray | None
) -> None:
    import onnx
    import tf2onnx

    serve, spec = _serving_function(model)
    proto, _ = _converting(
        model,
        "onnx",
        lambda: tf2onnx.convert.from_function(serve, input_signature=[spec], opset=ONNX_OPSET),
    )
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

    def convert() -> bytes:
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
            return converter.convert()

    path.write_bytes(_converting(model, "tflite", convert))


def _converting(model: keras.Model, format: str, convert: Callable[[], Any]) -> Any:
    """Run a converter; its failures (of many types) become a ModelError naming the model."""
    try:
        return convert()
    except Exception as err:  # converters raise anything from ValueError to ConverterError
        raise ModelError(
            f"{model_info(model).name}: cannot convert to {format} ({type(err).__name__}: {err})"
        ) from err


class _CalibrationReader:
    """Feeds calibration images to ONNX Runtime's quantizer, one at a time."""

    def __init__(self, images: np.ndarray) -> None:
        self._images = iter(images)

    def get_next(self) -> dict[str, np.ndarray] | None:
        image = next(self._images, None)
        return None if image is None else {INPUT_NAME: image[None]}


_CONVERTERS = {"onnx": _to_onnx, "tflite": _to_tflite, "savedmodel": _to_savedmodel}


# --- Running the exports beside Keras ----------------------------------------------------


class _TFLiteRuntime(Runtime):
    """A ``.tflite`` file run by TensorFlow's TFLite interpreter."""

    name = "tflite"

    def __init__(self, path: Path, info: ModelInfo) -> None:
        import tensorflow as tf

        with warnings.catch_warnings():
            # tf.lite.Interpreter warns that LiteRT (ai-edge-litert) replaces it; it
            # still runs every file, and LiteRT is not a dependency of imgrec.
            warnings.simplefilter("ignore", UserWarning)
            interpreter = tf.lite.Interpreter(model_path=str(path))
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


_RUNNERS: dict[str, Callable[[Path, ModelInfo], Runtime]] = {
    "onnx": OnnxRuntime,
    "tflite": _TFLiteRuntime,
    "savedmodel": _SavedModelRuntime,
}


def _load_val(val: str | os.PathLike | Dataset, reference: Runtime) -> Dataset:
    """``val`` at the model's input size, split as ``evaluate`` splits it for the model.

    The training run's split settings draw the same validation split, so that no
    training image is counted (nor, for int8, both calibrated on and counted).
    """
    if isinstance(val, Dataset):
        return val
    return load_held_out(val, reference.input_shape, reference.info.training, progress=False)


def _calibration_images(reference: Runtime, dataset: Dataset | None) -> tuple[np.ndarray, str]:
    """Preprocessed images for int8 calibration, and what they are, for people.

    Training images when a data set is given (never the images the accuracy is then
    measured on); otherwise square crops of the sample photos, some mirrored.
    """
    preprocessing = reference.info.preprocessing
    if dataset is not None and len(dataset.train):
        count = min(CALIBRATION_IMAGES, len(dataset.train))
        picked = np.linspace(0, len(dataset.train) - 1, count).astype(int)
        images = preprocessing.normalize(np.asarray(dataset.train.images[picked]))
        return images, f"{count} training images of {dataset.name}"
    mode = "L" if reference.input_shape[-1] == 1 else "RGB"
    rng = np.random.default_rng(0)
    crops = []
    for name in SAMPLES:
        photo = load_image(sample_path(name), mode=mode)
        height, width = photo.shape[:2]
        for _ in range(CROPS_PER_SAMPLE):
            side = int(rng.integers(min(height, width) // 2, min(height, width) + 1))
            top = int(rng.integers(0, height - side + 1))
            left = int(rng.integers(0, width - side + 1))
            crop = photo[top : top + side, left : left + side]
            crops.append(np.ascontiguousarray(crop[:, ::-1] if rng.random() < 0.5 else crop))
    return preprocessing(crops), f"{len(crops)} crops of the {len(SAMPLES)} sample photos"


def _accuracy_change(reference: Runtime, exported: Runtime, dataset: Dataset) -> dict[str, Any]:
    """Accuracy on ``dataset``'s evaluation split before and after the export."""
    split_name, split = evaluation_split(dataset, reference.info.class_names)
    before, after = (
        classification_metrics(
            split.labels,
            predict_probabilities(runtime, split.images, ACCURACY_BATCH),
            reference.info.class_names,
            top_k=1,
        )["accuracy"]
        for runtime in (reference, exported)
    )
    return {
        "dataset": dataset.name,
        "split": split_name,
        "images": len(split.labels),
        "keras": before,
        "exported": after,
        "change": after - before,
    }


# --- The sidecar -------------------------------------------------------------------------


def _input_description(reference: Runtime) -> dict[str, Any]:
    height, width, channels = reference.input_shape
    return {
        "name": INPUT_NAME,
        "shape": [None, height, width, channels],
        "dtype": "float32",
        "layout": "NHWC (batch, height, width, channels)",
        "color": "grey" if channels == 1 else "RGB",
        "steps": _preprocessing_steps(reference.info.preprocessing, channels),
    }


def _preprocessing_steps(p: Preprocessing, channels: int) -> list[str]:
    """The preprocessing recipe in words, in order, for someone writing a consumer."""
    height, width = p.size
    colour = "one grey channel" if channels == 1 else "RGB"
    if p.resize == "short_side":
        resize = (
            f"resize (bilinear) so that the short side is {p.resize_to} pixels, keeping "
            f"the aspect ratio, then crop the central {height} x {width}"
        )
    else:
        resize = f"resize (bilinear) to {height} x {width}, ignoring the aspect ratio"
    steps = [f"decode the photo as 8-bit {colour}", resize, "convert the 0-255 values to float32"]
    if p.bgr:
        steps.append("reverse the channels to BGR")
    mean, std = list(p.mean[:channels]), list(p.std[:channels])
    steps.append(f"per channel: (x * {p.scale:.10g} - mean) / std, mean {mean}, std {std}")
    return steps


def _output_description(model: keras.Model, info: ModelInfo) -> dict[str, Any]:
    units = int(model.output_shape[-1])
    meaning = (
        f"the probability of class {info.class_names[-1]!r} (one sigmoid unit); "
        f"{info.class_names[0]!r} is 1 minus it"
        if units == 1
        else "one probability per class, in the order of model.class_names"
    )
    return {"name": OUTPUT_NAME, "shape": [None, units], "dtype": "float32", "meaning": meaning}
