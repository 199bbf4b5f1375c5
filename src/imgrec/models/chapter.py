"""The chapter's networks: the textbook chapter's own CNNs, trained from scratch.

``imgrec train DATASET --arch ARCH`` builds one of these (the registry,
:mod:`imgrec.models.registry`, lists them with the zoo's). Three are the
chapter's networks, layer for layer; the fourth is a stronger recipe of ours:

- ``cifar-cnn``: the chapter's CIFAR-10 classifier (32 x 32 x 3, 10 classes,
  453,786 parameters).
- ``catdog-cnn``: the chapter's dogs-vs-cats classifier (128 x 128 x 3, one
  sigmoid unit, 29,511,617 parameters).
- ``mnist-cnn``: the Keras.js demo's basic convnet, which is Keras's classic
  ``examples/mnist_cnn.py`` (28 x 28 x 1, 10 classes, 1,199,882 parameters).
- ``vgg-bn``: a small VGG-style network with batch normalisation and dropout,
  for users who want accuracy on small images (about 93.5 % or more on
  Fashion-MNIST, see ``vgg_bn``).

Every builder adapts to the data: any input height and width from the
network's minimum up (``ModelError`` below it), 1 or 3 channels, and any number
of classes from 2 up. With the default shape and classes the parameter counts
are exactly the chapter's.

Every model is a plain ``keras.Model`` laid out the same way::

    keras.Input(input_shape)
    -> augmentation      (optional: the caller's Keras layer, inserted as-is)
    -> Rescaling(1/255)  (named "rescale": models take 0-255 pixels, like the
                          textbook's ``ImageDataGenerator(rescale=1./255)``)
    -> the chapter's layers

Input: images of 0-255 pixel values (uint8 or float), shaped ``(H, W, C)``.
The last convolutional feature map (for Class Activation Maps) is the layer
``last_conv_layer(model)`` returns: ``conv2`` in the chapter's networks,
``block3_relu2`` in ``vgg-bn``.

This module imports Keras only when a network is built, so that the registry can
list the networks without starting TensorFlow.

These were called "seed networks" before (``imgrec.models.seed``): the old names
``SeedArchitecture``, ``SEED_ARCHITECTURES``, ``get_seed_architecture`` and
``build_seed`` still work, with a ``DeprecationWarning``, for one release.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from imgrec.core.errors import ModelError
from imgrec.core.native import BFLOAT16, FLOAT32

if TYPE_CHECKING:
    import keras
    from keras import layers

RESCALE_LAYER = "rescale"


@dataclass(frozen=True)
class ChapterArchitecture:
    """One of the chapter's networks and the training recipe that goes with it.

    Args:
        name: the name users type (``cifar-cnn``).
        description: one line for people.
        default_input_shape: the chapter's ``(height, width, channels)``.
        build: ``build(input_shape, num_classes, augmentation=None)`` -> ``keras.Model``.
        learning_rate: the recommended Adam (or AdamW) learning rate.
        epochs: the recommended number of epochs.
        lr_schedule: ``"constant"`` or ``"cosine"`` (cosine decay to 0 over ``epochs``).
        weight_decay: decoupled weight decay for AdamW; 0 means plain Adam.
        reference_parameters: the chapter's parameter count at the default shape
            and classes, for summaries; ``None`` for networks not in the chapter.
        default_num_classes: the chapter's number of classes.
        min_input_size: the smallest height and width the network accepts.
        suggested_augmentation: augmentation that helps this network, in words.
        optimizer: ``"adam"`` (AdamW with weight decay) or ``"sgd"`` (SGD with Nesterov
            momentum 0.9 and decoupled weight decay).
        warmup_epochs: epochs of linear learning-rate warm-up from 0 before the schedule.
        label_smoothing: the cross-entropy's label smoothing (0: none).
        batch_size: the recipe's images per step (None: imgrec's default, 64).
        augment: the augmentation spec a run gets when it asks for none (``""``).
        tta: the test-time augmentation recorded in the model for ``evaluate`` and
            ``predict`` (``"flip"``, ``"flip,shift"``: ``imgrec.models.tta``; ``""``: none).
        prepare: ``prepare(model, images)`` sets what the network learns from the
            training images before the first step (``fast-cnn``'s whitening), or None.
        precision: the arithmetic of training: ``"float32"``, or ``"bfloat16"`` where
            the CPU has it natively (``imgrec.core.native.compute_precision``; the
            model and its files stay float32).
        val_split: the fraction of the training images held out for validation when
            the run names none and the data set has a test split of its own to be
            measured on (None: imgrec's default, 0.1; 0: train on all of them).
        alternate_flips: with ``flip`` augmentation, mirror each training image every
            other epoch instead of at random (airbench's alternating flip,
            ``imgrec.training.flips``), on one device or several.
    """

    name: str
    description: str
    default_input_shape: tuple[int, int, int]
    build: Callable[..., keras.Model]
    learning_rate: float
    epochs: int
    lr_schedule: str
    weight_decay: float
    reference_parameters: int | None
    default_num_classes: int = 10
    min_input_size: int = 1
    suggested_augmentation: str = ""
    optimizer: str = "adam"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    batch_size: int | None = None
    augment: str = ""
    tta: str = ""
    prepare: Callable[[keras.Model, np.ndarray], None] | None = None
    precision: str = FLOAT32
    val_split: float | None = None
    alternate_flips: bool = False


# --------------------------------------------------------------------------- checks


def _check_arguments(
    arch: str, input_shape, num_classes, min_size: int
) -> tuple[tuple[int, int, int], int]:
    """Validate ``input_shape`` and ``num_classes``; return them as plain ints.

    Raises:
        ModelError: the shape is not ``(H, W, 1 or 3)``, is smaller than
            ``min_size``, or there are fewer than 2 classes.
    """
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ModelError(
            f"{arch}: input_shape must be (height, width, channels), got {input_shape!r}"
        ) from None
    if len(shape) != 3:
        raise ModelError(
            f"{arch}: input_shape must be (height, width, channels), got {input_shape!r}"
        )
    height, width, channels = shape
    if channels not in (1, 3):
        raise ModelError(
            f"{arch}: images must have 1 (grey) or 3 (RGB) channels, got {channels} "
            f"in input_shape {shape}"
        )
    if height < min_size or width < min_size:
        raise ModelError(
            f"{arch}: input {height}x{width} is too small; this network needs at least "
            f"{min_size}x{min_size} pixels"
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ModelError(f"{arch}: num_classes must be an integer >= 2, got {num_classes!r}")
    return (height, width, channels), num_classes


def _stem(input_shape: tuple[int, int, int], augmentation, name: str):
    """Input, the caller's augmentation layer (if any), then 0-255 -> 0-1."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="image")
    x = inputs
    if augmentation is not None:
        if not isinstance(augmentation, layers.Layer):
            raise ModelError(
                f"{name}: augmentation must be a Keras layer (or None), "
                f"got {type(augmentation).__name__}"
            )
        x = augmentation(x)
    x = layers.Rescaling(1.0 / 255, name=RESCALE_LAYER)(x)
    return inputs, x


def _classifier(x, num_classes: int, name: str = "predictions"):
    """``num_classes`` softmax units (any N >= 2, 2 included)."""
    from keras import layers

    return layers.Dense(num_classes, activation="softmax", name=name)(x)


# ------------------------------------------------------------------- the chapter's


CIFAR_MIN_SIZE = 8


def cifar_cnn(
    input_shape: tuple[int, int, int] = (32, 32, 3),
    num_classes: int = 10,
    augmentation: layers.Layer | None = None,
) -> keras.Model:
    """The textbook chapter's CIFAR-10 CNN.

    Conv2D 64 3x3 relu, MaxPooling2D 2, Conv2D 32 3x3 relu, Flatten, Dense 80
    relu, Dense ``num_classes`` softmax; every convolution "valid".
    453,786 parameters at the default 32 x 32 x 3 and 10 classes (the Dense 80
    layer holds 432,720 of them, and grows with the input size).

    Input: 0-255 pixels, ``(H, W, 1 or 3)`` with H, W >= 8.
    """
    import keras
    from keras import layers

    shape, num_classes = _check_arguments("cifar-cnn", input_shape, num_classes, CIFAR_MIN_SIZE)
    inputs, x = _stem(shape, augmentation, "cifar-cnn")
    x = layers.Conv2D(64, 3, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(32, 3, activation="relu", name="conv2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(80, activation="relu", name="fc1")(x)
    outputs = _classifier(x, num_classes)
    return keras.Model(inputs, outputs, name="cifar_cnn")


CATDOG_MIN_SIZE = 10


def catdog_cnn(
    input_shape: tuple[int, int, int] = (128, 128, 3),
    num_classes: int = 2,
    augmentation: layers.Layer | None = None,
) -> keras.Model:
    """The textbook chapter's dogs-vs-cats CNN.

    Conv2D 32 3x3 relu, MaxPooling2D 2, Conv2D 64 3x3 relu, MaxPooling2D 2,
    Flatten, Dense 512 relu, then one sigmoid unit for two classes (the
    chapter's; train with binary cross-entropy) or ``num_classes`` softmax
    units for three or more. 29,511,617 parameters at the default
    128 x 128 x 3 and 2 classes, 29,491,712 of them in Dense 512.

    Input: 0-255 pixels, ``(H, W, 1 or 3)`` with H, W >= 10.
    """
    import keras
    from keras import layers

    shape, num_classes = _check_arguments("catdog-cnn", input_shape, num_classes, CATDOG_MIN_SIZE)
    inputs, x = _stem(shape, augmentation, "catdog-cnn")
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", name="fc1")(x)
    if num_classes == 2:
        outputs = layers.Dense(1, activation="sigmoid", name="predictions")(x)
    else:
        outputs = _classifier(x, num_classes)
    return keras.Model(inputs, outputs, name="catdog_cnn")


MNIST_MIN_SIZE = 6


def mnist_cnn(
    input_shape: tuple[int, int, int] = (28, 28, 1),
    num_classes: int = 10,
    augmentation: layers.Layer | None = None,
) -> keras.Model:
    """Keras's classic MNIST convnet (``examples/mnist_cnn.py``), the Keras.js demo's.

    Conv2D 32 3x3 relu, Conv2D 64 3x3 relu, MaxPooling2D 2, Dropout 0.25,
    Flatten, Dense 128 relu, Dropout 0.5, Dense ``num_classes`` softmax.
    1,199,882 parameters at the default 28 x 28 x 1 and 10 classes.

    Input: 0-255 pixels, ``(H, W, 1 or 3)`` with H, W >= 6.
    """
    import keras
    from keras import layers

    shape, num_classes = _check_arguments("mnist-cnn", input_shape, num_classes, MNIST_MIN_SIZE)
    inputs, x = _stem(shape, augmentation, "mnist-cnn")
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Dropout(0.25, name="dropout1")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.5, name="dropout2")(x)
    outputs = _classifier(x, num_classes)
    return keras.Model(inputs, outputs, name="mnist_cnn")


# ------------------------------------------------------------------------ our own


VGG_BN_MIN_SIZE = 8
# Twice the filters of (32, 64, 128): the half-width network fell short of 93.5 %
# on Fashion-MNIST (docs/guides/train.md, "Results, measured"), for 1.4 times the time an epoch.
VGG_BN_FILTERS = (64, 128, 256)
# One convolution at full resolution, two in the smaller blocks: a second
# 64-filter convolution at 28 x 28 would cost a third more training time.
VGG_BN_CONVS = (1, 2, 2)
VGG_BN_BLOCK_DROPOUT = (0.2, 0.3, 0.4)
VGG_BN_DENSE = 128
VGG_BN_HEAD_DROPOUT = 0.5


def vgg_bn(
    input_shape: tuple[int, int, int] = (28, 28, 1),
    num_classes: int = 10,
    augmentation: layers.Layer | None = None,
) -> keras.Model:
    """A small VGG-style network with batch normalisation: our recipe for accuracy.

    After VGG (Simonyan & Zisserman, "Very Deep Convolutional Networks for
    Large-Scale Image Recognition", ICLR 2015) with batch normalisation (Ioffe &
    Szegedy, ICML 2015): three blocks of [Conv 3x3 "same" - BN - ReLU] x n,
    MaxPooling2D 2 and Dropout (0.2, 0.3, 0.4), with 64, 128 and 256 filters and
    n = 1, 2, 2 (a second convolution at full resolution would cost a third more
    time for little gain); then global average pooling, Dense 128 - BN - ReLU,
    Dropout 0.5 and ``num_classes`` softmax. Convolutions carry no bias
    (BatchNorm's beta is one). Global pooling keeps the parameter count
    (1,144,394 for 10 classes) independent of the image size, and the last
    feature map, ``block3_relu2``, is the one for Class Activation Maps.

    Recipe (also in ``CHAPTER_ARCHITECTURES["vgg-bn"]``): AdamW, learning rate 2e-3,
    weight decay 1e-2, cosine decay to 0 over 20 epochs, batch 128. Random
    horizontal flips help on Fashion-MNIST and photos; digits want small
    rotations, zooms and shifts instead (no flips for digits or text).

    Input: 0-255 pixels, ``(H, W, 1 or 3)`` with H, W >= 8.
    """
    import keras
    from keras import layers

    shape, num_classes = _check_arguments("vgg-bn", input_shape, num_classes, VGG_BN_MIN_SIZE)
    inputs, x = _stem(shape, augmentation, "vgg-bn")
    for block, (filters, convs, rate) in enumerate(
        zip(VGG_BN_FILTERS, VGG_BN_CONVS, VGG_BN_BLOCK_DROPOUT, strict=True), start=1
    ):
        for conv in range(1, convs + 1):
            prefix = f"block{block}_"
            x = layers.Conv2D(
                filters, 3, padding="same", use_bias=False, name=f"{prefix}conv{conv}"
            )(x)
            x = layers.BatchNormalization(name=f"{prefix}bn{conv}")(x)
            x = layers.ReLU(name=f"{prefix}relu{conv}")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
        x = layers.Dropout(rate, name=f"block{block}_dropout")(x)
    x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    x = layers.Dense(VGG_BN_DENSE, use_bias=False, name="fc1")(x)
    x = layers.BatchNormalization(name="fc1_bn")(x)
    x = layers.ReLU(name="fc1_relu")(x)
    x = layers.Dropout(VGG_BN_HEAD_DROPOUT, name="fc1_dropout")(x)
    outputs = _classifier(x, num_classes)
    return keras.Model(inputs, outputs, name="vgg_bn")


FAST_CNN_MIN_SIZE = 8
# Filters of the three blocks. Each block is Conv 3x3 - MaxPool 2 - BN - ReLU - Conv 3x3 -
# BN - ReLU: pooling straight after the first convolution (airbench's layout) runs the
# second one on a quarter of the pixels. Twice the filters of the first recipe (32, 64,
# 128): on Fashion-MNIST width buys more accuracy than epochs (docs/guides/train.md).
FAST_CNN_WIDTHS = (64, 128, 256)
# The frozen first layer whitens 2 x 2 patches: 2 x 4 filters per input channel.
WHITEN_LAYER = "whiten"
WHITEN_PATCH = 2
WHITEN_EPSILON = 5e-4
WHITEN_SAMPLE = 5000
# Keras's BatchNormalization keeps this much of its running statistics a step: less than
# its 0.99, as airbench does, so they follow weights that move fast in a short run.
FAST_CNN_BN_MOMENTUM = 0.6
# Logits are scaled down before the softmax (airbench's 1/9 on CIFAR-10).
FAST_CNN_LOGIT_SCALE = 1 / 8


def fast_cnn(
    input_shape: tuple[int, int, int] = (28, 28, 1),
    num_classes: int = 10,
    augmentation: layers.Layer | None = None,
    widths: tuple[int, int, int] = FAST_CNN_WIDTHS,
) -> keras.Model:
    """A small network and recipe built for accuracy per second on small images.

    After airbench (Keller Jordan, "94% on CIFAR-10 in 3.29 Seconds on a Single GPU",
    arXiv 2404.00498, 2024), brought to 28 x 28 grey images and a CPU: a frozen first
    convolution that whitens 2 x 2 patches (its filters are the eigenvectors of the
    training patches' covariance, scaled by the inverse square root of their
    eigenvalues, each with its negative; ``whitening_weights``), then three blocks of
    [Conv 3x3 - MaxPool 2 - BatchNorm - ReLU - Conv 3x3 - BatchNorm - ReLU] with 64, 128
    and 256 filters, global max pooling, a bias-free Dense layer whose logits are scaled
    by 1/8, and softmax. ReLU, where airbench has GELU: the ONNX Runtime has no operator
    for the exported GELU (Erfc), and ReLU is cheaper on a CPU. BatchNorm's running
    statistics move fast (momentum 0.6). Convolutions carry no bias. 1,153,576 parameters
    for 28 x 28 x 1 and 10 classes (40 of them frozen, the whitening); the last feature
    map, ``block3_relu2``, is the one for Class Activation Maps.

    Recipe (``CHAPTER_ARCHITECTURES["fast-cnn"]``): SGD with Nesterov momentum 0.9,
    learning rate 0.2 after a half-epoch linear warm-up, cosine decay to 0, weight
    decay 5e-4, batch 256, label smoothing 0.2, horizontal flips that alternate (each
    training image mirrored every other epoch: ``imgrec.training.flips``), 9 epochs, in
    bfloat16 where the CPU has it natively (``imgrec.core.native``; 11 to 13 minutes of
    two Sapphire Rapids cores for Fashion-MNIST), on every training image where the
    data set has a test split (``val_split=0``); ``evaluate`` and ``predict`` average
    each image with its mirror (``tta="flip"``, recorded in the model). Before the first
    step ``prepare_fast_cnn`` sets the whitening from the training images and starts
    the other convolutions partly as the identity (airbench's dirac initialisation).

    Input: 0-255 pixels, ``(H, W, 1 or 3)`` with H, W >= 8. ``widths``: the three blocks'
    filters (the recipe's 64, 128, 256; until 2026-12-01 32, 64, 128, a quarter of the
    arithmetic; ``bench/gpu_fast_cnn.py --widths`` tries others).
    """
    import keras
    from keras import layers

    if len(widths) != len(FAST_CNN_WIDTHS) or min(widths) < 1:
        raise ModelError(f"fast-cnn: widths must be three positive filter counts, not {widths}")
    shape, num_classes = _check_arguments("fast-cnn", input_shape, num_classes, FAST_CNN_MIN_SIZE)
    inputs, x = _stem(shape, augmentation, "fast-cnn")
    whiten_filters = 2 * WHITEN_PATCH * WHITEN_PATCH * shape[2]
    x = layers.Conv2D(
        whiten_filters, WHITEN_PATCH, padding="same", trainable=False, name=WHITEN_LAYER
    )(x)
    x = layers.ReLU(name="whiten_relu")(x)
    for block, filters in enumerate(widths, start=1):
        for conv in (1, 2):
            prefix = f"block{block}_"
            x = layers.Conv2D(
                filters, 3, padding="same", use_bias=False, name=f"{prefix}conv{conv}"
            )(x)
            if conv == 1:
                x = layers.MaxPooling2D(2, name=f"{prefix}pool")(x)
            x = layers.BatchNormalization(momentum=FAST_CNN_BN_MOMENTUM, name=f"{prefix}bn{conv}")(
                x
            )
            x = layers.ReLU(name=f"{prefix}relu{conv}")(x)
    x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    x = layers.Dense(num_classes, use_bias=False, name="logits")(x)
    x = layers.Rescaling(FAST_CNN_LOGIT_SCALE, name="logit_scale")(x)
    outputs = layers.Activation("softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name="fast_cnn")


def whitening_weights(
    images: np.ndarray, patch: int = WHITEN_PATCH, epsilon: float = WHITEN_EPSILON
) -> tuple[np.ndarray, np.ndarray]:
    """The kernel and bias of a convolution that whitens ``patch`` x ``patch`` patches.

    Args:
        images: N x H x W x C training images, 0-255 (the first ``WHITEN_SAMPLE`` are used).
        patch: the patch's height and width.
        epsilon: added to each eigenvalue (on 0-1 pixels), so that flat directions are
            not blown up.

    Returns:
        ``(kernel, bias)``: the kernel ``(patch, patch, C, 2 * patch * patch * C)`` holds
        each whitening filter and its negative; the bias centres the patches.
    """
    sample = np.asarray(images[:WHITEN_SAMPLE], dtype=np.float64) / 255.0
    channels = sample.shape[-1]
    windows = np.lib.stride_tricks.sliding_window_view(sample, (patch, patch), axis=(1, 2))
    patches = windows.reshape(-1, channels * patch * patch)  # C, then rows and columns
    mean = patches.mean(axis=0)
    centred = patches - mean
    eigenvalues, eigenvectors = np.linalg.eigh(centred.T @ centred / len(centred))
    filters = (eigenvectors / np.sqrt(eigenvalues + epsilon)).T
    filters = np.concatenate([filters, -filters])
    bias = -(filters @ mean)
    kernel = filters.reshape(-1, channels, patch, patch).transpose(2, 3, 1, 0)
    return kernel.astype(np.float32), bias.astype(np.float32)


def partial_dirac(kernel: np.ndarray) -> np.ndarray:
    """``kernel`` (height, width, inputs, outputs) with its first filters the identity.

    As airbench does (``torch.nn.init.dirac_`` on the first ``inputs`` filters): filter
    ``i < inputs`` passes input channel ``i`` through its centre tap and nothing else, so
    a block starts close to passing its input on; the other filters keep their random
    start.
    """
    height, width, inputs, outputs = kernel.shape
    shared = min(inputs, outputs)
    kernel = np.array(kernel, copy=True)
    kernel[..., :shared] = 0
    kernel[height // 2, width // 2, np.arange(shared), np.arange(shared)] = 1
    return kernel


def prepare_fast_cnn(model: keras.Model, images: np.ndarray) -> None:
    """Set ``model``'s whitening layer from ``images`` (see ``whitening_weights``) and
    start its other convolutions partly as the identity (``partial_dirac``)."""
    import keras

    layer = model.get_layer(WHITEN_LAYER)
    layer.set_weights(list(whitening_weights(images, patch=layer.kernel_size[0])))
    for conv in model.layers:
        if isinstance(conv, keras.layers.Conv2D) and conv is not layer:
            conv.kernel.assign(partial_dirac(keras.ops.convert_to_numpy(conv.kernel)))


# ------------------------------------------------------------------------ registry


CHAPTER_ARCHITECTURES: dict[str, ChapterArchitecture] = {
    arch.name: arch
    for arch in (
        ChapterArchitecture(
            name="cifar-cnn",
            description="the chapter's CIFAR-10 CNN: 2 convs, Dense 80 (453,786 params)",
            default_input_shape=(32, 32, 3),
            build=cifar_cnn,
            learning_rate=1e-3,
            epochs=10,
            lr_schedule="constant",
            weight_decay=0.0,
            reference_parameters=453_786,
            default_num_classes=10,
            min_input_size=CIFAR_MIN_SIZE,
        ),
        ChapterArchitecture(
            name="catdog-cnn",
            description="the chapter's dogs-vs-cats CNN: 2 convs, Dense 512, sigmoid",
            default_input_shape=(128, 128, 3),
            build=catdog_cnn,
            learning_rate=1e-4,
            epochs=20,
            lr_schedule="constant",
            weight_decay=0.0,
            reference_parameters=29_511_617,
            default_num_classes=2,
            min_input_size=CATDOG_MIN_SIZE,
            suggested_augmentation="horizontal flip, rotation 10 degrees, zoom 10 %",
        ),
        ChapterArchitecture(
            name="mnist-cnn",
            description="Keras's classic MNIST convnet (the Keras.js demo's)",
            default_input_shape=(28, 28, 1),
            build=mnist_cnn,
            learning_rate=1e-3,
            epochs=12,
            lr_schedule="constant",
            weight_decay=0.0,
            reference_parameters=1_199_882,
            default_num_classes=10,
            min_input_size=MNIST_MIN_SIZE,
        ),
        ChapterArchitecture(
            name="vgg-bn",
            description="our small VGG with batch norm and dropout, for accuracy",
            default_input_shape=(28, 28, 1),
            build=vgg_bn,
            learning_rate=2e-3,
            epochs=20,
            lr_schedule="cosine",
            weight_decay=1e-2,
            reference_parameters=None,
            default_num_classes=10,
            min_input_size=VGG_BN_MIN_SIZE,
            suggested_augmentation=(
                "none for Fashion-MNIST; for photos, horizontal flip and 2-pixel shifts"
            ),
        ),
        ChapterArchitecture(
            name="fast-cnn",
            description="our recipe for accuracy per second (after airbench)",
            default_input_shape=(28, 28, 1),
            build=fast_cnn,
            learning_rate=0.2,
            epochs=9,
            lr_schedule="cosine",
            weight_decay=5e-4,
            reference_parameters=None,
            default_num_classes=10,
            min_input_size=FAST_CNN_MIN_SIZE,
            suggested_augmentation="horizontal flip (its default); shifts cost accuracy here",
            optimizer="sgd",
            warmup_epochs=0.5,
            label_smoothing=0.2,
            batch_size=256,
            augment="flip",
            tta="flip",
            prepare=prepare_fast_cnn,
            precision=BFLOAT16,
            val_split=0.0,
            alternate_flips=True,
        ),
    )
}


def _normalise(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "").replace(" ", "")


def get_chapter_architecture(name: str) -> ChapterArchitecture:
    """The chapter's network called ``name``, spelled any common way (``CIFAR_CNN``, ``cifarcnn``).

    Raises:
        ModelError: no chapter network of that name; the message lists the known ones.
    """
    wanted = _normalise(str(name))
    for arch in CHAPTER_ARCHITECTURES.values():
        if _normalise(arch.name) == wanted:
            return arch
    known = ", ".join(CHAPTER_ARCHITECTURES)
    raise ModelError(f"unknown chapter network {name!r}; known: {known}")


def build_chapter_network(
    name: str,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    augmentation: layers.Layer | None = None,
) -> keras.Model:
    """Build the chapter's network ``name`` for images of ``input_shape`` and ``num_classes``.

    ``None`` means the chapter's shape and number of classes.

    Raises:
        ModelError: unknown name, an input too small or with other than 1 or 3
            channels, or fewer than 2 classes.
    """
    arch = get_chapter_architecture(name)
    shape = arch.default_input_shape if input_shape is None else input_shape
    classes = arch.default_num_classes if num_classes is None else num_classes
    return arch.build(shape, classes, augmentation=augmentation)


def is_binary_output(model: keras.Model) -> bool:
    """Whether ``model`` ends in a single sigmoid unit (train it with binary cross-entropy)."""
    if len(model.outputs) != 1 or model.outputs[0].shape[-1] != 1:
        return False
    activation = getattr(model.layers[-1], "activation", None)
    return getattr(activation, "__name__", None) == "sigmoid"


def last_conv_layer(model: keras.Model) -> layers.Layer:
    """The layer that outputs the model's last convolutional feature map (for CAM).

    The last layer, in order, that is a convolution or an activation and has a
    4-D output: ``conv2`` in the chapter's networks, ``block3_relu2`` in
    ``vgg-bn`` (and ``out_relu`` in Keras's MobileNetV2).

    Raises:
        ModelError: the model has no such layer.
    """
    from keras import layers

    feature_layers = (layers.Conv2D, layers.DepthwiseConv2D, layers.ReLU, layers.Activation)
    for layer in reversed(model.layers):
        if isinstance(layer, feature_layers) and len(layer.output.shape) == 4:
            return layer
    raise ModelError(f"model {model.name!r} has no convolutional feature map")


#: The old names, each answered (with a DeprecationWarning) by its new one.
_DEPRECATED = {
    "SeedArchitecture": "ChapterArchitecture",
    "SEED_ARCHITECTURES": "CHAPTER_ARCHITECTURES",
    "get_seed_architecture": "get_chapter_architecture",
    "build_seed": "build_chapter_network",
}


def __getattr__(name: str) -> Any:
    """The deprecated "seed" names, for one release."""
    new = _DEPRECATED.get(name)
    if new is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    warnings.warn(
        f"imgrec.models.chapter.{name} is deprecated and will be removed in the next "
        f"release; use {new} (or imgrec.models.registry)",
        DeprecationWarning,
        stacklevel=2,
    )
    return globals()[new]
