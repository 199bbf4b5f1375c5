"""Classification figures from labels and probabilities, and image quality (PSNR, SSIM):
plain NumPy (SciPy's Gaussian filter for SSIM), no model involved.

``evaluate``, ``compare`` and export's accuracy check all count with
``classification_metrics``; the super-resolution networks are measured with ``psnr`` and
``ssim``.
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


# --------------------------------------------------------------------- image quality


def psnr(reference: np.ndarray, image: np.ndarray, data_range: float = 255.0) -> float:
    """Peak signal-to-noise ratio of ``image`` against ``reference``, in dB.

    Args:
        reference, image: arrays of one shape (uint8 pixels, or floats).
        data_range: the largest possible difference (255 for uint8 pixels).

    Returns:
        ``10 log10(data_range**2 / MSE)``; infinity for identical images.

    Raises:
        ValueError: the shapes differ.
    """
    reference, image = _pair(reference, image)
    mse = float(np.mean((reference - image) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(data_range**2 / mse))


def ssim(reference: np.ndarray, image: np.ndarray, data_range: float = 255.0) -> float:
    """Structural similarity (Wang et al., 2004) of ``image`` against ``reference``.

    The paper's setting: a Gaussian window (sigma 1.5, cut at 3.5 sigma), K1 = 0.01,
    K2 = 0.03, population statistics; the map is averaged away from the borders
    (where the window would leave the image) and over the channels. This equals
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range, channel_axis=-1)``.

    Args:
        reference, image: ``H x W`` or ``H x W x C`` arrays of one shape, at least
            11 pixels on a side.
        data_range: the largest possible difference (255 for uint8 pixels).

    Raises:
        ValueError: the shapes differ, or an image under 11 pixels on a side.
    """
    from scipy.ndimage import gaussian_filter

    reference, image = _pair(reference, image)
    if reference.ndim == 2:
        reference, image = reference[..., np.newaxis], image[..., np.newaxis]
    sigma, truncate = 1.5, 3.5
    pad = int(truncate * sigma + 0.5)
    if min(reference.shape[:2]) < 2 * pad + 1:
        raise ValueError(f"SSIM needs at least {2 * pad + 1} pixels a side, got {image.shape}")
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2

    def blur(values: np.ndarray) -> np.ndarray:
        return gaussian_filter(values, sigma=sigma, truncate=truncate, mode="reflect")

    scores = []
    for channel in range(reference.shape[-1]):
        x, y = reference[..., channel], image[..., channel]
        mx, my = blur(x), blur(y)
        vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        index = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
        scores.append(index[pad:-pad, pad:-pad].mean())
    return float(np.mean(scores))


def _pair(reference: np.ndarray, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    reference, image = np.asarray(reference), np.asarray(image)
    if reference.shape != image.shape:
        raise ValueError(f"the images differ in shape: {reference.shape} and {image.shape}")
    return reference.astype(np.float64), image.astype(np.float64)
