"""Class Activation Maps: where in a photo a network found the evidence for a class.

Three methods, all computed on the last convolutional feature map ``A`` (``h x w x C``)
for one class ``c``, kept where positive, upsampled to the model's input size and
scaled to [0, 1]:

- ``cam``: Zhou et al., "Learning Deep Features for Discriminative Localization",
  CVPR 2016. For networks that end in global average pooling and one Dense layer,
  the class score is the average of ``sum_k w[k, c] A[..., k]`` plus a bias, so that
  weighted sum is the map. No gradients. For networks whose last convolution makes
  one map per class and that end in global average pooling alone (SqueezeNet, NiN),
  the class score is the average of ``A[..., c]``, so that channel is the map.
- ``gradcam``: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks
  via Gradient-based Localization", ICCV 2017. Any CNN: the channels are weighted by
  the spatial mean of the gradient of the class score. On a network of the ``cam``
  kind it gives the same map.
- ``gradcam++``: Chattopadhay et al., "Grad-CAM++: Generalized Gradient-based Visual
  Explanations for Deep Convolutional Networks", WACV 2018. Weights each location's
  positive gradient by a closed-form factor, so that several instances of a class
  each count. Its maps spread wider, and fail Adebayo et al.'s model-randomisation
  check more than Grad-CAM's do (with every weight of MobileNetV2 random, the map of
  chelsea keeps a rank correlation of 0.71 with the trained one; Grad-CAM's: -0.25).

The class score is the classifier's value before its softmax or sigmoid (the
papers' ``y^c``; the gradient of a probability near 1 vanishes) when the model ends
in a Dense layer or a softmax or sigmoid activation layer, else the model's output
(a sigmoid unit's score counts for the second class, its opposite for the first,
as ``class_probabilities`` makes two classes of it). Models are always
called with ``training=False``, so that augmentation and dropout layers stay off.
The feature map is found by itself (the last 4-D output before the classifier, also
inside a nested backbone) or named with ``layer=``.
"""

from __future__ import annotations

import functools
import os
import threading
import weakref
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
from PIL import Image

from imgrec.core.choices import CAM_METHODS, COLORMAPS
from imgrec.core.errors import ModelError, SpecError
from imgrec.core.images import image_from_array, load_image
from imgrec.core.plots import plot_image_grid
from imgrec.explanation.gradients import output_and_gradient
from imgrec.models.graph import (
    describe_candidates,
    resolve_layer,
    spatial_layers,
    split_model,
    walk_layers,
)
from imgrec.models.loading import load_model
from imgrec.models.metadata import class_probabilities, model_info

METHODS = CAM_METHODS

_CONVOLUTIONS = (
    keras.layers.Conv2D,
    keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv2D,
    keras.layers.Conv2DTranspose,
)
# Identity at inference: a map after them is the map before them.
_INFERENCE_IDENTITY = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianNoise,
    keras.layers.GaussianDropout,
    keras.layers.AlphaDropout,
)
# Skipped when the layer is found automatically: their maps are coarser copies.
_NOT_AUTOMATIC = (
    *_INFERENCE_IDENTITY,
    keras.layers.MaxPooling2D,
    keras.layers.AveragePooling2D,
    keras.layers.ZeroPadding2D,
)


@dataclass(frozen=True, eq=False)
class Explanation:
    """A Class Activation Map and what it explains.

    Args:
        method: ``"cam"``, ``"gradcam"`` or ``"gradcam++"``.
        layer: the path of the feature map's layer (``"out_relu"``,
            ``"backbone/out_relu"`` inside a nested model).
        class_index: the class explained.
        class_name: its name.
        probability: the model's probability for that class.
        heatmap: float32 in [0, 1], ``H x W``: the model input's height and width.
        image: uint8 ``H x W x 3``: the photo as the model saw it (resized and
            cropped), aligned pixel for pixel with ``heatmap``; grey is stacked to RGB.
    """

    method: str
    layer: str
    class_index: int
    class_name: str
    probability: float
    heatmap: np.ndarray
    image: np.ndarray


