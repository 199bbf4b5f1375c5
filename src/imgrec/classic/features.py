"""Hand-made image features, the traditional pipeline's first stage: HOG, LBP, histograms.

Each feature turns one uint8 image (H x W x 1 or H x W x 3) into a fixed-length
float vector; several features are concatenated in the order given. Extraction runs
in worker processes, in chunks, with a progress bar: on small images (28 x 28) most of
the time goes to Python-level work per image, which holds the GIL, so threads would
take turns on one core.

- ``hog``: histograms of oriented gradients (Dalal and Triggs), scikit-image's
  ``hog`` with L2-Hys block normalisation; on colour images each pixel's gradient is
  that of its strongest channel. ``hog:sqrt=1`` takes the square root of each pixel
  first (scikit-image's ``transform_sqrt``).
- ``lbp``: uniform local binary patterns of the grey image (rotation-variant
  ``"uniform"`` codes, points + 2 values), one normalised histogram per region of a
  grid x grid layout, so the vector keeps where the textures are.
- ``color-hist``: one histogram per channel (one for grey images), normalised.
- ``raw``: the pixels scaled to 0-1, optionally resized first.
"""

from __future__ import annotations

import os
import sys

import numpy as np

from imgrec.classic.spec import FEATURES, Part, with_defaults
from imgrec.core.errors import SpecError
from imgrec.datasets.base import grey, resize

# Images per task sent to a worker process: large enough that sending them costs
# little next to the work, small enough for a smooth progress bar.
CHUNK = 500

# HOG aims at about this many cells across the image's shorter side.
_HOG_CELLS_ACROSS = 7


def resolve_features(
    parts: tuple[Part, ...], image_shape: tuple[int, int, int]
) -> tuple[Part, ...]:
    """``parts`` with every option filled in for images of ``image_shape``, and checked.

    A saved model stores the resolved parts, so the features it is given later are the
    ones it was trained on even if a default here changes.

    Args:
        parts: features as ``parse_features`` returns them.
        image_shape: (height, width, channels) of the images.

    Returns:
        The parts with all their options.

    Raises:
        SpecError: an option that does not fit images of this size (a HOG cell or
            block larger than the image, more LBP regions than pixels).
    """
    height, width, _ = image_shape
    side = min(height, width)
    resolved = []
    for part in parts:
        if part.name == "hog":
            cell = int(np.clip(side // _HOG_CELLS_ACROSS, 2, 8))
            part = with_defaults(part, FEATURES, {"cell": min(cell, side)})
            cell, block = part.option("cell"), part.option("block")
            if side // cell < block:
                raise SpecError(
                    f"feature {part}: a block of {block} x {block} cells of {cell} pixels does "
                    f"not fit in {height} x {width} images; use a smaller cell or block"
                )
        elif part.name == "lbp":
            radius = part.option("radius") or FEATURES["lbp"]["radius"][1]
            part = with_defaults(part, FEATURES, {"points": 8 * radius})
            if part.option("grid") > side:
                raise SpecError(
                    f"feature {part}: a grid of {part.option('grid')} regions per side does "
                    f"not fit in {height} x {width} images"
                )
        else:
            part = with_defaults(part, FEATURES)
        resolved.append(part)
    return tuple(resolved)


def extract_features(
    images: np.ndarray,
    features: tuple[Part, ...],
    *,
    jobs: int | None = None,
    progress: bool = True,
) -> np.ndarray:
    """The feature vectors of a batch of images, one row per image.

    Args:
        images: uint8, N x H x W x C with C = 1 or 3 (a data set split; a memory map
            is fine).
        features: resolved parts (see ``resolve_features``).
        jobs: worker processes; None means one per core. Small batches run in this
            process, where starting workers would cost more than it saves.
        progress: show a progress bar on stderr.

    Returns:
        float32, N x D.

    Raises:
        ValueError: ``images`` is not a uint8 N x H x W x 1 or 3 array.
    """
    images = np.asanyarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
        raise ValueError(
            f"expected uint8 images, N x H x W x 1 or 3, got {images.dtype} {images.shape}"
        )
    from joblib import Parallel, delayed
    from tqdm import tqdm

    starts = range(0, len(images), CHUNK)
    workers = min(jobs or os.cpu_count() or 1, len(starts))
    bar = tqdm(
        total=len(images), desc="Features", unit="img", file=sys.stderr, disable=not progress
    )
    rows = []
    with bar:
        if workers <= 1:
            for start in starts:
                rows.append(_extract_chunk(images[start : start + CHUNK], features))
                bar.update(len(rows[-1]))
        else:
            run = Parallel(n_jobs=workers, return_as="generator")
            tasks = (
                delayed(_extract_chunk)(np.array(images[start : start + CHUNK]), features)
                for start in starts
            )
            for chunk in run(tasks):
                rows.append(chunk)
                bar.update(len(chunk))
    if not rows:
        return np.zeros((0, feature_length(features, images.shape[1:])), dtype=np.float32)
    return np.concatenate(rows)


def feature_length(features: tuple[Part, ...], image_shape: tuple[int, int, int]) -> int:
    """The length of the vector ``features`` give for one image of ``image_shape``."""
    blank = np.zeros(image_shape, dtype=np.uint8)
    return len(_extract_one(blank, features))


def _extract_chunk(images: np.ndarray, features: tuple[Part, ...]) -> np.ndarray:
    return np.stack([_extract_one(image, features) for image in images])


def _extract_one(image: np.ndarray, features: tuple[Part, ...]) -> np.ndarray:
    return np.concatenate([_EXTRACTORS[part.name](image, part) for part in features]).astype(
        np.float32, copy=False
    )


def _hog(image: np.ndarray, part: Part) -> np.ndarray:
    from skimage.feature import hog

    cell, block = part.option("cell"), part.option("block")
    colour = image.shape[-1] == 3
    return hog(
        image if colour else image[..., 0],
        orientations=part.option("orientations"),
        pixels_per_cell=(cell, cell),
        cells_per_block=(block, block),
        block_norm="L2-Hys",
        transform_sqrt=bool(part.option("sqrt")),
        channel_axis=-1 if colour else None,
        feature_vector=True,
    )


def _lbp(image: np.ndarray, part: Part) -> np.ndarray:
    from skimage.feature import local_binary_pattern

    points, radius, grid = part.option("points"), part.option("radius"), part.option("grid")
    luma = (grey(image) if image.shape[-1] == 3 else image)[..., 0]
    codes = local_binary_pattern(luma, points, radius, method="uniform").astype(np.int64)
    bins = points + 2  # "uniform": points + 1 uniform patterns, and one for all others
    histograms = []
    for rows in np.array_split(codes, grid, axis=0):
        for region in np.array_split(rows, grid, axis=1):
            counts = np.bincount(region.ravel(), minlength=bins)
            histograms.append(counts / max(region.size, 1))
    return np.concatenate(histograms)


def _color_hist(image: np.ndarray, part: Part) -> np.ndarray:
    bins = part.option("bins")
    pixels = image.shape[0] * image.shape[1]
    return np.concatenate(
        [
            np.histogram(image[..., c], bins=bins, range=(0, 256))[0] / pixels
            for c in range(image.shape[-1])
        ]
    )


def _raw(image: np.ndarray, part: Part) -> np.ndarray:
    size = part.option("size")
    if size is not None:
        image = resize(image, (size, size))
    return image.ravel() / 255.0


_EXTRACTORS = {"hog": _hog, "lbp": _lbp, "color-hist": _color_hist, "raw": _raw}
