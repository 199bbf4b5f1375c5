"""Export a model for deployment, as ONNX, TFLite or a TensorFlow SavedModel, checked.

``export`` converts any model imgrec builds, loads or trains (zoo networks, the seed
networks, transfer models with their nested backbone) and then runs the exported
model beside the Keras model before it keeps the file:

- on sample inputs (scikit-image's photos and a few random images, at two batch
  sizes), the largest difference in class probabilities; an unquantized export that
  differs by more than ``FP32_TOLERANCE`` is refused and nothing is written;
- with a validation data set, the accuracy of both, so that what quantization
  (``fp16``, ``int8``) costs is a measured number.

The formats are one table (``imgrec.deploy.converters.FORMATS``): the suffix each
takes, the converter that writes it and the runtime that runs it for the checks. A
model from a ``.keras`` file, which a user supplied, is converted in a child process
(``imgrec.deploy.converter_process``): a converter that crashes on it raises
``ModelError`` instead of ending the caller's process.

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
from collections.abc import Iterator
from dataclasses import dataclass
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
from imgrec.deploy.converter_process import convert_in_child
from imgrec.deploy.converters import FORMATS as FORMAT_TABLE
from imgrec.deploy.converters import INPUT_NAME, ONNX_OPSET, OUTPUT_NAME, converting
from imgrec.deploy.runtime import KerasRuntime, Runtime, predict_probabilities
from imgrec.deploy.sidecar import (
    SIDECAR_FORMAT,
    exporter_versions,
    file_digest,
    sidecar_path,
    weights_digest,
)
from imgrec.models.file_check import check_keras_archive
from imgrec.models.loading import load_model
from imgrec.models.metadata import ModelInfo, model_info
from imgrec.models.preprocessing import Preprocessing
from imgrec.training.held_out import load_held_out

FORMATS = EXPORT_FORMATS
SUFFIXES = {f.name: f.suffix for f in FORMAT_TABLE.values() if f.suffix is not None}
FP32_TOLERANCE = 1e-4
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
    isolate: bool | None = None,
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
        isolate: convert in a child process, where a converter's crash (a signal)
            becomes a ``ModelError``; ``None``: for a ``.keras`` file. A model in
            memory goes to the child as a temporary ``.keras`` file when it holds
            only Keras's own objects, and is converted here otherwise.

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
        ModelError: the model cannot be had, cannot be converted (or its converter
            crashed), or its float32 export disagrees with Keras beyond
            ``FP32_TOLERANCE`` (nothing is written).
        DatasetError: ``val`` cannot be read, or its classes are not the model's.
    """
    out = _check_options(Path(out), format, quantize)
    source_file = Path(model) if _is_keras_file(model) else None
    keras_model = model if isinstance(model, keras.Model) else load_model(model, weights=weights)
    _require_tensorflow()
    reference = KerasRuntime(keras_model)
    dataset = _load_val(val, reference) if val is not None else None
    calibration, calibration_note = (
        _calibration_images(reference, dataset) if quantize == "int8" else (None, None)
    )
    conversion = _Conversion(keras_model, source_file, format, quantize, calibration)
    start = time.perf_counter()
    with _staging(out, format) as staged:
        conversion.run(staged, isolate=source_file is not None if isolate is None else isolate)
        check, accuracy = _check_export(reference, staged, format, quantize, dataset)
        digest = file_digest(staged) if staged.is_file() else None
    seconds = time.perf_counter() - start
    check["tolerance"] = FP32_TOLERANCE if quantize is None else None
    outcome = {"check": check, "accuracy": accuracy, "calibration": calibration_note}
    description = _model_description(keras_model, reference, source_file)
    _write_sidecar(out, {"format": format, "quantize": quantize}, digest, description, outcome)
    return {
        "format": format,
        "quantize": quantize,
        "path": str(out),
        "sidecar": str(sidecar_path(out)),
        "bytes": _size(out),
        "seconds": seconds,
        **outcome,
    }


def _write_sidecar(
    out: Path,
    options: dict[str, Any],
    digest: str | None,
    description: dict[str, Any],
    outcome: dict[str, Any],
) -> None:
    """The JSON sidecar beside ``out``, in the order its readers have always seen."""
    sidecar = {
        "imgrec_export": SIDECAR_FORMAT,
        **options,
        "file": out.name,
        "sha256": digest,
        **description,
        "exporter": {**exporter_versions(), "onnx_opset": ONNX_OPSET},
        **outcome,
    }
    write_bytes_atomic(sidecar_path(out), json.dumps(sidecar, indent=1).encode())


