"""torchvision's MobileNetV2 forward pass (inference), in plain NumPy, from the state dict.

This is the independent reference for the Keras port in ``imgrec.models.mobilenet_v2``:
it imports neither Keras nor imgrec, reads torchvision's own key names, and follows
``torchvision.models.mobilenetv2`` (Sandler et al., CVPR 2018) layer by layer:

- ``features.0``: 3x3 convolution, stride 2, padding 1 on every side, BN, ReLU6;
- ``features.1`` ... ``features.17``: inverted residual blocks (1x1 expand, BN, ReLU6;
  3x3 depthwise, padding 1, BN, ReLU6; 1x1 linear projection, BN; plus the input when
  the stride is 1 and the channel count is kept); ``features.1`` has no expansion;
- ``features.18``: 1x1 convolution to 1280 channels, BN, ReLU6;
- global average pooling, then ``classifier.1`` (dropout is a no-op at inference).

Tensors are NHWC and computed in float64 by default, so that comparing against a
float32 model measures that model's error, not this one's.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# torchvision's BatchNorm2d default.
BN_EPSILON = 1e-5

# torchvision's ``inverted_residual_setting`` for width 1.0: expansion t, output
# channels c, repeats n, stride s of the first repeat (the others have stride 1).
INVERTED_RESIDUAL_SETTING = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)
STEM_CHANNELS = 32
LAST_CHANNELS = 1280


def block_config() -> list[tuple[int, int, int, int]]:
    """``(features index, expansion, output channels, stride)`` of every inverted residual.

    Gives stride 2 to ``features.2``, ``features.4``, ``features.7`` and ``features.14``.
    """
    blocks = []
    index = 1
    for expansion, channels, repeats, first_stride in INVERTED_RESIDUAL_SETTING:
        for repeat in range(repeats):
            blocks.append((index, expansion, channels, first_stride if repeat == 0 else 1))
            index += 1
    return blocks


def pad_hw(x: np.ndarray, pad: int) -> np.ndarray:
    """Zero-pad the two spatial axes of an NHWC tensor by ``pad`` on every side (PyTorch)."""
    return np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))


def conv2d(x: np.ndarray, weight: np.ndarray, stride: int = 1, pad: int = 0) -> np.ndarray:
    """A full convolution (cross-correlation, as in PyTorch) without bias.

    Args:
        x: ``N x H x W x C_in``.
        weight: PyTorch layout, ``C_out x C_in x kH x kW``.
        stride: the same in both directions.
        pad: zeros added on every side.

    Returns:
        ``N x H_out x W_out x C_out`` with ``H_out = (H + 2 pad - kH) // stride + 1``.
    """
    _, c_in, kh, kw = weight.shape
    if x.shape[-1] != c_in:
        raise ValueError(f"input has {x.shape[-1]} channels, the kernel wants {c_in}")
    if kh == kw == 1 and pad == 0:
        x = x[:, ::stride, ::stride, :]
        return np.tensordot(x, weight[:, :, 0, 0].T.astype(x.dtype), axes=([3], [0]))
    # im2col: windows of shape N x H' x W' x C_in x kH x kW, every stride-th kept.
    windows = sliding_window_view(pad_hw(x, pad), (kh, kw), axis=(1, 2))
    windows = windows[:, ::stride, ::stride]
    return np.einsum("nhwcij,ocij->nhwo", windows, weight.astype(x.dtype), optimize=True)


def depthwise_conv2d(
    x: np.ndarray, weight: np.ndarray, stride: int = 1, pad: int = 0
) -> np.ndarray:
    """A depthwise convolution (PyTorch ``groups = channels``) without bias.

    Args:
        x: ``N x H x W x C``.
        weight: PyTorch layout, ``C x 1 x kH x kW``.

    Returns:
        ``N x H_out x W_out x C``: each channel correlated with its own kernel.
    """
    channels, one, kh, kw = weight.shape
    if one != 1 or x.shape[-1] != channels:
        raise ValueError(f"depthwise kernel {weight.shape} does not fit {x.shape[-1]} channels")
    xp = pad_hw(x, pad)
    h_out = (xp.shape[1] - kh) // stride + 1
    w_out = (xp.shape[2] - kw) // stride + 1
    out = np.zeros((x.shape[0], h_out, w_out, channels), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            tap = xp[
                :,
                i : i + stride * (h_out - 1) + 1 : stride,
                j : j + stride * (w_out - 1) + 1 : stride,
            ]
            out += tap * weight[:, 0, i, j].astype(x.dtype)
    return out


def batch_norm(x: np.ndarray, state: dict[str, np.ndarray], prefix: str) -> np.ndarray:
    """Inference BatchNorm: ``(x - mean) / sqrt(var + eps) * gamma + beta`` per channel."""
    dtype = x.dtype
    mean = state[f"{prefix}.running_mean"].astype(dtype)
    var = state[f"{prefix}.running_var"].astype(dtype)
    gamma = state[f"{prefix}.weight"].astype(dtype)
    beta = state[f"{prefix}.bias"].astype(dtype)
    return (x - mean) / np.sqrt(var + BN_EPSILON) * gamma + beta


def relu6(x: np.ndarray) -> np.ndarray:
    return np.clip(x, 0.0, 6.0)


def inverted_residual(
    x: np.ndarray, state: dict[str, np.ndarray], index: int, expansion: int, stride: int
) -> np.ndarray:
    """``features.{index}``: one inverted residual block."""
    prefix = f"features.{index}.conv"
    in_channels = x.shape[-1]
    h = x
    part = 0
    if expansion != 1:
        expand = state[f"{prefix}.0.0.weight"]
        if expand.shape != (in_channels * expansion, in_channels, 1, 1):
            raise ValueError(f"{prefix}.0.0.weight has shape {expand.shape}")
        h = relu6(batch_norm(conv2d(h, expand), state, f"{prefix}.0.1"))
        part = 1
    h = depthwise_conv2d(h, state[f"{prefix}.{part}.0.weight"], stride=stride, pad=1)
    h = relu6(batch_norm(h, state, f"{prefix}.{part}.1"))
    h = conv2d(h, state[f"{prefix}.{part + 1}.weight"])  # linear bottleneck: no activation
    h = batch_norm(h, state, f"{prefix}.{part + 2}")
    if stride == 1 and h.shape == x.shape:  # torchvision: stride 1 and in == out channels
        h = h + x
    return h


def features(x: np.ndarray, state: dict[str, np.ndarray]) -> np.ndarray:
    """``model.features``: NHWC input to the ``N x H/32 x W/32 x 1280`` feature map."""
    h = conv2d(x, state["features.0.0.weight"], stride=2, pad=1)
    h = relu6(batch_norm(h, state, "features.0.1"))
    if h.shape[-1] != STEM_CHANNELS:
        raise ValueError(f"features.0 gave {h.shape[-1]} channels, not {STEM_CHANNELS}")
    for index, expansion, channels, stride in block_config():
        h = inverted_residual(h, state, index, expansion, stride)
        if h.shape[-1] != channels:
            raise ValueError(f"features.{index} gave {h.shape[-1]} channels, not {channels}")
    last = len(block_config()) + 1  # 18
    h = conv2d(h, state[f"features.{last}.0.weight"])
    if h.shape[-1] != LAST_CHANNELS:
        raise ValueError(f"features.{last} gave {h.shape[-1]} channels, not {LAST_CHANNELS}")
    return relu6(batch_norm(h, state, f"features.{last}.1"))


def logits(images: np.ndarray, state: dict[str, np.ndarray], dtype=np.float64) -> np.ndarray:
    """torchvision ``mobilenet_v2(...).eval()(x)``, for a preprocessed NHWC batch.

    Args:
        images: ``N x H x W x 3``, already normalised the torchvision way.
        state: torchvision's state dict as NumPy arrays (key names unchanged).
        dtype: the precision to compute in.

    Returns:
        ``N x 1000`` logits (no softmax).
    """
    h = features(np.asarray(images, dtype=dtype), state)
    pooled = h.mean(axis=(1, 2))
    weight = state["classifier.1.weight"].astype(dtype)
    bias = state["classifier.1.bias"].astype(dtype)
    return pooled @ weight.T + bias
