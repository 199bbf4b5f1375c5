"""The PNG pictures imgrec draws: image grids, training curves, confusion matrices, bars.

Each function builds its own ``matplotlib.figure.Figure`` on an Agg canvas: pyplot and
its global state (the current figure, the interactive backend) are never touched, so the
functions are safe to call from several threads (a web server) and from a machine
without a display. Every PNG is written atomically and its path returned.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from imgrec.core.storage import atomic_path

DPI = 110

# Keras names its accuracy metric after what the user passed to ``compile``.
_ACCURACY_KEYS = (
    "accuracy",
    "acc",
    "sparse_categorical_accuracy",
    "categorical_accuracy",
    "binary_accuracy",
)

# Above this many classes a confusion matrix's cells are too small for their counts.
_MAX_ANNOTATED_CLASSES = 20


def plot_image_grid(
    images: Sequence[np.ndarray],
    out: str | os.PathLike,
    *,
    titles: Sequence[str] | None = None,
    columns: int | None = None,
    title: str | None = None,
) -> Path:
    """Draw uint8 images (H x W x 3, H x W x 1 or H x W) in a grid; grey stays grey.

    Args:
        images: one or more uint8 arrays; sizes may differ.
        out: the PNG to write.
        titles: one caption per image.
        columns: images per row; defaults to a near-square grid.
        title: a caption above the grid.

    Raises:
        ValueError: no images, an image that is not uint8 H x W x 1/3, titles of the
            wrong length, or columns below 1.
    """
    images = [_check_image(image, i) for i, image in enumerate(images)]
    if not images:
        raise ValueError("plot_image_grid needs at least one image")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"{len(titles)} titles for {len(images)} images")
    if columns is not None and columns < 1:
        raise ValueError(f"columns must be at least 1, got {columns}")
    columns = min(columns or math.ceil(math.sqrt(len(images))), len(images))
    rows = math.ceil(len(images) / columns)

    height, width = images[0].shape[:2]
    cell = 2.4 if columns <= 6 else max(1.0, 15.0 / columns)
    caption = 0.3 if titles is not None else 0.0
    fig = _figure(
        cell * columns,
        rows * (cell * min(height / width, 2.0) + caption) + (0.4 if title else 0.0),
    )
    cell_pixels = cell * DPI
    for i, ax in enumerate(fig.subplots(rows, columns, squeeze=False).flat):
        ax.set_axis_off()
        if i >= len(images):
            continue
        image = images[i]
        # Upscaled small images (CIFAR's 32 x 32) show their real pixels.
        interpolation = "nearest" if max(image.shape[:2]) < cell_pixels else "antialiased"
        if image.shape[2] == 1:
            ax.imshow(image[..., 0], cmap="gray", vmin=0, vmax=255, interpolation=interpolation)
        else:
            ax.imshow(image, interpolation=interpolation)
        if titles is not None:
            ax.set_title(str(titles[i]), fontsize=9)
    if title:
        fig.suptitle(title)
    return _save(fig, out)


def plot_training_curves(
    history: dict[str, list[float]],
    out: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Draw loss and accuracy per epoch, training and validation, from a Keras History.

    Args:
        history: ``model.fit(...).history``: ``loss`` and optionally ``val_loss``,
            ``accuracy`` (or ``acc``, ``sparse_categorical_accuracy``...) and its
            ``val_`` twin. Other keys (``learning_rate``) are ignored. Without an
            accuracy metric only the loss panel is drawn.
        out: the PNG to write.
        title: a caption above the panels.

    Raises:
        ValueError: the history has no ``loss``.
    """
    if not history.get("loss"):
        raise ValueError(f"the history has no 'loss' (keys: {', '.join(history) or 'none'})")
    accuracy = next((key for key in _ACCURACY_KEYS if history.get(key)), None)
    if accuracy is None:
        accuracy = next(
            (k for k in history if "acc" in k and not k.startswith("val_") and history[k]), None
        )
    panels = [("loss", "loss")] + ([(accuracy, "accuracy")] if accuracy else [])

    fig = _figure(5.0 * len(panels), 3.8 + (0.3 if title else 0.0))
    axes = fig.subplots(1, len(panels), squeeze=False).flat
    for ax, (key, label) in zip(axes, panels, strict=True):
        for name, series, style in (
            ("training", history.get(key), "-"),
            ("validation", history.get(f"val_{key}"), "--"),
        ):
            if series:
                epochs = np.arange(1, len(series) + 1)
                marker = "o" if len(series) <= 30 else None
                ax.plot(epochs, series, style, marker=marker, markersize=3, label=name)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return _save(fig, out)


