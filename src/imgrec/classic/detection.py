"""Find faces, eyes and cat faces in a photo with OpenCV's Haar cascades (Viola and Jones).

The cascades are the XML files that ship inside ``opencv-python-headless`` 4.x
(``cv2.data.haarcascades``); OpenCV 5 dropped them, hence the pinned version. A
cascade slides a 24 x 24 window (20 x 20 for eyes) over the grey image at every scale
and keeps the windows that pass all its stages; ``min_neighbors`` overlapping hits are
needed for a detection, which trades missed objects for false ones.

Cascades look for a whole frontal face. A face cut by the frame, as in close-ups, is
found in part or not at all: in scikit-image's ``chelsea`` the cat's face fills the
photo and its ears are cut off, and the cat-face cascade finds its lower half (nose,
mouth and chin). Cascades also find faces in faceless textures now and then (in
scikit-learn's ``flower.jpg``): they are fast and need no GPU, not exact.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from imgrec.core.errors import ModelError
from imgrec.core.images import image_from_array, load_image
from imgrec.core.storage import atomic_path

if TYPE_CHECKING:
    import cv2

#: Detector name -> the cascade file in ``cv2.data.haarcascades``.
DETECTORS = {
    "face": "haarcascade_frontalface_default.xml",
    "eyes": "haarcascade_eye.xml",
    # The extended cascade also uses rotated Haar features: on cat photos it finds
    # faces the plain one misses.
    "cat-face": "haarcascade_frontalcatface_extended.xml",
}

_BOX_COLOUR = (255, 40, 40)


def detect(
    image: str | os.PathLike | bytes | np.ndarray,
    detector: str = "face",
    *,
    out: str | os.PathLike | None = None,
    scale_factor: float = 1.1,
    min_neighbors: int = 3,
    min_size: int = 24,
) -> dict[str, Any]:
    """Find the objects of one kind in a photo; optionally draw their boxes on a PNG.

    Args:
        image: an image file, its bytes (an upload), or a uint8 array (H x W, or
            H x W x 1, 3 or 4). Files are read with ``imgrec.core.images.load_image``
            (format sniffed, pixel cap, EXIF orientation).
        detector: ``"face"``, ``"eyes"`` or ``"cat-face"``.
        out: a PNG to write: the photo with a box around each detection.
        scale_factor: how much the window grows from one scale to the next; closer
            to 1 is slower and finds more.
        min_neighbors: overlapping hits needed to keep a detection; higher gives
            fewer false detections and more missed ones.
        min_size: the smallest box side, in pixels.

    Returns:
        ``image`` (its name), ``detector``, ``width`` and ``height`` of the photo,
        ``boxes`` (each ``x``, ``y``, ``width``, ``height`` in pixels of the upright
        photo, largest first), ``seconds`` (the cascade's time) and ``out`` (the PNG
        written, or None).

    Raises:
        ModelError: an unknown detector, or a cascade file missing from OpenCV.
        ImageError: the image cannot be read.
        ValueError: ``scale_factor`` not above 1, ``min_neighbors`` below 0 or
            ``min_size`` below 1.
    """
    cascade = load_cascade(detector)
    if not scale_factor > 1:
        raise ValueError(f"scale_factor must be above 1, got {scale_factor}")
    if min_neighbors < 0:
        raise ValueError(f"min_neighbors must be 0 or more, got {min_neighbors}")
    if min_size < 1:
        raise ValueError(f"min_size must be at least 1, got {min_size}")
    import cv2

    if isinstance(image, np.ndarray):
        name, rgb = "array", image_from_array(image)
    else:
        name = "<bytes>" if isinstance(image, bytes | bytearray) else os.fspath(image)
        rgb = load_image(image)
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    start = time.perf_counter()
    found = cascade.detectMultiScale(
        grey, scaleFactor=scale_factor, minNeighbors=min_neighbors, minSize=(min_size, min_size)
    )
    seconds = time.perf_counter() - start
    boxes = sorted(
        ({"x": int(x), "y": int(y), "width": int(w), "height": int(h)} for x, y, w, h in found),
        key=lambda box: (-box["width"] * box["height"], box["y"], box["x"]),
    )
    written = None if out is None else str(draw_boxes(rgb, boxes, out))
    return {
        "image": name,
        "detector": detector,
        "width": int(rgb.shape[1]),
        "height": int(rgb.shape[0]),
        "boxes": boxes,
        "seconds": seconds,
        "out": written,
    }


def load_cascade(detector: str) -> cv2.CascadeClassifier:
    """OpenCV's ``CascadeClassifier`` for ``detector`` (a name of ``DETECTORS``).

    Raises:
        ModelError: an unknown name, or OpenCV without its cascade files.
    """
    if detector not in DETECTORS:
        raise ModelError(f"unknown detector {detector!r}; detectors: {', '.join(DETECTORS)}")
    import cv2

    path = Path(cv2.data.haarcascades) / DETECTORS[detector]
    cascade = cv2.CascadeClassifier(str(path))
    if cascade.empty():
        raise ModelError(
            f"{path}: OpenCV's Haar cascade for {detector!r} is missing or unreadable; "
            "it ships with opencv-python-headless 4.x (pip install "
            "'opencv-python-headless==4.14.0.94')"
        )
    return cascade


def draw_boxes(rgb: np.ndarray, boxes: list[dict[str, int]], out: str | os.PathLike) -> Path:
    """Write ``rgb`` (uint8 H x W x 3) as a PNG with a rectangle around each box; atomic."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(rgb)
    pen = ImageDraw.Draw(picture)
    width = max(2, round(min(rgb.shape[:2]) / 200))
    for box in boxes:
        x, y = box["x"], box["y"]
        pen.rectangle(
            (x, y, x + box["width"] - 1, y + box["height"] - 1), outline=_BOX_COLOUR, width=width
        )
    out = Path(out)
    with atomic_path(out) as tmp:
        picture.save(tmp, format="PNG")
    return out