@dataclass(frozen=True)
class _Target:
    """A model cut at its feature map, ready for class scores."""

    layer: str
    features: keras.Model
    head: keras.Model
    classifier: keras.layers.Dense | None
    pooling_only: bool  # the head is global average pooling (and dropout) alone

    def scores(self, feature_map):
        """Class scores before the output activation, one column per class name."""
        x = self.head(feature_map, training=False)
        if self.classifier is not None:
            x = keras.ops.matmul(x, self.classifier.kernel)
            if self.classifier.bias is not None:
                x = x + self.classifier.bias
        # One sigmoid unit scores the second class; its opposite scores the first.
        return keras.ops.concatenate([-x, x], axis=-1) if x.shape[-1] == 1 else x


# Cutting a model rebuilds its graph (a few tenths of a second for MobileNetV2): keep
# the result per model and layer. The lock keeps two threads (a web server's) from
# adding nodes to the same layers at once.
_TARGETS: weakref.WeakKeyDictionary[keras.Model, dict[str | None, _Target]] = (
    weakref.WeakKeyDictionary()
)
_TARGETS_LOCK = threading.Lock()


def class_activation_map(
    model: keras.Model,
    image: np.ndarray,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    class_index: int | None = None,
) -> Explanation:
    """Explain a model's answer for one photo with a Class Activation Map.

    Args:
        model: a model imgrec loaded or built (it carries ``model_info``).
        image: a decoded uint8 photo, ``H x W x 3`` or ``H x W x 1`` (or ``H x W``),
            any size: it is resized and cropped as the model's preprocessing says.
        method: ``"cam"``, ``"gradcam"`` or ``"gradcam++"``.
        layer: the feature map's layer, by name or path (``"backbone/out_relu"``);
            default: the last layer with a 4-D output before the classifier.
        class_index: the class to explain; default: the model's top class.

    Returns:
        The ``Explanation``: the map and the photo at the model's input size.

    Raises:
        SpecError: unknown ``method``.
        ModelError: no imgrec metadata, no such layer (the message lists the
            candidates), a class index out of range, ``cam`` on a network that does
            not end in global average pooling and at most one Dense layer, or a backend
            that cannot differentiate.
        ImageError: ``image`` is not a uint8 image.
    """
    if method not in METHODS:
        raise SpecError(f"unknown CAM method {method!r}; methods: {', '.join(METHODS)}")
    info = model_info(model)
    mode = "L" if model.input_shape[-1] == 1 else "RGB"
    seen = info.preprocessing.resize_and_crop(image_from_array(image, mode=mode, name="image"))
    batch = info.preprocessing.normalize(seen[np.newaxis])

    classes = len(info.class_names)
    if class_index is not None:
        _check_class_index(model, classes, class_index)
    target = _target(model, layer)
    if method == "cam" and not target.pooling_only:
        raise ModelError(
            f"cam needs a network that ends in global average pooling and at most one "
            f"Dense layer, with the map that feeds the pooling; model {model.name!r} "
            f"{_ending(target)}; use gradcam or gradcam++"
        )
    # predict_on_batch calls the model with training=False, compiled once per model
    # and layer: later maps (a web page's) take a fraction of the first one's time.
    feature_map, outputs = target.features.predict_on_batch(batch)
    probabilities = class_probabilities(outputs)[0]
    index = int(np.argmax(probabilities)) if class_index is None else int(class_index)
    if method == "cam":
        weights = _cam_weights(target, feature_map.shape[-1])
        if weights.shape[-1] == 1:
            weights = np.concatenate([-weights, weights], axis=-1)
        low = feature_map[0] @ weights[:, index]
    else:
        _, gradient = output_and_gradient(target.scores, feature_map, index)
        low = _gradcam(feature_map[0], gradient[0], plus_plus=method == "gradcam++")

    height, width = seen.shape[:2]
    return Explanation(
        method=method,
        layer=target.layer,
        class_index=index,
        class_name=info.class_names[index],
        probability=float(probabilities[index]),
        heatmap=_upsample(np.maximum(low, 0), height, width),
        image=np.repeat(seen, 3, axis=-1) if seen.shape[-1] == 1 else seen,
    )


