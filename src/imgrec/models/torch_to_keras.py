"""Copy a PyTorch state dict into a Keras model, layer by layer, checking everything.

Each architecture module says which Keras layer takes which PyTorch prefix; this
module knows how each kind of layer stores its arrays in the two libraries.
"""

from __future__ import annotations

from collections.abc import Iterable

import keras
import numpy as np
from keras import layers

from imgrec.core.errors import WeightsError

# Keras's BatchNormalization weights are [gamma, beta, moving_mean, moving_variance].
_BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var")


def _torch_arrays(
    layer: keras.layers.Layer, prefix: str
) -> list[tuple[str, tuple[int, ...] | None]]:
    """The state-dict keys that fill ``layer``, in the order of ``layer.weights``.

    Each key comes with the axis permutation that turns the PyTorch array into
    the Keras layout (``None``: the same layout).
    """
    if isinstance(layer, layers.BatchNormalization):
        return [(f"{prefix}.{suffix}", None) for suffix in _BN_SUFFIXES]
    if isinstance(layer, layers.DepthwiseConv2D):
        # PyTorch (C, 1, k, k) -> Keras (k, k, C, 1).
        return [(f"{prefix}.weight", (2, 3, 0, 1))]
    if isinstance(layer, layers.Conv2D):
        # PyTorch (out, in, kh, kw) -> Keras (kh, kw, in, out).
        kernel = [(f"{prefix}.weight", (2, 3, 1, 0))]
        return kernel + ([(f"{prefix}.bias", None)] if layer.use_bias else [])
    if isinstance(layer, layers.Dense):
        # PyTorch (out, in) -> Keras (in, out).
        return [(f"{prefix}.weight", (1, 0)), (f"{prefix}.bias", None)]
    raise WeightsError(f"layer {layer.name!r} ({type(layer).__name__}) has no PyTorch mapping")


def _keras_array(
    state_dict: dict[str, np.ndarray],
    key: str,
    axes: tuple[int, ...] | None,
    variable: keras.Variable,
    layer_name: str,
    architecture: str,
) -> np.ndarray:
    """``state_dict[key]`` in Keras's layout and ``variable``'s dtype, shape checked."""
    if key not in state_dict:
        raise WeightsError(f"{architecture} state dict has no {key!r} (for layer {layer_name!r})")
    value = np.asarray(state_dict[key])
    if axes is not None:
        if value.ndim != len(axes):
            raise WeightsError(
                f"{key!r} has shape {value.shape}; layer {layer_name!r} needs a {len(axes)}-D array"
            )
        value = value.transpose(axes)
    if tuple(value.shape) != tuple(variable.shape):
        raise WeightsError(
            f"{key!r} has shape {tuple(state_dict[key].shape)}, which does not fit "
            f"layer {layer_name!r} (Keras shape {tuple(variable.shape)})"
        )
    return value.astype(variable.dtype)


def copy_state_dict(
    model: keras.Model,
    state_dict: dict[str, np.ndarray],
    layer_map: Iterable[tuple[str, str]],
    architecture: str,
    ignored_prefixes: tuple[str, ...] = (),
) -> None:
    """Copy ``state_dict`` into ``model`` following ``layer_map``.

    Every entry must be used exactly once (``num_batches_tracked`` only counts
    training steps and is ignored, as are keys under ``ignored_prefixes``), every
    layer that holds weights must be filled, and every array must have the shape
    its layer expects. Everything is checked before anything is assigned, so a
    failed load leaves the model as it was.

    Args:
        model: the Keras model to fill.
        state_dict: PyTorch names to NumPy arrays.
        layer_map: pairs (Keras layer name, PyTorch key prefix).
        architecture: the network's name, for messages.
        ignored_prefixes: state-dict keys the model has no place for (a left-out top).

    Raises:
        WeightsError: a key is missing, unexpected or of the wrong shape (the
            message names it), or the model lacks a layer the weights need.
    """
    assignments: list[tuple[keras.Variable, np.ndarray]] = []
    used: set[str] = set()
    mapped_layers: set[str] = set()
    for layer_name, prefix in layer_map:
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            raise WeightsError(
                f"model {model.name!r} has no layer {layer_name!r} for '{prefix}.*': "
                f"was it built as {architecture}?"
            ) from None
        mapped_layers.add(layer_name)
        sources = _torch_arrays(layer, prefix)
        if len(sources) != len(layer.weights):
            raise WeightsError(
                f"layer {layer_name!r} has {len(layer.weights)} weights, "
                f"expected {len(sources)} for '{prefix}.*'"
            )
        for (key, axes), variable in zip(sources, layer.weights, strict=True):
            if key in used:
                raise WeightsError(f"state dict entry {key!r} would be used twice")
            used.add(key)
            value = _keras_array(state_dict, key, axes, variable, layer_name, architecture)
            assignments.append((variable, value))

    # A layer with weights that no entry fills would silently keep random values.
    unfilled = [
        layer.name for layer in model.layers if layer.weights and layer.name not in mapped_layers
    ]
    if unfilled:
        raise WeightsError(f"no PyTorch weights map to layers {unfilled}")

    def expected_unused(key: str) -> bool:
        return key.endswith(".num_batches_tracked") or key.startswith(ignored_prefixes)

    unused = sorted(k for k in state_dict if k not in used and not expected_unused(k))
    if unused:
        raise WeightsError(f"state dict entries not used by the model: {unused}")

    for variable, value in assignments:
        variable.assign(value)