def _require_tensorflow() -> None:
    if keras.backend.backend() != "tensorflow":
        raise ModelError(
            f"exporting needs Keras's TensorFlow backend; this one is {keras.backend.backend()}"
        )


def _is_keras_file(model: object) -> bool:
    return isinstance(model, str | os.PathLike) and str(model).endswith(".keras")


def _check_export(
    reference: Runtime, staged: Path, format: str, quantize: str | None, dataset: Dataset | None
) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Run the written export beside Keras: the sample check, and the accuracy on ``dataset``.

    Raises:
        ModelError: the export cannot be loaded or run (an operation its runtime
            lacks is a failed conversion too), or, unquantized, it differs from Keras
            by more than ``FP32_TOLERANCE``.
    """
    name = reference.info.name
    exported = converting(name, format, lambda: FORMAT_TABLE[format].runner(staged, reference.info))
    check = converting(name, format, lambda: compare_on_samples(reference, exported))
    if quantize is None and check["max_abs_diff"] > FP32_TOLERANCE:
        raise ModelError(
            f"{name}: the {format} export differs from Keras by "
            f"{check['max_abs_diff']:.2g} in probability on {check['inputs']} (more "
            f"than {FP32_TOLERANCE:g}); nothing was written"
        )
    accuracy = _accuracy_change(reference, exported, dataset) if dataset else None
    return check, accuracy


def _model_description(
    model: keras.Model, reference: Runtime, source_file: Path | None
) -> dict[str, Any]:
    """The sidecar's ``model``, ``input``, ``output`` and ``source`` entries."""
    return {
        "model": reference.info.to_config(),
        "input": _input_description(reference),
        "output": _output_description(model, reference.info),
        "source": {
            "name": reference.info.name,
            "file": str(source_file.resolve()) if source_file else None,
            "file_sha256": file_digest(source_file) if source_file else None,
            "weights_sha256": weights_digest(model),
        },
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
    if quantize is not None and not FORMAT_TABLE[format].quantizable:
        quantizable = " and ".join(f.name for f in FORMAT_TABLE.values() if f.quantizable)
        raise ImgrecError(f"--quantize applies to {quantizable} exports, not to {format}")
    suffix = FORMAT_TABLE[format].suffix
    if suffix is not None and out.suffix != suffix:
        raise ImgrecError(f"{out}: a {format} export must end in {suffix}")
    if suffix is not None and out.is_dir():
        raise ImgrecError(f"{out}: is a folder; give a file name ending in {suffix}")
    if suffix is None and out.exists():
        replaceable = out.is_dir() and (
            (out / "saved_model.pb").is_file() or not any(out.iterdir())
        )
        if not replaceable:
            raise ImgrecError(f"{out}: exists and is not a SavedModel folder; not replacing it")
    return out


@contextlib.contextmanager
def _staging(out: Path, format: str) -> Iterator[Path]:
    """A temporary path beside ``out`` that replaces it on success, never half-written."""
    if FORMAT_TABLE[format].suffix is not None:  # a file, not a folder
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


@dataclass(frozen=True)
class _Conversion:
    """One model to convert to one format, here or in a child process."""

    model: keras.Model
    source_file: Path | None
    format: str
    quantize: str | None
    calibration: np.ndarray | None

    def run(self, staged: Path, isolate: bool) -> None:
        """Write the export at ``staged``; in a child process when ``isolate`` allows it."""
        if not isolate:
            self.here(staged)
        elif self.source_file is not None:
            self.in_child(self.source_file, staged)
        else:
            with tempfile.TemporaryDirectory(prefix="imgrec-export-") as folder:
                copy = Path(folder) / "model.keras"
                if self._saved_for_child(copy):
                    self.in_child(copy, staged)
                else:
                    self.here(staged)

    def here(self, staged: Path) -> None:
        convert = FORMAT_TABLE[self.format].convert
        converting(
            model_info(self.model).name,
            self.format,
            lambda: convert(self.model, staged, self.quantize, self.calibration),
        )

    def in_child(self, model_file: Path, staged: Path) -> None:
        name = model_info(self.model).name
        convert_in_child(
            model_file, self.format, staged, self.quantize, self.calibration, name=name
        )

    def _saved_for_child(self, copy: Path) -> bool:
        """Save the model for the child; False when the child could not load it.

        A model with layers of the caller's own (not Keras's) can be saved, but the
        child, which loads only what a model file may hold, would refuse it: such a
        model comes from the caller's code, not from a file, and is converted here.
        """
        try:
            self.model.save(copy)
            check_keras_archive(copy)
        except (ImgrecError, ValueError, TypeError, NotImplementedError):
            return False
        return True


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
