"""TensorFlow's native CPU kernels: oneDNN's, unless the user chose, and bfloat16 where native.

TensorFlow turns its oneDNN (Intel's Deep Neural Network Library) kernels on by default
only on some processors; elsewhere, such as the AMD EPYC (Zen 3) cores this project was
first measured on, it runs its own. There, oneDNN trained ``fast-cnn`` (32, 64, 128
filters then) about twice as fast (a step of 256 Fashion-MNIST images: about 0.23 s
against 0.47 s on two cores), with results that differ only by floating-point rounding.
``TF_ENABLE_ONEDNN_OPTS`` is read once, when TensorFlow loads, so ``import imgrec`` sets
it first; a value the user set is never overridden (``TF_ENABLE_ONEDNN_OPTS=0`` brings
TensorFlow's own kernels back).

On CPUs with native bfloat16 arithmetic (Intel's AMX, AVX-512 BF16), a recipe that asks
for it (``fast-cnn``) trains in bfloat16 through oneDNN's automatic mixed precision
(``compute_precision``): on two Sapphire Rapids cores a ``fast-cnn`` step of 256 images
takes about 0.33 s against 0.52 s in float32. The model and its files stay float32;
``IMGREC_BFLOAT16=0`` keeps training in float32.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"


def prefer_onednn() -> None:
    """Ask TensorFlow for its oneDNN kernels, unless ``TF_ENABLE_ONEDNN_OPTS`` is set.

    Called by ``import imgrec``, before anything imports TensorFlow; the processes imgrec
    starts inherit the choice.
    """
    os.environ.setdefault(ONEDNN_ENV, "1")


# --------------------------------------------------------------------------- bfloat16

# The precisions a recipe may train in (``ChapterArchitecture.precision``).
FLOAT32 = "float32"
BFLOAT16 = "bfloat16"
BFLOAT16_ENV = "IMGREC_BFLOAT16"
# The CPU flags (Linux's /proc/cpuinfo) of native bfloat16 arithmetic: Intel's AMX tiles
# (Sapphire Rapids and later) and AVX-512 BF16 (Cooper Lake, AMD Zen 4 and later).
BFLOAT16_CPU_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
# TensorFlow's graph rewrite that runs a float32 graph in bfloat16 where oneDNN can.
_ONEDNN_AMP = "auto_mixed_precision_onednn_bfloat16"


def cpu_has_bfloat16(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> bool:
    """Whether this CPU does bfloat16 arithmetic natively (AMX or AVX-512 BF16).

    Read from ``cpuinfo``'s flags; False where there is no such file (not Linux).
    """
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as file:
            for line in file:
                if line.startswith("flags"):
                    return not BFLOAT16_CPU_FLAGS.isdisjoint(line.split(":", 1)[-1].split())
    except OSError:
        return False
    return False


def training_precision(asked: str) -> str:
    """The arithmetic a fit that asked for ``asked`` runs in here.

    ``"bfloat16"`` where the CPU has it natively, Keras runs on TensorFlow, oneDNN is
    on and ``IMGREC_BFLOAT16`` is not ``0``; ``"float32"`` otherwise.
    """
    import keras

    if (
        asked != BFLOAT16
        or os.environ.get(BFLOAT16_ENV, "1") == "0"
        or os.environ.get(ONEDNN_ENV, "1") == "0"
        or keras.backend.backend() != "tensorflow"
    ):
        return FLOAT32
    return BFLOAT16 if cpu_has_bfloat16() else FLOAT32


@contextmanager
def compute_precision(precision: str) -> Iterator[None]:
    """Within: TensorFlow's new graphs compute in ``precision``.

    ``"bfloat16"`` turns on oneDNN's automatic mixed precision, a graph rewrite that
    runs convolutions, matrix products and the like in bfloat16 and keeps float32 where
    it matters (the loss, the softmax, the weights and their updates): the model and its
    files stay float32. The setting is TensorFlow's, for the whole process: a graph that
    another thread builds meanwhile is rewritten too. The earlier setting comes back on
    the way out. ``"float32"`` changes nothing.
    """
    if precision != BFLOAT16:
        yield
        return
    import tensorflow as tf

    before = bool(tf.config.optimizer.get_experimental_options().get(_ONEDNN_AMP, False))
    tf.config.optimizer.set_experimental_options({_ONEDNN_AMP: True})
    try:
        yield
    finally:
        tf.config.optimizer.set_experimental_options({_ONEDNN_AMP: before})
