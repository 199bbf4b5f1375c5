"""Find the object a classifier recognised: a box and a mask from its Class Activation Map.

Weakly supervised localisation after Zhou et al., "Learning Deep Features for
Discriminative Localization", CVPR 2016 (section 3.1): keep the part of the map above
a fraction of its maximum (20 % in the paper), take the largest connected region, and
its bounding box. The network never saw a box during training; the class label alone
taught it where to look.

The map is computed on the model's input (the photo resized and, for torchvision's
preprocessing, centre-cropped); the box and the mask are mapped back onto the
original photo. Parts of the photo the model never saw (outside the crop) are never
part of the mask.
"""

from __future__ import annotations

import json
import os
from io import BytesIO
from pathlib import Path

import keras
import numpy as np
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from imgrec.core.errors import SpecError
from imgrec.core.storage import write_bytes_atomic
from imgrec.explanation.cam import class_activation_map, read_image
from imgrec.models.loading import load_model
from imgrec.models.metadata import model_info

DEFAULT_THRESHOLD = 0.2
MASK_TINT = (255, 40, 40)
MASK_OPACITY = 0.35
BOX_COLOUR = (255, 220, 0)
# 8-connectivity: pixels touching at a corner belong to the same region.
_NEIGHBOURS = np.ones((3, 3), dtype=bool)


def localize(
    model: str | os.PathLike | keras.Model,
    image: str | os.PathLike | np.ndarray,
    *,
    method: str = "gradcam",
    threshold: float = DEFAULT_THRESHOLD,
    class_index: int | None = None,
    out: str | os.PathLike | None = None,
) -> dict:
    """Box and mask of the region that made the model answer a class, on the photo.

    The API behind ``imgrec localize``.

    Args:
        model: a zoo name, a ``.keras`` file, or a model from ``imgrec.load_model``.
        image: an image file, or a decoded uint8 photo (``H x W x 3`` or ``x 1``).
        method: the CAM method: ``"cam"``, ``"gradcam"`` or ``"gradcam++"``.
        threshold: the fraction of the map's maximum a pixel must reach, above 0
            and at most 1 (0.2 in Zhou et al.).
        class_index: the class to localise (default: the model's top class).
        out: a folder to write ``localization.png`` (the photo with the mask tinted
            and the box drawn), ``mask.png`` (the mask at the photo's size, white on
            black) and ``localization.json`` (this function's result).

    Returns:
        JSON-ready: ``image``, ``model``, ``method``, ``layer``, ``class``,
        ``index``, ``probability``, ``threshold``, ``photo_size`` (``[width,
        height]``), ``box`` (``[left, top, right, bottom]`` in the photo's pixels,
        right and bottom exclusive; ``None`` when the map is zero everywhere),
        ``mask_fraction`` (the region's share of the photo), and the written files
        (``localization_png``, ``mask_png``, ``json``) when ``out`` is given.

    Raises:
        SpecError: ``threshold`` outside (0, 1].
        ModelError, WeightsError, ImageError: as ``imgrec.explanation.cam.explain`` raises them.
    """
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not (0 < threshold <= 1)
    ):
        raise SpecError(f"threshold must be above 0 and at most 1, got {threshold!r}")
    if not isinstance(model, keras.Model):
        model = load_model(model)
    label, photo = read_image(model, image)
    explanation = class_activation_map(model, photo, method=method, class_index=class_index)

    height, width = photo.shape[:2]
    box_on_photo = model_info(model).preprocessing.source_box(height, width)
    heatmap = map_onto_photo(explanation.heatmap, box_on_photo, height, width)
    mask = largest_region(heatmap >= threshold * heatmap.max()) if heatmap.max() > 0 else None
    box = bounding_box(mask) if mask is not None else None
    result = {
        "image": label,
        "model": model_info(model).name,
        "method": explanation.method,
        "layer": explanation.layer,
        "class": explanation.class_name,
        "index": explanation.class_index,
        "probability": explanation.probability,
        "threshold": float(threshold),
        "photo_size": [width, height],
        "box": box,
        "mask_fraction": float(mask.mean()) if mask is not None else 0.0,
    }
    if out is not None:
        if mask is None:
            mask = np.zeros((height, width), dtype=bool)
        rgb = np.repeat(photo, 3, axis=-1) if photo.shape[-1] == 1 else photo
        result |= _write(Path(out), rgb, mask, box, explanation, result)
    return result


