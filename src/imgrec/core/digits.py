"""MNIST's own preprocessing of a handwritten digit: crop, fit into 20 x 20, centre by mass.

The MNIST digits were made so (LeCun, Cortes and Burges): each NIST digit was
"size normalized to fit in a 20x20 pixel box while preserving [its] aspect ratio",
which left grey levels from anti-aliasing, then "centered in a 28x28 image by
computing the center of mass of the pixels, and translating the image so as to
position this point at the center of the 28x28 field". A network trained on MNIST
reads a drawing well only after the same treatment, which ``mnist_digit`` gives.

The choices MNIST's description leaves open, made here (and, step for step, in the
page's ``static/demos/draw_preprocess.js``, which a test holds to this function):

- ink is ``255 - grey`` (dark strokes on light paper; the page draws black on white);
  the bounding box is that of every pixel with any ink (> 0);
- the box is scaled so that its longer side becomes exactly 20 pixels, the shorter
  one ``floor(side * 20 / longer + 0.5)`` (at least 1), by area averaging: each new
  pixel is the mean of the old pixels under it, weighted by how much of each it
  covers (the same filter for shrinking and, for a tiny drawing, enlarging); values
  are rounded to whole grey levels (``floor(v + 0.5)``), as MNIST's bytes are;
- the centre of mass is that of the rounded 20 x 20 picture, in pixel-centre
  coordinates (pixel ``i`` sits at ``i + 0.5``); the picture moves by whole pixels,
  ``floor(14 - centre + 0.5)`` on each axis, so that its centre of mass lands
  within half a pixel of the 28 x 28 field's centre (14, 14); what would fall
  outside the field is cut off;
- a drawing without ink gives 28 x 28 zeros.

Every step but the area averaging is exact in floating point (sums of whole
numbers), so the Python and JavaScript versions agree to the grey level except
where an averaged value lands within rounding error of a half.
"""

from __future__ import annotations

import math

import numpy as np

from imgrec.core.errors import ImageError

MNIST_SIZE = 28
MNIST_BOX = 20


def ink_from_grey(grey: np.ndarray) -> np.ndarray:
    """Ink from a grey picture of dark strokes on light paper: ``255 - grey``.

    Args:
        grey: uint8, ``H x W`` or ``H x W x 1`` (``load_image(..., mode="L")``).

    Raises:
        ImageError: not a uint8 grey picture.
    """
    grey = np.asarray(grey)
    if grey.ndim == 3 and grey.shape[-1] == 1:
        grey = grey[..., 0]
    if grey.dtype != np.uint8 or grey.ndim != 2:
        raise ImageError(
            f"a drawing must be uint8 H x W grey pixels, got {grey.dtype} {grey.shape}"
        )
    return 255 - grey


def mnist_digit(ink: np.ndarray) -> np.ndarray:
    """A drawing as an MNIST digit: cropped, fitted into 20 x 20, centred by mass in 28 x 28.

    Args:
        ink: ``H x W`` ink levels, 0 (paper) to 255 (full ink), any numeric dtype;
            a canvas of dark strokes on white gives it through ``ink_from_grey``.

    Returns:
        uint8 ``28 x 28``, ink bright on black as in MNIST (the module docstring
        states each step).

    Raises:
        ImageError: ``ink`` is not a 2-D array of numbers from 0 to 255.
    """
    ink = np.asarray(ink)
    if ink.ndim != 2 or ink.size == 0 or not np.issubdtype(ink.dtype, np.number):
        raise ImageError(f"a drawing's ink must be a non-empty H x W array, got {ink.shape}")
    low, high = ink.min(), ink.max()
    if low < 0 or high > 255:
        raise ImageError(f"ink levels must lie in 0-255, got {low} to {high}")
    out = np.zeros((MNIST_SIZE, MNIST_SIZE), dtype=np.uint8)
    inked = ink > 0
    rows = np.flatnonzero(inked.any(axis=1))
    cols = np.flatnonzero(inked.any(axis=0))
    if rows.size == 0:
        return out
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].astype(np.float64)
    height, width = crop.shape
    longer = max(height, width)
    new_height = max(1, math.floor(height * MNIST_BOX / longer + 0.5))
    new_width = max(1, math.floor(width * MNIST_BOX / longer + 0.5))
    fitted = area_weights(height, new_height) @ crop @ area_weights(width, new_width).T
    fitted = np.clip(np.floor(fitted + 0.5), 0, 255)
    total = fitted.sum()
    if total == 0:
        return out
    centre_y = float(fitted.sum(axis=1) @ (np.arange(new_height) + 0.5)) / total
    centre_x = float(fitted.sum(axis=0) @ (np.arange(new_width) + 0.5)) / total
    top = math.floor(MNIST_SIZE / 2 - centre_y + 0.5)
    left = math.floor(MNIST_SIZE / 2 - centre_x + 0.5)
    # The part of the fitted picture that lands inside the field.
    y0, x0 = max(0, -top), max(0, -left)
    y1, x1 = min(new_height, MNIST_SIZE - top), min(new_width, MNIST_SIZE - left)
    if y1 > y0 and x1 > x0:
        out[top + y0 : top + y1, left + x0 : left + x1] = fitted[y0:y1, x0:x1]
    return out


def area_weights(size: int, new_size: int) -> np.ndarray:
    """The ``new_size x size`` matrix that resamples one axis by area averaging.

    Row ``i`` covers ``[i * size / new_size, (i + 1) * size / new_size)`` of the old
    axis; its weight for old pixel ``k`` is the length of ``[k, k + 1)`` inside that
    span times ``new_size / size``, so each row sums to 1.
    """
    weights = np.zeros((new_size, size), dtype=np.float64)
    for i in range(new_size):
        start = i * size / new_size
        end = (i + 1) * size / new_size
        for k in range(math.floor(start), min(size, math.ceil(end))):
            overlap = min(k + 1, end) - max(k, start)
            if overlap > 0:
                weights[i, k] = overlap * new_size / size
    return weights
