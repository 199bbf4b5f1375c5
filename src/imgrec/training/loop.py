"""The fit loop: Keras's ``model.fit`` with imgrec's checkpoints, early stopping,
Ctrl-C handling and a progress bar that counts true steps.

Every way imgrec trains (a chapter network, a resumed run, the stages of transfer
learning) ends here, with a ``TrainingRecord`` saying what the run is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from imgrec.core.choices import CLASS_WEIGHTS
from imgrec.core.errors import ImgrecError
from imgrec.core.native import FLOAT32, compute_precision, training_precision
from imgrec.datasets import Dataset
from imgrec.models.chapter import is_binary_output
from imgrec.models.metadata import ModelInfo
from imgrec.training.checkpoints import Checkpoints, RunFiles, write_json
from imgrec.training.distribute import Placement
from imgrec.training.flips import AlternatingFlips
from imgrec.training.record import DEFAULT_BATCH_SIZE, TrainingRecord


def compile_classifier(
    model: keras.Model,
    lr: float,
    *,
    schedule: str = "constant",
    weight_decay: float = 0.0,
    total_steps: int = 1,
    steps_per_execution: int = 1,
    optimizer: str = "adam",
    warmup_steps: int = 0,
    label_smoothing: float = 0.0,
) -> None:
    """An optimizer, a constant or cosine learning rate, the right loss.

    ``optimizer`` is ``"adam"`` (AdamW with weight decay) or ``"sgd"`` (Nesterov momentum
    0.9, decoupled weight decay). ``warmup_steps`` of a cosine schedule rise linearly from
    0 to ``lr``. With ``label_smoothing`` the loss is categorical cross-entropy on one-hot
    targets (``fit_and_save`` makes them). ``steps_per_execution`` runs several steps per
    call into the backend: worth it when a step is tiny, such as a new head on cached
    features.
    """
    if schedule == "cosine":
        warmup = min(warmup_steps, total_steps - 1)
        lr = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else lr,
            decay_steps=total_steps - warmup,
            warmup_target=lr if warmup else None,
            warmup_steps=warmup,
        )
    if optimizer == "sgd":
        chosen = keras.optimizers.SGD(lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    elif weight_decay:
        chosen = keras.optimizers.AdamW(lr, weight_decay=weight_decay)
    else:
        chosen = keras.optimizers.Adam(lr)
    binary = is_binary_output(model)
    if binary:
        loss = "binary_crossentropy"
    elif label_smoothing:
        loss = keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing)
    else:
        loss = "sparse_categorical_crossentropy"
    model.compile(
        optimizer=chosen,
        loss=loss,
        metrics=["binary_accuracy" if binary else "accuracy"],
        steps_per_execution=steps_per_execution,
    )


def wants_one_hot(model: keras.Model) -> bool:
    """Whether ``model`` was compiled for one-hot targets (a smoothed cross-entropy)."""
    return isinstance(getattr(model, "loss", None), keras.losses.CategoricalCrossentropy)


@dataclass(frozen=True)
class FitOptions:
    """How to fit, whatever is fitted.

    Args:
        batch_size: images per step.
        class_weight: ``"balanced"`` weighs classes by inverse frequency, or None.
        patience: epochs without a better validation loss before stopping (0: never).
        verbose: 0 silent, 1 a progress bar, 2 one line per epoch.
        callbacks: more Keras callbacks, run after imgrec's own.
        placement: the devices and processes to train on (default: one device).
    """

    batch_size: int = DEFAULT_BATCH_SIZE
    class_weight: str | None = None
    patience: int = 5
    verbose: int = 1
    callbacks: tuple[keras.callbacks.Callback, ...] = ()
    placement: Placement = field(default_factory=Placement)

    def __post_init__(self) -> None:
        if self.class_weight not in (None, *CLASS_WEIGHTS):
            raise ImgrecError(f"class_weight must be 'balanced' or None, got {self.class_weight!r}")


@dataclass(frozen=True)
class FitOutcome:
    """What a fit did: the record it reached and what it wrote.

    Without validation images (``validated`` False) the best epoch is the one of the
    lowest training loss, and ``best_val_loss`` and ``best_val_accuracy`` are its
    training figures.
    """

    record: TrainingRecord
    files: RunFiles
    best_written: bool
    best_val_loss: float | None
    best_val_accuracy: float | None
    interrupted: bool
    seconds: float
    distribution: dict[str, Any] | None = None
    precision: str = FLOAT32
    validated: bool = True

    def to_dict(self) -> dict[str, Any]:
        """The plain data ``train`` returns; a file not written is None."""
        saved = self.record.epochs_done > 0
        distribution = {"distribution": self.distribution} if self.distribution else {}
        return distribution | {
            "model": str(self.files.best) if self.best_written else None,
            "last": str(self.files.last) if saved else None,
            "history": str(self.files.history) if saved else None,
            "curves": str(self.files.curves) if saved else None,
            "epochs_done": self.record.epochs_done,
            "epochs_asked": self.record.epochs_asked,
            "best_val_loss": self.best_val_loss,
            "best_val_accuracy": self.best_val_accuracy,
            "validated": self.validated,
            "interrupted": self.interrupted,
            "seconds": self.seconds,
            "precision": self.precision,
        }


class StepProgress(keras.callbacks.ProgbarLogger):
    """Keras's progress bar, counting the steps that ran, never more than an epoch has.

    With several steps per call into the backend, Keras reports the last step a call
    could have run, so an epoch of one step showed ``16/1`` and a bar 16 times too wide.
    """

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.target is not None:
            batch = min(batch, self.target - 1)
        super().on_train_batch_end(batch, logs)


def fit_and_save(
    model: keras.Model,
    data: Dataset,
    record: TrainingRecord,
    *,
    files: RunFiles,
    info: ModelInfo,
    options: FitOptions,
    inputs: tuple[np.ndarray, np.ndarray | None] | None = None,
    saved_model: keras.Model | None = None,
    epochs: int | None = None,
    last_on_disk: bool = False,
    best_on_disk: bool = False,
) -> FitOutcome:
    """Fit the compiled ``model`` from ``record.epochs_done`` to ``record.epochs_asked``.

    Args:
        model: the compiled model to fit.
        data: the data set; its labels are the targets.
        record: the run so far (its epochs and history continue).
        files: where the checkpoints go; info: the metadata saved with them.
        options: batch size, class weights, patience, verbosity, callbacks.
        inputs: what to feed instead of the images (train, validation), such as
            cached backbone features for a new head.
        saved_model: the model to save when it is not ``model`` (the whole network
            when ``model`` is only its head).
        epochs: the epoch to stop at, when this fit is one stage of the run
            (default: ``record.epochs_asked``).
        last_on_disk, best_on_disk: whether ``files.last`` holds ``record`` already,
            and ``files.best`` the best of its epochs (a resumed run, a later stage).
    """
    if data.skipped:
        write_json(files.skipped, [vars(s) for s in data.skipped])
    placement = options.placement
    placement.check_batch_size(options.batch_size)
    record = dataclasses.replace(record, devices=placement.devices)
    weights = _balanced_weights(data.train.labels) if options.class_weight else None
    (train_x, train_y), validation = _fit_arrays(data, inputs, placement, wants_one_hot(model))
    checkpoints = Checkpoints(
        files,
        info,
        record,
        bool(validation),
        saved_model=saved_model,
        last_on_disk=last_on_disk,
        best_on_disk=best_on_disk,
    )
    callbacks = _callbacks(checkpoints, options, has_validation=validation is not None)
    precision = training_precision(record.precision)
    start = time.perf_counter()
    feed = _training_feed(train_x, train_y, record, placement.local_batch_size(options.batch_size),
                          weights)  # fmt: skip
    with compute_precision(precision), _stop_on_sigint(model) as interrupted:
        model.fit(
            **feed,
            epochs=epochs or record.epochs_asked,
            initial_epoch=record.epochs_done,
            validation_data=validation,
            callbacks=callbacks,
            verbose=options.verbose,
        )
    return FitOutcome(
        record=checkpoints.record,
        files=files,
        best_written=checkpoints.best_written,
        best_val_loss=checkpoints.best_val_loss,
        best_val_accuracy=checkpoints.best_val_accuracy,
        interrupted=interrupted.is_set,
        seconds=time.perf_counter() - start,
        distribution=placement.report(len(data.train), len(data.val) if data.val else 0)
        if placement.distributed
        else None,
        precision=precision,
        validated=validation is not None,
    )


def _callbacks(
    checkpoints: Checkpoints, options: FitOptions, *, has_validation: bool
) -> list[keras.callbacks.Callback]:
    """The fit's callbacks: checkpoints first, early stopping, the caller's, the progress bar."""
    callbacks: list[keras.callbacks.Callback] = [checkpoints]
    if has_validation and options.patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=options.patience)
        )
    callbacks += options.callbacks
    if options.verbose:
        callbacks.append(StepProgress())
    return callbacks


def fit_with_checkpoints(
    model: keras.Model,
    data: Dataset,
    *,
    out: Path,
    info: ModelInfo,
    training: dict[str, Any],
    history: dict[str, list[float]],
    epochs: int,
    batch_size: int,
    class_weight: str | None = None,
    patience: int = 5,
    verbose: int = 1,
    callbacks: list[keras.callbacks.Callback] | None = None,
    inputs: tuple[np.ndarray, np.ndarray | None] | None = None,
    saved_model: keras.Model | None = None,
) -> dict[str, Any]:
    """``fit_and_save`` with the training record as a dict, as imgrec 0.1 called it.

    Args:
        training: the record's JSON form (see ``TrainingRecord``).
        history: the epochs done so far, per metric; extended in place.
        epochs: the total epochs to reach; ``training["epochs_done"]`` are done.
        The others: see ``fit_and_save`` and ``FitOptions``.
    """
    record = TrainingRecord.from_json({"epochs_asked": epochs} | training | {"history": history})
    files = RunFiles.for_model(out)
    options = FitOptions(batch_size, class_weight, patience, verbose, tuple(callbacks or ()))
    outcome = fit_and_save(
        model,
        data,
        record,
        files=files,
        info=info,
        options=options,
        inputs=inputs,
        saved_model=saved_model,
        epochs=epochs,
        last_on_disk=files.last.is_file() and bool(history),
        best_on_disk=files.best.is_file() and bool(history),
    )
    history.clear()
    history.update(outcome.record.history)
    training.update(outcome.record.to_json())
    return outcome.to_dict()


def _fit_arrays(
    data: Dataset,
    inputs: tuple[np.ndarray, np.ndarray | None] | None,
    placement: Placement,
    one_hot: bool = False,
) -> tuple[tuple[Any, Any], tuple[Any, Any] | None]:
    """What this process fits on: (images or features, targets), and the validation pair."""
    train_x, val_x = inputs or (data.train.images, data.val.images if data.val else None)

    def targets(labels: np.ndarray) -> np.ndarray:
        if not one_hot:
            return labels
        return np.eye(len(data.class_names), dtype=np.float32)[labels]

    train = placement.shard(train_x, targets(data.train.labels))
    if data.val is None:
        return (train[0], train[1]), None
    return (train[0], train[1]), placement.shard(val_x, targets(data.val.labels))


def _training_feed(
    images: Any,
    targets: Any,
    record: TrainingRecord,
    batch_size: int,
    class_weight: dict[int, float] | None,
) -> dict[str, Any]:
    """``model.fit``'s training data: the arrays, or batches whose flips alternate."""
    if not record.alternate_flips:
        return {"x": images, "y": targets, "batch_size": batch_size, "class_weight": class_weight}
    weights = None
    if class_weight is not None:
        labels = np.argmax(targets, axis=-1) if np.ndim(targets) > 1 else targets
        weights = np.array([class_weight[int(label)] for label in labels], dtype=np.float32)
    flips = AlternatingFlips(images, targets, batch_size, seed=record.split.seed,
                             first_epoch=record.epochs_done, sample_weights=weights)  # fmt: skip
    return {"x": flips}


def _balanced_weights(labels: np.ndarray) -> dict[int, float]:
    counts = np.bincount(labels)
    return {c: len(labels) / (len(counts) * n) for c, n in enumerate(counts) if n}


class _Flag:
    is_set = False


@contextlib.contextmanager
def _stop_on_sigint(model: keras.Model) -> Iterator[_Flag]:
    """First Ctrl-C: finish the batch, save, return. Second Ctrl-C: stop at once."""
    flag = _Flag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def request_stop(signum, frame):
        flag.is_set = True
        model.stop_training = True
        print(
            "\nimgrec: stopping after this batch; an unfinished epoch is not counted "
            "(Ctrl-C again to abort)",
            file=sys.stderr,
        )
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)
