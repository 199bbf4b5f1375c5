"""A Keras callback that times each epoch's training steps, for the bench scripts.

It measures from the start of an epoch to the end of its last training batch, so
validation, checkpoints and plots are left out. Import it after choosing the backend.
"""

from __future__ import annotations

import time


def step_timer():
    """A fresh callback; its ``seconds`` list gets one entry per epoch."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.last = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(self.last - self.start)

    return StepTimer()


def steady_images_per_second(seconds: list[float], images_per_epoch: int) -> float:
    """Images per second over all epochs but the first (which traces the graph)."""
    steady = seconds[1:] or seconds
    return images_per_epoch * len(steady) / sum(steady)
