"""How good is a model: accuracy, top-k, per-class precision/recall/F1, and pictures.

``evaluate`` runs a model over a data set's test split (or its validation split
when there is no test split) and returns every number as plain data. With a
report folder it also writes ``metrics.json``, ``confusion_matrix.png`` and
``mistakes.png``, a grid of the most confident wrong answers, which is where a
person learns most about what the model gets wrong.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from imgrec.classic.pipeline import ClassicModel, is_classic_file, load_classic
from imgrec.core.metrics import classification_metrics
from imgrec.core.plots import plot_confusion_matrix, plot_image_grid
from imgrec.core.storage import write_bytes_atomic
from imgrec.datasets import Dataset, Split, evaluation_split
from imgrec.deploy.export_cache import load_runtime
from imgrec.deploy.runtime import Runtime, predict_probabilities
from imgrec.models.tta import check_tta, predict_with_tta, resolve_tta
from imgrec.training.held_out import load_held_out

MISTAKES_SHOWN = 16


def evaluate(
    model: str | os.PathLike | keras.Model | Runtime | ClassicModel,
    dataset: str | os.PathLike | Dataset,
    *,
    report: str | os.PathLike | None = None,
    top_k: int = 5,
    batch_size: int = 256,
    val_split: float | None = None,
    seed: int | None = None,
    runtime: str = "auto",
    tta: str | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset`` and optionally write a report folder.

    Args:
        model: a ``.keras`` file, a zoo name, a loaded model, an ``.onnx`` export
            or a ``Runtime``; or a traditional pipeline: a ``.joblib`` file that
            ``imgrec classic train`` wrote (its digest is checked before it is
            loaded), or a loaded ``ClassicModel``.
        dataset: a data set name or path, or a loaded one. Images are brought to
            the model's input size and channels.
        report: a folder for ``metrics.json``, ``confusion_matrix.png`` and
            ``mistakes.png``.
        top_k: also report whether the true class is among the k most probable.
        batch_size: images per forward pass.
        val_split: the fraction held out when the data set has neither a test nor a
            validation split of its own; by default the one the model was trained
            with (and its limit per class), so that no training image is evaluated.
        seed: the seed that draws that split; by default the model's own.
        runtime: what runs a network: ``"auto"`` (ONNX Runtime when the network
            can be exported, else Keras), ``"onnx"`` or ``"keras"`` (see
            ``imgrec.deploy.export_cache.load_runtime``).
        tta: test-time augmentation (``imgrec.models.tta``): ``"none"``, ``"flip"``
            (the mean of the probabilities of each image and its mirror) or
            ``"flip,shift"`` (airbench's six views); ``None``: the one the model
            recorded (``ModelInfo.tta``), else none.

    Returns:
        ``split``, ``images``, ``accuracy``, ``top_k``, ``top_k_accuracy``,
        ``per_class`` (precision, recall, F1, support per class name),
        ``macro_f1``, ``confusion_matrix`` (rows: true class), ``tta`` (the
        test-time augmentation used) and the report's file paths when written.

    Raises:
        DatasetError: the data set's classes differ from the model's.
        UnsafeFileError: a ``.joblib`` file whose digest file is missing or differs.
        SpecError: an unknown ``tta``.
    """
    if tta is not None:
        check_tta(tta)  # before any model is loaded
    if isinstance(model, ClassicModel) or is_classic_file(model):
        classic = model if isinstance(model, ClassicModel) else load_classic(model)
        class_names, training = classic.class_names, classic.training
        input_shape = classic.input_shape
        recorded = None

        def scores(images: np.ndarray, mode: str) -> np.ndarray:
            return predict_with_tta(classic.predict_proba, images, mode)

    else:
        network = load_runtime(model, runtime)
        class_names, training = network.info.class_names, network.info.training
        input_shape = network.input_shape
        recorded = network.info.tta

        def scores(images: np.ndarray, mode: str) -> np.ndarray:
            return predict_probabilities(network, images, batch_size, tta=mode)

    if not isinstance(dataset, Dataset):
        dataset = load_held_out(dataset, input_shape, training, val_split=val_split, seed=seed)
    split_name, split = evaluation_split(dataset, class_names)
    tta = resolve_tta(tta, recorded)
    probabilities = scores(split.images, tta)
    results = classification_metrics(split.labels, probabilities, class_names, top_k)
    results = {"split": split_name, "images": len(split.labels), **results, "tta": tta}
    if report is not None:
        results |= _write_report(Path(report), results, split, probabilities, class_names)
    return results


def _write_report(
    folder: Path,
    results: dict[str, Any],
    split: Split,
    probabilities: np.ndarray,
    class_names: tuple[str, ...],
) -> dict[str, str]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {
        "metrics_json": folder / "metrics.json",
        "confusion_matrix_png": folder / "confusion_matrix.png",
        "mistakes_png": folder / "mistakes.png",
    }
    plot_confusion_matrix(
        np.asarray(results["confusion_matrix"]),
        class_names,
        paths["confusion_matrix_png"],
        title=f"accuracy {results['accuracy']:.2%} on {results['images']} images",
    )
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != split.labels)
    confidence = probabilities[wrong, predicted[wrong]]
    worst = wrong[np.argsort(confidence)[::-1][:MISTAKES_SHOWN]]
    if len(worst):
        plot_image_grid(
            [np.asarray(split.images[i]) for i in worst],
            paths["mistakes_png"],
            titles=[
                f"{class_names[split.labels[i]]} -> {class_names[predicted[i]]}\n"
                f"{probabilities[i, predicted[i]]:.0%}"
                for i in worst
            ],
            title="most confident mistakes (true -> predicted)",
        )
    else:
        del paths["mistakes_png"]
    written = {key: str(path) for key, path in paths.items()}
    write_bytes_atomic(paths["metrics_json"], json.dumps(results | written, indent=1).encode())
    return written
