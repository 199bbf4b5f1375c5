"""What a classifier's outputs mean, without Keras: probabilities per class, the top classes.

Batch workers (``imgrec.deploy.batch_worker``) import this module and must start
without TensorFlow, so it imports NumPy only; ``imgrec.models.metadata`` re-exports
``class_probabilities``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def class_probabilities(outputs: np.ndarray) -> np.ndarray:
    """A model's outputs as N x classes probabilities, one column per class name.

    A two-class network with a single sigmoid unit gives P(second class); it
    becomes two columns, so every caller can treat every model the same way.
    """
    outputs = np.asarray(outputs)
    if outputs.shape[-1] == 1:
        return np.concatenate([1 - outputs, outputs], axis=-1)
    return outputs


def top_classes(probabilities: np.ndarray, class_names: Sequence[str], top: int) -> list[dict]:
    """The ``top`` most probable classes of one image, most probable first.

    Args:
        probabilities: one image's class probabilities (a row of
            :func:`class_probabilities`).
        class_names: one name per column.
        top: how many classes to report (fewer when the model has fewer).

    Returns:
        ``{"rank", "class", "index", "probability"}`` per class, ``rank`` from 1.
    """
    order = np.argsort(probabilities)[::-1][:top]
    return [
        {
            "rank": rank,
            "class": class_names[i],
            "index": int(i),
            "probability": float(probabilities[i]),
        }
        for rank, i in enumerate(order, start=1)
    ]
