"""TensorFlow's native CPU kernels: oneDNN's, unless the user chose.

TensorFlow turns its oneDNN (Intel's Deep Neural Network Library) kernels on by default
only on some processors; elsewhere, such as the AMD EPYC cores this project is measured
on, it runs its own. There, oneDNN trains ``fast-cnn`` about twice as fast (a step of 256
Fashion-MNIST images: about 0.23 s against 0.47 s on two cores), with results that differ
only by floating-point rounding. ``TF_ENABLE_ONEDNN_OPTS`` is read once, when TensorFlow
loads, so ``import imgrec`` sets it first; a value the user set is never overridden
(``TF_ENABLE_ONEDNN_OPTS=0`` brings TensorFlow's own kernels back).
"""

from __future__ import annotations

import os

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"


def prefer_onednn() -> None:
    """Ask TensorFlow for its oneDNN kernels, unless ``TF_ENABLE_ONEDNN_OPTS`` is set.

    Called by ``import imgrec``, before anything imports TensorFlow; the processes imgrec
    starts inherit the choice.
    """
    os.environ.setdefault(ONEDNN_ENV, "1")
