"""The gradient of a class score with respect to a feature map, on any Keras backend.

Gradient-based Class Activation Maps need one derivative: how the score of one class
changes with each value of a convolutional feature map. Keras's model code is
backend-neutral, but taking a derivative is not: each backend has its own mechanism
(``tf.GradientTape``, ``jax.vjp``, ``torch.autograd``), and this module hides which
one runs behind a single function.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np

from imgrec.core.errors import ModelError


def output_and_gradient(
    head: Callable[[object], object], features: np.ndarray, class_index: int
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``head`` on ``features``; differentiate one output column with respect to them.

    Args:
        head: maps a feature-map tensor (``N x H x W x C``) to scores (``N x K``),
            with Keras layers or ``keras.ops``; a model must be wrapped so that it
            is called with ``training=False``.
        features: the feature map, float32 ``N x H x W x C``.
        class_index: the score column to differentiate, ``0 <= class_index < K``.

    Returns:
        ``(outputs, gradient)``: the scores ``N x K`` and the gradient of
        ``outputs[:, class_index]`` (summed over the batch) with respect to
        ``features``, float32, shaped like ``features``.

    Raises:
        ModelError: the Keras backend cannot differentiate (``numpy``, ``openvino``).
    """
    backend = keras.backend.backend()
    features = np.asarray(features, dtype=np.float32)
    if backend == "tensorflow":
        outputs, gradient = _tensorflow(head, features, class_index)
    elif backend == "jax":
        outputs, gradient = _jax(head, features, class_index)
    elif backend == "torch":
        outputs, gradient = _torch(head, features, class_index)
    else:
        raise ModelError(
            f"the Keras backend {backend!r} cannot compute gradients; set KERAS_BACKEND "
            "to tensorflow, jax or torch"
        )
    return (
        np.asarray(keras.ops.convert_to_numpy(outputs), dtype=np.float32),
        np.asarray(keras.ops.convert_to_numpy(gradient), dtype=np.float32),
    )


def _tensorflow(head, features: np.ndarray, class_index: int):
    import tensorflow as tf

    tensor = tf.convert_to_tensor(features)
    with tf.GradientTape() as tape:
        tape.watch(tensor)
        outputs = head(tensor)
        score = tf.reduce_sum(outputs[:, class_index])
    return outputs, tape.gradient(score, tensor)


def _jax(head, features: np.ndarray, class_index: int):
    import jax
    import jax.numpy as jnp

    outputs, pullback = jax.vjp(head, jnp.asarray(features))
    # The cotangent that selects one column: the gradient of that column's sum.
    (gradient,) = pullback(jnp.zeros_like(outputs).at[:, class_index].set(1))
    return outputs, gradient


def _torch(head, features: np.ndarray, class_index: int):
    tensor = keras.ops.convert_to_tensor(features).detach().requires_grad_(True)
    outputs = head(tensor)
    outputs[:, class_index].sum().backward()
    return outputs.detach(), tensor.grad
