"""The photo the CAM and localisation tests ask about, and where its cat is.

scikit-image's ``chelsea.png`` (451 x 300) is a close-up: the cat fills the photo but
for a strip of blurred room on the right, and torchvision's preprocessing (short side
to 256, centre crop 224) keeps only its middle, all of it cat. "Is the map larger on
the cat than beside it?" cannot be asked of that crop. So the tests ask it of a
composite: chelsea at its own size above scikit-image's ``coffee.png`` (resized to
the same 451 x 300), centred on a 600 x 600 grey canvas. The centre crop keeps all
but the outer 37.5 pixels, so the model sees the cat's face, the espresso cup, and
grey margins, and each class has a place of its own.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from imgrec.core.images import load_image
from imgrec.core.samples import sample_path

# The cat in chelsea.png, (left, top, right, bottom), right and bottom exclusive,
# annotated by eye on the photo for these tests: the cat's shoulder and chest reach the
# left edge, its ears the top edge and its chest the bottom edge; right of x = 400
# (past the right ear's tip) there is only the blurred room.
CHELSEA_CAT_BOX = (0, 0, 400, 300)

CANVAS = 600
GREY = (128, 128, 128)
TILE = (451, 300)  # chelsea's size; coffee is resized to it
TILE_LEFT = (CANVAS - TILE[0]) // 2  # 74: the tiles are centred horizontally
# Where the two photos lie on the canvas.
CAT_BOX = (
    TILE_LEFT + CHELSEA_CAT_BOX[0],
    CHELSEA_CAT_BOX[1],
    TILE_LEFT + CHELSEA_CAT_BOX[2],
    CHELSEA_CAT_BOX[3],
)
COFFEE_BOX = (TILE_LEFT, TILE[1], TILE_LEFT + TILE[0], 2 * TILE[1])

EGYPTIAN_CAT = 285
ESPRESSO = 967


def cat_above_coffee() -> np.ndarray:
    """The 600 x 600 composite, uint8 RGB."""
    canvas = Image.new("RGB", (CANVAS, CANVAS), GREY)
    cat = Image.fromarray(load_image(sample_path("chelsea")))
    coffee = Image.fromarray(load_image(sample_path("coffee")))
    assert cat.size == TILE
    canvas.paste(cat, (TILE_LEFT, 0))
    canvas.paste(coffee.resize(TILE, Image.Resampling.LANCZOS), (TILE_LEFT, TILE[1]))
    return np.asarray(canvas)


def box_mask_on_input(
    box: tuple[int, int, int, int],
    source_box: tuple[float, float, float, float],
    size: tuple[int, int],
) -> np.ndarray:
    """Which pixels of the model's input show the photo's ``box``.

    Args:
        box: ``(left, top, right, bottom)`` on the photo.
        source_box: the part of the photo the model's input shows
            (``Preprocessing.source_box``).
        size: the model input's ``(height, width)``.
    """
    height, width = size
    left, top, right, bottom = source_box
    # Each input pixel's centre, in the photo's coordinates.
    x = left + (np.arange(width) + 0.5) * (right - left) / width
    y = top + (np.arange(height) + 0.5) * (bottom - top) / height
    inside_x = (x >= box[0]) & (x < box[2])
    inside_y = (y >= box[1]) & (y < box[3])
    return inside_y[:, np.newaxis] & inside_x[np.newaxis, :]


def iou(a: tuple[int, ...] | list[int], b: tuple[int, ...] | list[int]) -> float:
    """Intersection over union of two ``(left, top, right, bottom)`` boxes."""
    width = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    height = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    overlap = width * height
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1])
    return overlap / (area - overlap)
