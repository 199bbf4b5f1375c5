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
from imgrec.datasets import Dataset, Split, load_dataset
from imgrec.errors import DatasetError
from imgrec.plots import plot_confusion_matrix, plot_image_grid
from imgrec.runtime import Runtime, as_runtime, load_runtime
from imgrec.storage import write_bytes_atomic

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
        val_split, seed: how the validation split is drawn when the data set has
            neither a test nor a validation split of its own; by default the ones
            the model was trained with (and its limit per class), so that no
            training image is evaluated.
        runtime: what runs a network: ``"auto"`` (ONNX Runtime when the network
            can be exported, else Keras), ``"onnx"`` or ``"keras"`` (see
            ``imgrec.runtime.load_runtime``).

    Returns:
        ``split``, ``images``, ``accuracy``, ``top_k``, ``top_k_accuracy``,
        ``per_class`` (precision, recall, F1, support per class name),
        ``macro_f1``, ``confusion_matrix`` (rows: true class), and the report's
        file paths when written.

    Raises:
        DatasetError: the data set's classes differ from the model's.
        UnsafeFileError: a ``.joblib`` file whose digest file is missing or differs.
    """
    if isinstance(model, ClassicModel) or is_classic_file(model):
        classic = model if isinstance(model, ClassicModel) else load_classic(model)
        class_names, training = classic.class_names, classic.training
        input_shape = classic.input_shape
        scores = classic.predict_proba
    else:
        network = load_runtime(model, runtime)
        class_names, training = network.info.class_names, network.info.training
        input_shape = network.input_shape

        def scores(images: np.ndarray) -> np.ndarray:
            return predict_probabilities(network, images, batch_size)

    if not isinstance(dataset, Dataset):
        dataset = load_held_out(dataset, input_shape, training, val_split=val_split, seed=seed)
    if tuple(dataset.class_names) != tuple(class_names):
        raise DatasetError(
            f"{dataset.name}: its classes {list(dataset.class_names)} are not the model's "
            f"{list(class_names)}"
        )
    split_name, split = _evaluation_split(dataset)
    probabilities = scores(split.images)
    results = classification_metrics(split.labels, probabilities, class_names, top_k)
    results = {"split": split_name, "images": len(split.labels), **results}
    if report is not None:
        results |= _write_report(Path(report), results, split, probabilities, class_names)
    return results


def load_held_out(
    dataset: str | os.PathLike,
    input_shape: tuple[int, int, int],
    training: dict[str, Any] | None,
    *,
    val_split: float | None = None,
    seed: int | None = None,
    progress: bool = True,
) -> Dataset:
    """``dataset`` at a model's input size, split as the model's training run split it.

    Args:
        dataset: a data set name or path.
        input_shape: the model's height, width and channels.
        training: the model's training record (``ModelInfo.training``), or None.
        val_split, seed: override the run's; by default its own (and its limit per
            class, since the validation images are drawn from the limited ones), so
            that the validation split holds no training image.
        progress: show the decoding progress bar.
    """
    trained = training or {}
    height, width, channels = input_shape
    return load_dataset(
        dataset,
        image_size=(height, width),
        channels=channels,
        val_split=trained.get("val_split", 0.1) if val_split is None else val_split,
        seed=trained.get("seed", 0) if seed is None else seed,
        limit_per_class=trained.get("limit_per_class"),
        progress=progress,
    )


def _evaluation_split(dataset: Dataset) -> tuple[str, Split]:
    for name in ("test", "val"):
        split = getattr(dataset, name)
        if split is not None and len(split.labels):
            return name, split
    raise DatasetError(f"{dataset.name}: no test or validation images to evaluate on")


def predict_probabilities(
    model: keras.Model | Runtime, images: np.ndarray, batch_size: int
) -> np.ndarray:
    """Class probabilities, N x classes; a single sigmoid unit becomes two columns.

    Args:
        model: a model from ``imgrec.load_model`` (run by Keras) or a ``Runtime``.
        images: uint8 ``N x H x W x C`` at the model's input size.
        batch_size: images per forward pass.
    """
    network = as_runtime(model)
    normalize = network.info.preprocessing.normalize
    outputs = [
        network.predict(normalize(np.asarray(images[start : start + batch_size])))
        for start in range(0, len(images), batch_size)
    ]
    return np.concatenate(outputs)


def classification_metrics(
    labels: np.ndarray, probabilities: np.ndarray, class_names: tuple[str, ...], top_k: int
) -> dict[str, Any]:
    """Accuracy, top-k accuracy, per-class precision/recall/F1 and the confusion matrix."""
    classes = len(class_names)
    predicted = probabilities.argmax(axis=1)
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels, predicted), 1)
    k = min(top_k, classes)
    top = np.argsort(probabilities, axis=1)[:, -k:]
    true_positive = np.diag(matrix).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.nan_to_num(true_positive / matrix.sum(axis=0))
        recall = np.nan_to_num(true_positive / matrix.sum(axis=1))
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    per_class = {
        name: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(matrix[i].sum()),
        }
        for i, name in enumerate(class_names)
    }
    return {
        "accuracy": float((predicted == labels).mean()),
        "top_k": k,
        "top_k_accuracy": float((top == labels[:, None]).any(axis=1).mean()),
        "macro_f1": float(f1.mean()),
        "per_class": per_class,
        "confusion_matrix": matrix.tolist(),
    }


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
