"""How each model wants its pixels: resize, crop, scale, and normalise.

Preprocessing follows where a model's weights came from, not its architecture:
torchvision's weights expect "resize the short side to 256, centre-crop 224, scale to
[0, 1], subtract the ImageNet mean and divide by its standard deviation", while
Keras's own weights expect the ``preprocess_input`` of their application module.
A ``Preprocessing`` is plain data, so it can travel inside a saved model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

ResizeMode = Literal["stretch", "short_side"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Keras's "caffe" mode: BGR channels minus the ImageNet mean on the 0-255 scale.
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)


@dataclass(frozen=True)
class Preprocessing:
    """A model's input recipe.

    Args:
        size: the model's input height and width.
        resize: ``"stretch"`` resizes straight to ``size`` (as Keras's ``load_img``
            does); ``"short_side"`` resizes the short side to ``resize_to`` keeping the
            aspect ratio, then centre-crops ``size`` (as torchvision does).
        resize_to: the short side before the centre crop, for ``"short_side"``.
        scale: pixels (0-255) are multiplied by this first.
        mean: subtracted per channel after scaling.
        std: divided per channel after subtracting the mean.
        bgr: reverse the channels to BGR before normalising (Keras's "caffe" mode).
        name: a short label for people (``"torchvision"``, ``"keras:caffe"``, ...).
    """

    size: tuple[int, int]
    resize: ResizeMode = "stretch"
    resize_to: int | None = None
    scale: float = 1.0
    mean: tuple[float, ...] = (0.0, 0.0, 0.0)
    std: tuple[float, ...] = (1.0, 1.0, 1.0)
    bgr: bool = False
    name: str = "custom"

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if self.resize == "short_side" and not self.resize_to:
            raise ValueError("resize='short_side' needs resize_to")

    def to_config(self) -> dict[str, Any]:
        """Plain JSON-ready data."""
        return asdict(self)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Preprocessing:
        return cls(**config)

    def resize_and_crop(self, image: np.ndarray) -> np.ndarray:
        """Bring one uint8 ``H x W x C`` image to ``size``; still uint8."""
        pil = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
        (new_w, new_h), (left, top) = self._resize_geometry(pil.height, pil.width)
        if pil.size != (new_w, new_h):
            pil = pil.resize((new_w, new_h), Image.Resampling.BILINEAR)
        height, width = self.size
        if (new_w, new_h) != (width, height):
            pil = pil.crop((left, top, left + width, top + height))
        out = np.asarray(pil)
        return out[..., None] if out.ndim == 2 else out

    def source_box(self, height: int, width: int) -> tuple[float, float, float, float]:
        """The part of a ``height x width`` photo that ``resize_and_crop`` keeps.

        Maps results computed on the model's input (a Class Activation Map, a box)
        back onto the photo: the model's input is this box, resized to ``size``.

        Returns:
            ``(left, top, right, bottom)`` in the photo's pixel coordinates (floats;
            the whole photo is ``(0, 0, width, height)``).
        """
        (new_w, new_h), (left, top) = self._resize_geometry(height, width)
        crop_h, crop_w = self.size
        x_scale, y_scale = width / new_w, height / new_h
        return (
            left * x_scale,
            top * y_scale,
            (left + crop_w) * x_scale,
            (top + crop_h) * y_scale,
        )

    def _resize_geometry(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int]]:
        """The resized ``(width, height)`` of a photo, and the crop's ``(left, top)`` in it."""
        out_h, out_w = self.size
        if self.resize != "short_side":
            return (out_w, out_h), (0, 0)
        ratio = self.resize_to / min(height, width)
        new_w = max(out_w, round(width * ratio))
        new_h = max(out_h, round(height * ratio))
        return (new_w, new_h), (round((new_w - out_w) / 2), round((new_h - out_h) / 2))

    def normalize(self, batch: np.ndarray) -> np.ndarray:
        """Turn uint8 pixels (``... x C``) into the float32 values the model expects."""
        x = batch.astype(np.float32)
        if self.bgr:
            x = x[..., ::-1]
        x *= np.float32(self.scale)
        x -= np.asarray(self.mean, dtype=np.float32)[: x.shape[-1]]
        x /= np.asarray(self.std, dtype=np.float32)[: x.shape[-1]]
        return x

    def __call__(self, images: list[np.ndarray]) -> np.ndarray:
        """Resize, crop and normalise uint8 images into one float32 batch."""
        return self.normalize(np.stack([self.resize_and_crop(im) for im in images]))


def torchvision_imagenet(size: int = 224, resize_to: int = 256) -> Preprocessing:
    """torchvision's ImageNet recipe: short side to 256, centre crop, mean/std."""
    return Preprocessing(
        size=(size, size),
        resize="short_side",
        resize_to=resize_to,
        scale=1 / 255,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        name="torchvision",
    )


def keras_imagenet(mode: str, size: int) -> Preprocessing:
    """The ``preprocess_input`` of a Keras application, as data.

    Args:
        mode: ``"caffe"`` (VGG, ResNet), ``"tf"`` (scale to [-1, 1]: Xception,
            Inception, MobileNet, ResNetV2), ``"torch"`` (DenseNet) or ``"none"``
            (EfficientNet, whose model rescales its own input).
        size: the model's input height and width.
    """
    common = {"size": (size, size), "resize": "stretch", "name": f"keras:{mode}"}
    if mode == "caffe":
        return Preprocessing(mean=CAFFE_MEAN_BGR, bgr=True, **common)
    if mode == "tf":
        return Preprocessing(scale=1 / 127.5, mean=(1.0, 1.0, 1.0), **common)
    if mode == "torch":
        return Preprocessing(scale=1 / 255, mean=IMAGENET_MEAN, std=IMAGENET_STD, **common)
    if mode == "none":
        return Preprocessing(**common)
    raise ValueError(f"unknown Keras preprocessing mode {mode!r}")