def colorize(heatmap: np.ndarray, colormap: str = "jet") -> np.ndarray:
    """Paint a map with a colormap.

    Args:
        heatmap: floats ``H x W``; values are clipped to [0, 1].
        colormap: one of ``COLORMAPS``.

    Returns:
        uint8 ``H x W x 3``.

    Raises:
        SpecError: unknown colormap.
        ValueError: ``heatmap`` is not 2-D or holds NaN or infinity.
    """
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be H x W, got shape {heatmap.shape}")
    if not np.all(np.isfinite(heatmap)):
        raise ValueError("heatmap holds NaN or infinite values")
    levels = np.rint(np.clip(heatmap, 0.0, 1.0) * 255).astype(np.intp)
    return _colormap_table(_check_colormap(colormap))[levels]


def overlay(
    image: np.ndarray, heatmap: np.ndarray, colormap: str = "jet", alpha: float = 0.5
) -> np.ndarray:
    """Blend a colorized map over a photo: ``(1 - alpha) * photo + alpha * colours``.

    Args:
        image: uint8 ``H x W x 3``, ``H x W x 1`` or ``H x W``.
        heatmap: floats in [0, 1], ``H x W`` (the same height and width as ``image``).
        colormap: one of ``COLORMAPS``.
        alpha: the map's weight, from 0 (photo only) to 1 (map only).

    Returns:
        uint8 ``H x W x 3``.

    Raises:
        SpecError: unknown colormap, or ``alpha`` outside [0, 1].
        ValueError: ``image`` is not uint8, or the sizes differ.
    """
    alpha = _check_alpha(alpha)
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must hold uint8 pixels, got {image.dtype}")
    if image.ndim == 2:
        image = image[..., np.newaxis]
    if image.ndim != 3 or image.shape[-1] not in (1, 3):
        raise ValueError(f"image must be H x W x 3 or H x W x 1, got shape {image.shape}")
    colours = colorize(heatmap, colormap)
    if colours.shape[:2] != image.shape[:2]:
        raise ValueError(
            f"heatmap is {colours.shape[0]} x {colours.shape[1]} but the image is "
            f"{image.shape[0]} x {image.shape[1]}"
        )
    blend = (1.0 - alpha) * image.astype(np.float32) + alpha * colours.astype(np.float32)
    return np.rint(blend).astype(np.uint8)


