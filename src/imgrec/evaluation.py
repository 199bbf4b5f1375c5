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

from imgrec.datasets import Dataset, Split, load_dataset
from imgrec.errors import DatasetError
from imgrec.models.loading import load_model
from imgrec.models.metadata import model_info
from imgrec.plots import plot_confusion_matrix, plot_image_grid
from imgrec.storage import write_bytes_atomic

MISTAKES_SHOWN = 16


def evaluate(
    model: str | os.PathLike | keras.Model,
    dataset: str | os.PathLike | Dataset,
    *,
    report: str | os.PathLike | None = None,
    top_k: int = 5,
    batch_size: int = 256,
    val_split: float | None = None,
    seed: int | None = None,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset`` and optionally write a report folder.

    Args:
        model: a ``.keras`` file, a zoo name, or a loaded model.
        dataset: a data set name or path, or a loaded one. Images are brought to
            the model's input size and channels.
        report: a folder for ``metrics.json``, ``confusion_matrix.png`` and
            ``mistakes.png``.
        top_k: also report whether the true class is among the k most probable.
        batch_size: images per forward pass.
        val_split, seed: how the validation split is drawn when the data set has
            neither a test nor a validation split of its own; by default the ones
            the model was trained with, so that no training image is evaluated.

    Returns:
        ``split``, ``images``, ``accuracy``, ``top_k``, ``top_k_accuracy``,
        ``per_class`` (precision, recall, F1, support per class name),
        ``macro_f1``, ``confusion_matrix`` (rows: true class), and the report's
        file paths when written.

    Raises:
        DatasetError: the data set's classes differ from the model's.
    """
    if not isinstance(model, keras.Model):
        model = load_model(model)
    info = model_info(model)
    if not isinstance(dataset, Dataset):
        trained = info.training or {}
        height, width, channels = model.input_shape[1:]
        dataset = load_dataset(
            dataset,
            image_size=(height, width),
            channels=channels,
            val_split=trained.get("val_split", 0.1) if val_split is None else val_split,
            seed=trained.get("seed", 0) if seed is None else seed,
        )
    if tuple(dataset.class_names) != tuple(info.class_names):
        raise DatasetError(
            f"{dataset.name}: its classes {list(dataset.class_names)} are not the model's "
            f"{list(info.class_names)}"
        )
    split_name, split = _evaluation_split(dataset)
    probabilities = predict_probabilities(model, split.images, batch_size)
    results = classification_metrics(split.labels, probabilities, info.class_names, top_k)
    results = {"split": split_name, "images": len(split.labels), **results}
    if report is not None:
        results |= _write_report(Path(report), results, split, probabilities, info.class_names)
    return results


def _evaluation_split(dataset: Dataset) -> tuple[str, Split]:
    for name in ("test", "val"):
        split = getattr(dataset, name)
        if split is not None and len(split.labels):
            return name, split
    raise DatasetError(f"{dataset.name}: no test or validation images to evaluate on")


def predict_probabilities(model: keras.Model, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Class probabilities, N x classes; a single sigmoid unit becomes two columns."""
    info = model_info(model)
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = info.preprocessing.normalize(np.asarray(images[start : start + batch_size]))
        outputs.append(np.asarray(model.predict_on_batch(batch)))
    probabilities = np.concatenate(outputs)
    if probabilities.shape[-1] == 1:
        probabilities = np.hstack([1 - probabilities, probabilities])
    return probabilities


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
