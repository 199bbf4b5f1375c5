"""Test-time augmentation (TTA): a model's answer averaged over a few views of each image.

Keras-free (NumPy only), so every runtime uses the same views: Keras and ONNX Runtime
(``imgrec.deploy.runtime.predict_probabilities``, ``imgrec.prediction``), the traditional
pipeline, and the batch workers of ``imgrec predict --engine ray``, which start without
TensorFlow. Views are made from ``N x H x W x C`` batches, uint8 pixels or the float32
values after ``Preprocessing.normalize``: a mirror and a translation commute with a
per-channel scale and shift, so either gives the same views.

The modes (``imgrec.core.choices.TTA_MODES``):

- ``"none"``: the image alone.
- ``"flip"``: the mean of the class probabilities of the image and of its horizontal
  mirror (left and right swapped).
- ``"flip,shift"``: airbench's test-time augmentation (KellerJordan/cifar10-airbench,
  ``infer`` with ``tta_level=2``): six views, weighted 1/4 the image, 1/4 its mirror, and
  1/8 each of the image shifted by one pixel down and right, the same shifted up and
  left, and the mirrors of those two. The pixels a shift uncovers are filled by
  reflection (the row or column one further in, as ``numpy.pad(mode="reflect")`` and
  PyTorch's ``"reflect"`` padding do). airbench averages the network's logits; imgrec
  averages probabilities (the softmax), which is what every runtime and export gives.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from imgrec.core.choices import TTA_MODES
from imgrec.core.errors import SpecError


def check_tta(mode: str) -> str:
    """``mode`` if it is a test-time augmentation imgrec knows.

    Args:
        mode: one of ``imgrec.core.choices.TTA_MODES``: ``"none"``, ``"flip"``,
            ``"flip,shift"``.

    Raises:
        SpecError: any other value (named in the message).
    """
    if mode not in TTA_MODES:
        raise SpecError(
            f"unknown test-time augmentation {mode!r}; choose one of {', '.join(TTA_MODES)}"
        )
    return mode


def resolve_tta(asked: str | None, recorded: str | None) -> str:
    """The test-time augmentation to run: the one asked for, else the model's own, else none.

    Args:
        asked: what the user gave (``--tta``, ``tta=``); ``None`` when nothing was given.
        recorded: the model's recommended one (``ModelInfo.tta``); ``None`` when it has none.

    Raises:
        SpecError: ``asked`` (or ``recorded``) is not a known mode.
    """
    return check_tta(asked if asked is not None else recorded or "none")


def mirror(batch: np.ndarray) -> np.ndarray:
    """Each image of an ``N x H x W x C`` batch with left and right swapped."""
    return batch[:, :, ::-1]


def shift(batch: np.ndarray, down: int, right: int) -> np.ndarray:
    """Each image moved by ``down`` rows and ``right`` columns (each -1, 0 or 1).

    The row or column uncovered is filled by reflection: moving down by one, the new top
    row is the old second row.
    """
    padded = np.pad(batch, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="reflect")
    height, width = batch.shape[1:3]
    top, left = 1 - down, 1 - right
    return padded[:, top : top + height, left : left + width]


def tta_views(batch: np.ndarray, mode: str) -> list[tuple[float, np.ndarray]]:
    """The views of ``batch`` that ``mode`` averages, each with its weight (they sum to 1).

    Args:
        batch: ``N x H x W x C`` images (uint8 pixels or normalised floats).
        mode: one of ``imgrec.core.choices.TTA_MODES``.

    Raises:
        SpecError: an unknown ``mode``.
    """
    check_tta(mode)
    batch = np.asarray(batch)
    if mode == "none":
        return [(1.0, batch)]
    views = [(0.5, batch), (0.5, mirror(batch))]
    if mode == "flip,shift":
        views = [(0.25, batch), (0.25, mirror(batch))]
        for down_right in (1, -1):
            moved = shift(batch, down_right, down_right)
            views += [(0.125, moved), (0.125, mirror(moved))]
    return views


def predict_with_tta(
    forward: Callable[[np.ndarray], np.ndarray], batch: np.ndarray, mode: str
) -> np.ndarray:
    """Class probabilities of ``batch``, averaged over the views of ``mode``.

    Each view is one call of ``forward`` with a batch as large as ``batch``, so memory
    does not grow with the number of views (and a compiled model sees one batch shape).

    Args:
        forward: a batch (as ``batch``) -> ``N x classes`` probabilities.
        batch: ``N x H x W x C`` images, as ``forward`` takes them.
        mode: one of ``imgrec.core.choices.TTA_MODES``.

    Raises:
        SpecError: an unknown ``mode``.
    """
    views = tta_views(batch, mode)
    if mode == "none":
        return forward(batch)
    total = np.zeros(0, np.float32)
    for index, (weight, view) in enumerate(views):
        probabilities = np.asarray(forward(np.ascontiguousarray(view)), dtype=np.float32)
        total = weight * probabilities if index == 0 else total + weight * probabilities
    return total