def map_onto_photo(
    heatmap: np.ndarray, source_box: tuple[float, float, float, float], height: int, width: int
) -> np.ndarray:
    """Place a map computed on the model's input onto the photo it was cut from.

    Args:
        heatmap: float32 ``h x w``, on the model's input.
        source_box: ``(left, top, right, bottom)``: the part of the photo the model's
            input shows (``Preprocessing.source_box``).
        height: the photo's height.
        width: the photo's width.

    Returns:
        float32 ``height x width``: the map resized onto the box, 0 outside it.
    """
    left, top, right, bottom = (round(v) for v in source_box)
    resized = np.asarray(
        Image.fromarray(np.asarray(heatmap, dtype=np.float32)).resize(
            (right - left, bottom - top), Image.Resampling.BILINEAR
        ),
        dtype=np.float32,
    )
    placed = np.zeros((height, width), dtype=np.float32)
    # A box rounded outward by a pixel would fall off the photo's edge: clip it.
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(bottom, height), min(right, width)
    placed[y0:y1, x0:x1] = resized[y0 - top : y1 - top, x0 - left : x1 - left]
    return placed


def largest_region(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected region of a boolean mask (all False for an empty mask)."""
    labels, count = ndimage.label(mask, structure=_NEIGHBOURS)
    if count == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())[1:]
    return labels == 1 + int(np.argmax(sizes))


def bounding_box(mask: np.ndarray) -> list[int] | None:
    """``[left, top, right, bottom]`` of a boolean mask's pixels (right, bottom exclusive)."""
    rows = np.flatnonzero(mask.any(axis=1))
    columns = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return [int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1]


def _write(
    folder: Path, photo: np.ndarray, mask: np.ndarray, box: list[int] | None, explanation, result
) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "localization_png": folder / "localization.png",
        "mask_png": folder / "mask.png",
        "json": folder / "localization.json",
    }
    caption = f"{explanation.class_name} {explanation.probability:.0%}"
    _write_png(files["localization_png"], _draw(photo, mask, box, caption))
    _write_png(files["mask_png"], Image.fromarray(mask.astype(np.uint8) * 255))
    written = {key: str(path) for key, path in files.items()}
    write_bytes_atomic(files["json"], json.dumps(result | written, indent=2).encode())
    return written


def _draw(photo: np.ndarray, mask: np.ndarray, box: list[int] | None, caption: str) -> Image.Image:
    tinted = photo.astype(np.float32)
    tinted[mask] = (1 - MASK_OPACITY) * tinted[mask] + MASK_OPACITY * np.float32(MASK_TINT)
    picture = Image.fromarray(np.rint(tinted).astype(np.uint8))
    if box is None:
        return picture
    draw = ImageDraw.Draw(picture)
    line = max(2, round(min(picture.size) / 150))
    left, top, right, bottom = box
    draw.rectangle((left, top, right - 1, bottom - 1), outline=BOX_COLOUR, width=line)
    font = ImageFont.load_default(size=max(12, round(min(picture.size) / 25)))
    text_box = draw.textbbox((left + line, top + line), caption, font=font)
    draw.rectangle(text_box, fill=BOX_COLOUR)
    draw.text((left + line, top + line), caption, fill=(0, 0, 0), font=font)
    return picture


def _write_png(path: Path, picture: Image.Image) -> None:
    buffer = BytesIO()
    picture.save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())