def plot_confusion_matrix(
    matrix: np.ndarray,
    class_names: Sequence[str],
    out: str | os.PathLike,
    *,
    normalize: bool = True,
    title: str | None = None,
) -> Path:
    """Draw a confusion matrix: true classes in rows, predicted classes in columns.

    Args:
        matrix: n x n counts, ``matrix[true, predicted]``.
        class_names: the n class names, in the matrix's order.
        out: the PNG to write.
        normalize: colour each cell by its share of the row (the true class), so that
            small classes are as readable as large ones; otherwise by the raw count.
            The cells are annotated with counts either way, up to 20 classes.
        title: a caption above the matrix.

    Raises:
        ValueError: the matrix is not square or does not match ``class_names``.
    """
    matrix = np.asarray(matrix)
    n = len(class_names)
    if matrix.ndim != 2 or matrix.shape != (n, n):
        raise ValueError(f"expected a {n} x {n} matrix for {n} classes, got shape {matrix.shape}")
    if normalize:
        sums = matrix.sum(axis=1, keepdims=True).astype(float)
        colours = np.divide(matrix, sums, out=np.zeros(matrix.shape), where=sums > 0)
        vmax, bar_label = 1.0, "fraction of the true class"
    else:
        colours = matrix.astype(float)
        vmax, bar_label = max(float(colours.max()), 1.0), "count"

    longest = max((len(str(name)) for name in class_names), default=1)
    side = float(np.clip(0.45 * n + 2.5, 4.5, 18.0))
    margin = min(0.075 * longest, 3.0)  # room for the rotated and the row labels
    fig = _figure(side + margin + 1.0, side + margin + (0.3 if title else 0.0))
    ax = fig.subplots()
    image = ax.imshow(colours, cmap="Blues", vmin=0.0, vmax=vmax, interpolation="nearest")
    fig.colorbar(image, ax=ax, shrink=0.8, label=bar_label)

    cell_points = 72 * side * 0.8 / max(n, 1)
    label_size = min(10.0, 0.7 * cell_points)
    if label_size >= 4:
        ax.set_xticks(range(n), [str(c) for c in class_names], fontsize=label_size)
        ax.set_yticks(range(n), [str(c) for c in class_names], fontsize=label_size)
        # Slanted names read best; dense ones stand upright so that they cannot overlap.
        rotation = 45 if n <= _MAX_ANNOTATED_CLASSES else 90
        ax.tick_params(axis="x", labelrotation=rotation)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")
            if rotation == 90:
                label.set_verticalalignment("center")
    else:
        ax.set_xticks([])
        ax.set_yticks([])
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")

    if n <= _MAX_ANNOTATED_CLASSES:
        integral = np.all(np.mod(matrix, 1) == 0)
        size = 10 if n <= 10 else 8
        for (row, column), value in np.ndenumerate(matrix):
            text = f"{int(value)}" if integral else f"{value:.2g}"
            colour = "white" if colours[row, column] > 0.5 * vmax else "black"
            ax.text(column, row, text, ha="center", va="center", color=colour, fontsize=size)
    if title:
        ax.set_title(title)
    return _save(fig, out)


def plot_bars(
    labels: Sequence[str],
    values: Sequence[float],
    out: str | os.PathLike,
    *,
    xlabel: str = "",
    title: str | None = None,
) -> Path:
    """Draw one horizontal bar per label, first label on top, each value written at its end.

    Raises:
        ValueError: no labels, or not one value per label.
    """
    if not labels or len(labels) != len(values):
        raise ValueError(f"expected one value per label, got {len(labels)} and {len(values)}")
    longest = max(len(str(label)) for label in labels)
    fig = _figure(6.0 + min(0.07 * longest, 3.0), 0.35 * len(labels) + 1.2)
    ax = fig.subplots()
    positions = np.arange(len(labels))
    bars = ax.barh(positions, values, color="tab:blue")
    ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], padding=3, fontsize=9)
    ax.set_yticks(positions, [str(label) for label in labels])
    ax.invert_yaxis()
    ax.margins(x=0.15)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    if title:
        ax.set_title(title)
    return _save(fig, out)


def _check_image(image: np.ndarray, index: int) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image {index}: expected uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., np.newaxis]
    if image.ndim != 3 or image.shape[2] not in (1, 3):
        raise ValueError(f"image {index}: expected H x W x 1 or H x W x 3, got {image.shape}")
    return image


def _figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out: str | os.PathLike) -> Path:
    out = Path(out)
    with atomic_path(out) as tmp:
        # "tight" trims what the size estimates above left over around the content.
        fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.1)
    return out