def explain(
    model: str | os.PathLike | keras.Model,
    image: str | os.PathLike | np.ndarray,
    *,
    method: str = "gradcam",
    layer: str | None = None,
    class_index: int | None = None,
    colormap: str = "jet",
    alpha: float = 0.5,
    out: str | os.PathLike | None = None,
) -> dict:
    """Explain a model's answer for one photo; optionally draw it as a PNG.

    The API behind ``imgrec explain``.

    Args:
        model: a zoo name, a ``.keras`` file, or a model from ``imgrec.load_model``.
        image: an image file, or a decoded uint8 photo (``H x W x 3`` or ``x 1``).
        method: ``"cam"``, ``"gradcam"`` or ``"gradcam++"``.
        layer: the feature map's layer (default: found by itself).
        class_index: the class to explain (default: the top class).
        colormap: one of ``COLORMAPS``, for the PNG.
        alpha: the map's weight in the overlay, from 0 to 1.
        out: a PNG to write: the photo as the model saw it, beside the overlay,
            under the class and its probability.

    Returns:
        JSON-ready: ``image`` (the path, or ``"array"``), ``model``, ``method``,
        ``layer``, ``class``, ``index``, ``probability``, and ``overlay_png`` (the
        PNG's path) when ``out`` is given.

    Raises:
        ModelError: as ``load_model`` raises it.
        WeightsError: as ``load_model`` raises it.
        ImageError: as ``load_image`` raises it.
        SpecError: as ``class_activation_map`` raises it, and for an unknown colormap
            or an ``alpha`` outside [0, 1] (checked before any work).
    """
    _check_colormap(colormap)
    _check_alpha(alpha)
    if not isinstance(model, keras.Model):
        model = load_model(model)
    label, pixels = read_image(model, image)
    explanation = class_activation_map(
        model, pixels, method=method, layer=layer, class_index=class_index
    )
    result = {
        "image": label,
        "model": model_info(model).name,
        "method": explanation.method,
        "layer": explanation.layer,
        "class": explanation.class_name,
        "index": explanation.class_index,
        "probability": explanation.probability,
    }
    if out is not None:
        path = plot_image_grid(
            [explanation.image, overlay(explanation.image, explanation.heatmap, colormap, alpha)],
            out,
            titles=["as the model sees it", f"{explanation.method} on {explanation.layer}"],
            columns=2,
            title=f"{explanation.class_name}: {explanation.probability:.1%}",
        )
        result["overlay_png"] = str(path)
    return result


def feature_map_candidates(model: keras.Model) -> list[str]:
    """Paths of the layers a CAM can use: 4-D outputs from the first convolution on."""
    layers = dict(walk_layers(model))
    paths = spatial_layers(model)
    first = next((i for i, p in enumerate(paths) if isinstance(layers[p], _CONVOLUTIONS)), None)
    return [] if first is None else paths[first:]


def read_image(model: keras.Model, image: str | os.PathLike | np.ndarray) -> tuple[str, np.ndarray]:
    """A photo for ``model``: a file decoded in the model's colour mode, or an array as is.

    Returns:
        ``(label, pixels)``: the path (or ``"array"``) for reports, and the pixels
        (uint8; a file is decoded grey, ``H x W x 1``, for a one-channel model).

    Raises:
        ImageError: the file cannot be read as an image.
    """
    if isinstance(image, np.ndarray):
        return "array", image
    mode = "L" if model.input_shape[-1] == 1 else "RGB"
    return str(image), load_image(Path(image), mode=mode)


def _check_class_index(model: keras.Model, classes: int, class_index: object) -> None:
    if (
        isinstance(class_index, bool)
        or not isinstance(class_index, int | np.integer)
        or not 0 <= class_index < classes
    ):
        raise ModelError(
            f"class index must be an integer from 0 to {classes - 1} for model "
            f"{model.name!r} ({classes} classes), got {class_index!r}"
        )


def _target(model: keras.Model, layer: str | None) -> _Target:
    with _TARGETS_LOCK:
        per_model = _TARGETS.setdefault(model, {})
        if layer not in per_model:
            per_model[layer] = _find_target(model, layer)
        return per_model[layer]


def _find_target(model: keras.Model, layer: str | None) -> _Target:
    if len(model.outputs) != 1 or len(model.output_shape) != 2:
        raise ModelError(
            f"model {model.name!r} is not a classifier (its output is "
            f"{model.output_shape}, not N x classes); CAMs explain classifiers"
        )
    candidates = feature_map_candidates(model)
    if layer is not None:
        return _cut(model, resolve_layer(model, layer, candidates))
    by_path = dict(walk_layers(model))
    for path in reversed(candidates):
        if isinstance(by_path[path], _NOT_AUTOMATIC):
            continue
        try:
            return _cut(model, path)
        except ModelError:
            continue  # inside a residual block: a layer further down may end one
    raise ModelError(
        f"model {model.name!r} has no convolutional feature map before its classifier "
        f"(4-D layers: {describe_candidates(candidates)})"
    )


