"""torchvision's SqueezeNet 1.1 forward pass (inference), in plain NumPy, from the state dict.

This is the independent reference for the Keras port in ``imgrec.models.squeezenet``:
it imports neither Keras nor imgrec, reads torchvision's own key names, and follows
``torchvision.models.squeezenet`` (Iandola et al., arXiv:1602.07360, version 1.1)
module by module, as ``FEATURES`` lists them:

- ``features.0``: 3x3 convolution to 64 channels, stride 2, no padding, with bias;
  ``features.1``: ReLU;
- ``MaxPool2d(3, stride=2, ceil_mode=True)`` at ``features.2``, ``.5`` and ``.8``:
  PyTorch's ceil mode, computed as PyTorch defines it (a last window that hangs over
  the edge takes the maximum of the pixels it does cover, i.e. -inf padding);
- ``Fire`` modules at the other indices: ``squeeze`` 1x1 + ReLU, then ``expand1x1``
  (1x1) and ``expand3x3`` (3x3, padding 1), each + ReLU, concatenated on channels;
- ``classifier``: dropout (a no-op at inference), ``classifier.1`` 1x1 convolution to
  one map per class, ReLU, global average pooling.

Tensors are NHWC and computed in float64 by default, so that comparing against a
float32 model measures that model's error, not this one's. The convolution is
``numpy_mobilenet_v2.conv2d`` (im2col with ``sliding_window_view``), which
``test_mobilenet_v2_parity`` checks against a direct loop.
"""

from __future__ import annotations

import math

import numpy as np
from numpy_mobilenet_v2 import conv2d

POOL = "pool"
# torchvision's squeezenet1_1 ``features``, index by index: the stem convolution, its
# ReLU, pools, and Fire modules as (squeeze, expand1x1, expand3x3) channels.
FEATURES: tuple[object, ...] = (
    "conv",
    "relu",
    POOL,
    (16, 64, 64),
    (16, 64, 64),
    POOL,
    (32, 128, 128),
    (32, 128, 128),
    POOL,
    (48, 192, 192),
    (48, 192, 192),
    (64, 256, 256),
    (64, 256, 256),
)


def relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def conv_bias(
    x: np.ndarray, state: dict[str, np.ndarray], prefix: str, stride: int = 1, pad: int = 0
) -> np.ndarray:
    """PyTorch ``Conv2d`` with bias: ``{prefix}.weight`` (out, in, kH, kW) and ``{prefix}.bias``."""
    out = conv2d(x, state[f"{prefix}.weight"], stride=stride, pad=pad)
    return out + state[f"{prefix}.bias"].astype(x.dtype)


def pooled_size(n: int, kernel: int = 3, stride: int = 2) -> int:
    """PyTorch's output size of a ceil-mode pool without padding.

    ``ceil((n - kernel) / stride) + 1``, less one if the last window would start past
    the input (``aten/src/ATen/native/Pool.h``, ``pooling_output_shape``).
    """
    out = math.ceil((n - kernel) / stride) + 1
    if (out - 1) * stride >= n:
        out -= 1
    return out


def max_pool_ceil(x: np.ndarray, kernel: int = 3, stride: int = 2) -> np.ndarray:
    """``MaxPool2d(kernel, stride, ceil_mode=True)`` on an NHWC tensor."""
    h_out, w_out = pooled_size(x.shape[1], kernel, stride), pooled_size(x.shape[2], kernel, stride)
    # Pad with -inf to the extent the last windows need: a missing pixel never wins.
    need_h = (h_out - 1) * stride + kernel - x.shape[1]
    need_w = (w_out - 1) * stride + kernel - x.shape[2]
    padded = np.pad(
        x, ((0, 0), (0, max(need_h, 0)), (0, max(need_w, 0)), (0, 0)), constant_values=-np.inf
    )
    out = np.full((x.shape[0], h_out, w_out, x.shape[3]), -np.inf, dtype=x.dtype)
    for i in range(kernel):
        for j in range(kernel):
            tap = padded[:, i : i + stride * (h_out - 1) + 1 : stride]
            out = np.maximum(out, tap[:, :, j : j + stride * (w_out - 1) + 1 : stride])
    return out


def fire(x: np.ndarray, state: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    """torchvision's ``Fire``: squeeze, then the two expand branches concatenated."""
    s = relu(conv_bias(x, state, f"{prefix}.squeeze"))
    left = relu(conv_bias(s, state, f"{prefix}.expand1x1"))
    right = relu(conv_bias(s, state, f"{prefix}.expand3x3", pad=1))
    return np.concatenate([left, right], axis=-1)


def features(x: np.ndarray, state: dict[str, np.ndarray], shapes: list | None = None) -> np.ndarray:
    """``model.features`` on an NHWC batch; appends each module's output shape to ``shapes``."""
    h = x
    for index, module in enumerate(FEATURES):
        prefix = f"features.{index}"
        if module == "conv":
            h = conv_bias(h, state, prefix, stride=2)
        elif module == "relu":
            h = relu(h)
        elif module == POOL:
            h = max_pool_ceil(h)
        else:
            h = fire(h, state, prefix)
            if h.shape[-1] != module[1] + module[2]:
                raise ValueError(f"{prefix} gave {h.shape[-1]} channels, not {sum(module[1:])}")
        if shapes is not None:
            shapes.append(h.shape)
    return h


def class_maps(images: np.ndarray, state: dict[str, np.ndarray], dtype=np.float64) -> np.ndarray:
    """The classifier's ReLU output: one ``H/16``-ish map per class, ``N x h x w x 1000``."""
    h = features(np.asarray(images, dtype=dtype), state)
    return relu(conv_bias(h, state, "classifier.1"))


def scores(images: np.ndarray, state: dict[str, np.ndarray], dtype=np.float64) -> np.ndarray:
    """torchvision ``squeezenet1_1(...).eval()(x)``: the class maps' averages, ``N x 1000``.

    Args:
        images: ``N x H x W x 3``, already normalised the torchvision way.
        state: torchvision's state dict as NumPy arrays (key names unchanged).
        dtype: the precision to compute in.
    """
    return class_maps(images, state, dtype).mean(axis=(1, 2))


def random_state_dict(seed: int = 0, classes: int = 1000) -> dict[str, np.ndarray]:
    """A float32 state dict with torchvision's keys and shapes and random values.

    Weights are He-normal (standard deviation ``sqrt(2 / fan_in)``), so activations keep
    their scale through the ten ReLU stages; biases are small but not zero, so that a
    bias left out or swapped shows.
    """
    rng = np.random.default_rng(seed)
    state: dict[str, np.ndarray] = {}

    def conv(prefix: str, out: int, inp: int, k: int) -> None:
        fan_in = inp * k * k
        state[f"{prefix}.weight"] = (
            rng.normal(size=(out, inp, k, k)) * np.sqrt(2 / fan_in)
        ).astype(np.float32)
        state[f"{prefix}.bias"] = rng.normal(scale=0.1, size=out).astype(np.float32)

    channels = 3
    for index, module in enumerate(FEATURES):
        if module == "conv":
            conv(f"features.{index}", 64, channels, 3)
            channels = 64
        elif isinstance(module, tuple):
            squeeze, e1, e3 = module
            conv(f"features.{index}.squeeze", squeeze, channels, 1)
            conv(f"features.{index}.expand1x1", e1, squeeze, 1)
            conv(f"features.{index}.expand3x3", e3, squeeze, 3)
            channels = e1 + e3
    conv("classifier.1", classes, channels, 1)
    return state
