"""Classification figures from labels and probabilities: plain NumPy, no model involved.

``evaluate``, ``compare`` and export's accuracy check all count with this one function.
"""

from __future__ import annotations

from typing import Any

import numpy as np


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