def _cut(model: keras.Model, path: str) -> _Target:
    last = model.layers[-1]
    classifier = last if isinstance(last, keras.layers.Dense) else None
    stop_before = last.name if classifier is not None or _is_output_activation(last) else None
    features, head = split_model(model, path, stop_before=stop_before)
    return _Target(
        layer=path,
        features=features,
        head=head,
        classifier=classifier,
        pooling_only=_pooling_only(head),
    )


def _is_output_activation(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, keras.layers.Softmax):
        return True
    activation = getattr(layer, "activation", None)
    return isinstance(layer, keras.layers.Activation) and getattr(activation, "__name__", "") in (
        "softmax",
        "sigmoid",
    )


def _head_layers(head: keras.Model) -> list[keras.layers.Layer]:
    """The layers between the feature map and the classifier, nested models opened."""
    return [
        layer
        for _, layer in walk_layers(head)
        if not isinstance(layer, keras.layers.InputLayer | keras.Model)
    ]


def _pooling_only(head: keras.Model) -> bool:
    layers = _head_layers(head)
    pooling = [layer for layer in layers if isinstance(layer, keras.layers.GlobalAveragePooling2D)]
    return len(pooling) == 1 and all(
        isinstance(layer, (keras.layers.GlobalAveragePooling2D, *_INFERENCE_IDENTITY))
        for layer in layers
    )


def _cam_weights(target: _Target, channels: int) -> np.ndarray:
    """CAM's ``channels x classes`` weights: the Dense layer's kernel, or the identity
    when the pooled map is the output (each channel is then one class's map)."""
    if target.classifier is None:
        return np.eye(channels, dtype=np.float32)
    return keras.ops.convert_to_numpy(target.classifier.kernel)


def _ending(target: _Target) -> str:
    kinds = ", ".join(type(layer).__name__ for layer in _head_layers(target.head))
    final = (
        f" then {type(target.classifier).__name__}"
        if target.classifier is not None
        else " (no Dense classifier)"
    )
    return f"has {kinds or 'nothing'}{final} after layer {target.layer!r}"


def _gradcam(feature_map: np.ndarray, gradient: np.ndarray, plus_plus: bool) -> np.ndarray:
    """The map (before ReLU) from ``h x w x C`` activations and their gradient."""
    if plus_plus:
        # Chattopadhay et al., eq. 19 with the exponential score (their choice), whose
        # higher derivatives are powers of the first one.
        squared = gradient**2
        denominator = 2 * squared + feature_map.sum(axis=(0, 1)) * gradient**3
        alpha = np.divide(squared, denominator, out=np.zeros_like(squared), where=denominator != 0)
        weights = (alpha * np.maximum(gradient, 0)).sum(axis=(0, 1))
    else:
        weights = gradient.mean(axis=(0, 1))
    return feature_map @ weights


def _upsample(low: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize a ``h x w`` map bilinearly to ``height x width`` and scale it to [0, 1]."""
    resized = np.asarray(
        Image.fromarray(low.astype(np.float32)).resize((width, height), Image.Resampling.BILINEAR),
        dtype=np.float32,
    )
    resized = np.maximum(resized, 0)
    peak = resized.max()
    return resized / peak if peak > 0 else resized


def _check_colormap(colormap: str) -> str:
    if colormap not in COLORMAPS:
        raise SpecError(f"unknown colormap {colormap!r}; colormaps: {', '.join(COLORMAPS)}")
    return colormap


def _check_alpha(alpha: float) -> float:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 <= alpha <= 1:
        raise SpecError(f"alpha must be a number from 0 to 1, got {alpha!r}")
    return float(alpha)


@functools.cache
def _colormap_table(colormap: str) -> np.ndarray:
    """256 RGB colours of a matplotlib colormap, uint8."""
    import matplotlib

    rgba = matplotlib.colormaps[colormap](np.linspace(0.0, 1.0, 256))
    return np.rint(rgba[:, :3] * 255).astype(np.uint8)
