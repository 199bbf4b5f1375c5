"""SqueezeNet v1.1, built with ``keras.layers`` and loaded from torchvision's weights.

Reference:
- [SqueezeNet: AlexNet-level accuracy with 50x fewer parameters and <0.5MB model size](
    https://arxiv.org/abs/1602.07360) (Iandola et al., 2016)

SqueezeNet is built from Fire modules: a 1x1 "squeeze" convolution to few channels,
then two "expand" convolutions side by side, 1x1 and 3x3, whose outputs are
concatenated. It has no fully connected layer: a 1x1 convolution makes one map per
class and global average pooling turns each map into that class's score, so the map
before the pooling is itself a Class Activation Map.

Version 1.1 (the SqueezeNet repository's ``SqueezeNet_v1.1``, torchvision's
``squeezenet1_1``) keeps v1.0's accuracy with 2.4 times less computation: the first
convolution has 64 filters of 3x3 instead of 96 of 7x7, and the max pools come
earlier (after conv1, fire3 and fire5, not after conv1, fire4 and fire8).

The layers are exactly torchvision's ``squeezenet1_1``: ``conv1`` (64, 3x3, stride 2,
no padding), ReLU, max pool 3 stride 2, ``fire2`` and ``fire3``, max pool, ``fire4``
and ``fire5``, max pool, ``fire6`` to ``fire9``, then dropout 0.5, ``conv10`` (one
1x1 filter per class), ReLU and global average pooling: 1,235,496 parameters. The
names are the paper's (Caffe's); ``load_torch_state_dict`` copies torchvision's
state dict (``features.N.squeeze``, ``classifier.1``...) into them. torchvision's
ImageNet weights are the file ``squeezenet1_1-b8a52dc0.pth``; read it with
``imgrec.models.torch_weights.load_state_dict``, which runs no pickled code.

Input: RGB images of 224 x 224, preprocessed the torchvision way
(``imgrec.models.preprocessing.torchvision_imagenet``): short side to 256, centre
crop 224, scaled to [0, 1], minus mean (0.485, 0.456, 0.406), divided by standard
deviation (0.229, 0.224, 0.225). The model itself does no rescaling.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import keras
import numpy as np
from keras import layers

from imgrec.models.efficientnet_lite import rgb_input_shape
from imgrec.models.torch_to_keras import copy_state_dict

DEFAULT_SIZE = 224
STEM_FILTERS = 64
FEATURE_CHANNELS = 512


class _Fire(NamedTuple):
    """One Fire module: squeeze 1x1, then expand 1x1 and 3x3 side by side."""

    name: str
    torch_index: int  # its index in torchvision's ``features``
    squeeze: int
    expand1x1: int
    expand3x3: int
    pool_after: bool  # a max pool follows it


# torchvision's squeezenet1_1 ``features``: 0 conv, 1 ReLU, 2 pool, then these,
# with pools at 5 and 8. Input channels follow from the previous module.
FIRES: tuple[_Fire, ...] = (
    _Fire("fire2", 3, 16, 64, 64, False),
    _Fire("fire3", 4, 16, 64, 64, True),
    _Fire("fire4", 6, 32, 128, 128, False),
    _Fire("fire5", 7, 32, 128, 128, True),
    _Fire("fire6", 9, 48, 192, 192, False),
    _Fire("fire7", 10, 48, 192, 192, False),
    _Fire("fire8", 11, 64, 256, 256, False),
    _Fire("fire9", 12, 64, 256, 256, False),
)


def _max_pool_ceil(x, name: str):
    """torchvision's ``MaxPool2d(3, stride=2, ceil_mode=True)``, for any input size.

    Keras has no ceil mode. With a 3-wide window and stride 2, floor mode gives
    ``(n - 3) // 2 + 1`` outputs and ceil mode ``ceil((n - 3) / 2) + 1``; they differ
    only for even ``n``, by one last window that starts at ``n - 2`` and hangs one
    pixel over the edge (PyTorch ignores the missing pixel). One row and column of
    padding at the bottom and right, then floor mode, gives that window for even
    ``n`` and changes nothing for odd ``n`` (the padding lies beyond every window).

    The padding is zeros, not -inf: that is exact because every pool here follows a
    ReLU, so each window's real values are >= 0 and a 0 can never exceed its maximum.
    """
    x = layers.ZeroPadding2D(padding=((0, 1), (0, 1)), name=f"{name}_pad")(x)
    return layers.MaxPooling2D(pool_size=3, strides=2, padding="valid", name=name)(x)


def _fire(x, fire: _Fire, channel_axis: int):
    """A Fire module: ``s = relu(squeeze1x1(x))``, then
    ``concat([relu(expand1x1(s)), relu(expand3x3(s))])`` on the channel axis."""
    s = layers.Conv2D(fire.squeeze, 1, name=f"{fire.name}_squeeze1x1")(x)
    s = layers.ReLU(name=f"{fire.name}_relu_squeeze1x1")(s)
    left = layers.Conv2D(fire.expand1x1, 1, name=f"{fire.name}_expand1x1")(s)
    left = layers.ReLU(name=f"{fire.name}_relu_expand1x1")(left)
    # 3x3 with padding 1 at stride 1: Keras's "same" is PyTorch's symmetric padding.
    right = layers.Conv2D(fire.expand3x3, 3, padding="same", name=f"{fire.name}_expand3x3")(s)
    right = layers.ReLU(name=f"{fire.name}_relu_expand3x3")(right)
    return layers.Concatenate(axis=channel_axis, name=f"{fire.name}_concat")([left, right])


def SqueezeNet1_1(
    include_top: bool = True,
    input_shape: tuple[int | None, int | None, int] | None = None,
    pooling: str | None = None,
    classes: int = 1000,
    classifier_activation: str | None = "softmax",
    dropout_rate: float = 0.5,
    name: str = "squeezenet1_1",
) -> keras.Model:
    """Instantiate the SqueezeNet v1.1 architecture, with random weights.

    Reference: Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer
    parameters and <0.5MB model size", arXiv:1602.07360, 2016; version 1.1 as in the
    SqueezeNet repository and torchvision's ``squeezenet1_1`` (64 3x3 filters in
    conv1, pools after conv1, fire3 and fire5).

    To get torchvision's ImageNet weights, read ``squeezenet1_1-b8a52dc0.pth`` with
    ``imgrec.models.torch_weights.load_state_dict`` and pass the result to
    ``load_torch_state_dict``. Feed the model images preprocessed by
    ``imgrec.models.preprocessing.torchvision_imagenet()`` (224 x 224 RGB, ImageNet
    mean and standard deviation); the model does no rescaling of its own.

    Layers are named as in the paper's Caffe model: ``conv1``, ``pool1``,
    ``fire2_squeeze1x1``, ``fire2_expand1x1``, ``fire2_expand3x3``, ``fire2_concat``,
    ..., ``fire9_concat``, ``drop9``, ``conv10``, ``relu_conv10``, ``avg_pool``,
    ``predictions``. ``relu_conv10`` holds one map per class, and the class scores
    are their averages: it is the Class Activation Map layer.

    Args:
        include_top: whether to end with the ``classes``-way classifier: dropout,
            ``conv10`` (1x1, one filter per class), ReLU, global average pooling.
        input_shape: ``(height, width, 3)``, or ``(3, height, width)`` with
            ``"channels_first"``; ``None`` means 224 x 224. Any size from 17 up
            works (the classifier follows global pooling), but the weights were
            trained at 224. Height and width may be ``None`` for any size.
        pooling: without the top, ``None`` returns the 4-D output of
            ``fire9_concat`` (512 channels); ``"avg"`` or ``"max"`` add global
            average or max pooling, for a 2-D ``(batch, 512)`` output.
        classes: number of classes; the ImageNet weights need 1000.
        classifier_activation: the activation after the pooling; ``None`` returns
            the scores (torchvision's output, which are not logits of a linear
            layer but averages of ReLU maps, so they are >= 0).
        dropout_rate: dropout before ``conv10`` (0.5, as in torchvision).
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
    inputs = layers.Input(shape=rgb_input_shape(input_shape, channels_first), name="input_layer")
    x = _features(inputs, channel_axis=1 if channels_first else -1)
    if include_top:
        if dropout_rate > 0:
            x = layers.Dropout(dropout_rate, name="drop9")(x)
        x = layers.Conv2D(classes, 1, name="conv10")(x)
        x = layers.ReLU(name="relu_conv10")(x)
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        if classifier_activation is not None:
            x = layers.Activation(classifier_activation, name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(inputs, x, name=name)


def _features(inputs, channel_axis: int):
    """torchvision's ``features``: conv1, ReLU, pool1, the Fire modules and two more pools."""
    # torchvision's Conv2d(3, 64, kernel_size=3, stride=2) has no padding: "valid".
    x = layers.Conv2D(STEM_FILTERS, 3, strides=2, name="conv1")(inputs)
    x = layers.ReLU(name="relu_conv1")(x)
    x = _max_pool_ceil(x, "pool1")
    pools = iter(("pool3", "pool5"))
    for fire in FIRES:
        x = _fire(x, fire, channel_axis)
        if fire.pool_after:
            x = _max_pool_ceil(x, next(pools))
    return x


# --- Loading the PyTorch weights -------------------------------------------------------


def _layer_map(include_top: bool) -> Iterator[tuple[str, str]]:
    """Yield ``(Keras layer name, torchvision key prefix)`` for every layer with weights."""
    yield "conv1", "features.0"
    for fire in FIRES:
        for part in ("squeeze", "expand1x1", "expand3x3"):
            keras_part = "squeeze1x1" if part == "squeeze" else part
            yield f"{fire.name}_{keras_part}", f"features.{fire.torch_index}.{part}"
    if include_top:
        yield "conv10", "classifier.1"


def load_torch_state_dict(model: keras.Model, state_dict: dict[str, np.ndarray]) -> None:
    """Copy torchvision's ``squeezenet1_1`` state dict into ``model``.

    ``model`` must come from ``SqueezeNet1_1``; without its top (``include_top=False``)
    the classifier entries (``classifier.*``) are skipped. See
    ``torch_to_keras.copy_state_dict`` for the checks.

    Args:
        model: the model to fill.
        state_dict: torchvision's key names to NumPy arrays
            (``torch_weights.load_state_dict``).

    Raises:
        WeightsError: a key is missing, unexpected or of the wrong shape (the
            message names it), or the model lacks a layer the weights need.
    """
    include_top = any(layer.name == "conv10" for layer in model.layers)
    copy_state_dict(
        model,
        state_dict,
        _layer_map(include_top),
        architecture="SqueezeNet1_1",
        ignored_prefixes=() if include_top else ("classifier.",),
    )
