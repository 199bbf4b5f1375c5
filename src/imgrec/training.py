"""Train a network on a data set: the chapter's ``model.fit``, with what it leaves to users.

``train`` loads the data once (decoded into the uint8 cache), builds the network
with its augmentation inside (Keras preprocessing layers, so it runs wherever the
model trains), and fits it with Keras's own loop and progress bar. Around the loop:

- the best model so far (lowest validation loss) is saved atomically to ``out`` and
  the latest state, optimizer included, to ``<out>.last.keras``, after every epoch;
- early stopping on the validation loss;
- Ctrl-C (SIGINT) stops after the current batch, saves, and returns cleanly; a
  second Ctrl-C stops at once;
- ``resume`` continues a saved run with its optimizer state and epoch count;
- the history (JSON) and the training curves (PNG) sit next to the model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np

from imgrec.augment import augmentation_layer, parse_augment, spec_to_string
from imgrec.datasets import Dataset, load_dataset
from imgrec.errors import ImgrecError
from imgrec.models.loading import load_keras_file, save_model
from imgrec.models.metadata import ModelInfo, attach_info, model_info
from imgrec.models.preprocessing import Preprocessing
from imgrec.models.seed import build_seed, get_seed_architecture, is_binary_output
from imgrec.plots import plot_training_curves
from imgrec.storage import write_bytes_atomic


def companion_path(out: str | os.PathLike, suffix: str) -> Path:
    """A file that belongs to the model ``out``: ``model.keras`` -> ``model<suffix>``."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".keras") + suffix)


def train(
    dataset: str | os.PathLike | Dataset,
    arch: str = "cifar-cnn",
    *,
    out: str | os.PathLike = "model.keras",
    epochs: int | None = None,
    batch_size: int = 64,
    lr: float | None = None,
    image_size: tuple[int, int] | None = None,
    augment: str = "",
    resume: str | os.PathLike | None = None,
    class_weight: str | None = None,
    val_split: float = 0.1,
    limit_per_class: int | None = None,
    seed: int = 0,
    patience: int = 5,
    verbose: int = 1,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> dict[str, Any]:
    """Train ``arch`` on ``dataset`` and save the best model to ``out``.

    Args:
        dataset: a data set name or path (see ``imgrec datasets``), or a loaded one.
        arch: a seed architecture (``cifar-cnn``, ``catdog-cnn``, ``mnist-cnn``,
            ``vgg-bn``); ignored with ``resume``.
        out: where the best model goes (``.keras``); its companions
            ``.last.keras``, ``.history.json``, ``.curves.png`` and, when files were
            skipped, ``.skipped.json`` go beside it.
        epochs: total epochs to reach (default: the architecture's recipe, or on
            resume what the interrupted run asked for).
        batch_size: images per step.
        lr: learning rate (default: the architecture's recipe).
        image_size: height and width for photo folders (default: the architecture's
            input size); array data sets keep their own size unless this is given.
        augment: an augmentation spec such as ``"flip,rotate=15,zoom=0.1"``.
        resume: a ``.keras`` file saved by ``train`` to continue from.
        class_weight: ``"balanced"`` weighs classes by inverse frequency.
        val_split: fraction of the training data held out for validation when the
            data set has no validation split of its own.
        limit_per_class: keep at most this many training images per class.
        seed: seeds the split, the shuffling, the augmentation and the weights.
        patience: epochs without a better validation loss before stopping.
        verbose: 0 silent, 1 Keras's progress bar, 2 one line per epoch.
        callbacks: more Keras callbacks for ``fit``, run after imgrec's own.

    Returns:
        Plain data: paths written, epochs done, best validation loss and accuracy,
        whether the run was interrupted, the data set summary and skipped files.

    Raises:
        DatasetError, ModelError, SpecError: bad data set, architecture or spec.
    """
    if class_weight not in (None, "balanced"):
        raise ImgrecError(f"class_weight must be 'balanced' or None, got {class_weight!r}")
    keras.utils.set_random_seed(seed)
    out = Path(out)
    if out.suffix != ".keras":
        raise ImgrecError(f"{out}: the model file must end in .keras")

    if resume is not None:
        model = load_keras_file(resume, compile=True)
        previous = model_info(model)
        if not previous.training:
            raise ImgrecError(f"{resume}: not a model trained by imgrec; nothing to resume")
        training = dict(previous.training)
        height, width, channels = model.input_shape[1:]
        data = _load(dataset, (height, width), channels, val_split, limit_per_class, seed)
        if tuple(data.class_names) != previous.class_names:
            raise ImgrecError(
                f"{resume} was trained on classes {list(previous.class_names)}, "
                f"but the data set has {list(data.class_names)}"
            )
        target = epochs or training["epochs_asked"]
        history = training["history"]
    else:
        architecture = get_seed_architecture(arch)
        default_height, default_width, _ = architecture.default_input_shape
        size = image_size or None
        data = _load(
            dataset,
            size,
            None,
            val_split,
            limit_per_class,
            seed,
            folder_size=(default_height, default_width),
        )
        augment_spec = parse_augment(augment)
        model = build_seed(
            architecture.name,
            input_shape=data.train.images.shape[1:],
            num_classes=len(data.class_names),
            augmentation=augmentation_layer(augment_spec, seed=seed),
        )
        target = epochs or architecture.epochs
        steps = target * _steps_per_epoch(len(data.train.labels), batch_size)
        _compile(model, architecture, lr or architecture.learning_rate, steps)
        history = {}
        training = {
            "architecture": architecture.name,
            "augment": spec_to_string(augment_spec),
            "batch_size": batch_size,
            "seed": seed,
            "val_split": val_split,
        }
        previous = ModelInfo(
            name=out.name,
            class_names=tuple(data.class_names),
            preprocessing=Preprocessing(size=data.train.images.shape[1:3], name="pixels:0-255"),
            weights=f"trained by imgrec on {data.name}",
        )
    training |= {
        "dataset": {"name": data.name, "source": data.source, "fingerprint": data.fingerprint},
        "epochs_asked": target,
    }
    attach_info(model, previous)

    done = training.get("epochs_done", 0)
    if done >= target:
        raise ImgrecError(f"{resume} has already trained {done} of {target} epochs")
    if data.skipped:
        _write_json(companion_path(out, ".skipped.json"), [vars(s) for s in data.skipped])

    validation = (data.val.images, data.val.labels) if data.val else None
    checkpoints = _Checkpoints(out, previous, training, history, has_validation=bool(validation))
    fit_callbacks = [checkpoints]
    if validation is not None and patience > 0:
        fit_callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience))
    fit_callbacks += callbacks or []

    start = time.perf_counter()
    with _stop_on_sigint(model) as interrupted:
        model.fit(
            data.train.images,
            data.train.labels,
            batch_size=batch_size,
            epochs=target,
            initial_epoch=done,
            validation_data=validation,
            class_weight=_balanced_weights(data.train.labels) if class_weight else None,
            callbacks=fit_callbacks,
            verbose=verbose,
        )
    seconds = time.perf_counter() - start
    return {
        "model": str(out),
        "last": str(companion_path(out, ".last.keras")),
        "history": str(companion_path(out, ".history.json")),
        "curves": str(companion_path(out, ".curves.png")),
        "epochs_done": checkpoints.training["epochs_done"],
        "epochs_asked": target,
        "best_val_loss": checkpoints.best_val_loss,
        "best_val_accuracy": checkpoints.best_val_accuracy,
        "interrupted": interrupted.is_set,
        "seconds": seconds,
        "dataset": data.summary(),
        "skipped": [vars(s) for s in data.skipped],
    }


def _load(
    spec, image_size, channels, val_split, limit_per_class, seed, folder_size=None
) -> Dataset:
    if isinstance(spec, Dataset):
        return spec
    return load_dataset(
        spec,
        image_size=image_size,
        default_image_size=folder_size,
        channels=channels,
        val_split=val_split,
        limit_per_class=limit_per_class,
        seed=seed,
    )


def _steps_per_epoch(samples: int, batch_size: int) -> int:
    return max(1, -(-samples // batch_size))


def _compile(model: keras.Model, architecture, lr: float, total_steps: int) -> None:
    if architecture.lr_schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=total_steps)
    if architecture.weight_decay:
        optimizer = keras.optimizers.AdamW(lr, weight_decay=architecture.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(lr)
    binary = is_binary_output(model)
    model.compile(
        optimizer=optimizer,
        loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
        metrics=["binary_accuracy" if binary else "accuracy"],
    )


def _balanced_weights(labels: np.ndarray) -> dict[int, float]:
    counts = np.bincount(labels)
    return {c: len(labels) / (len(counts) * n) for c, n in enumerate(counts) if n}


def _accuracy(logs: dict[str, float], prefix: str = "") -> float | None:
    for key in ("accuracy", "binary_accuracy"):
        if prefix + key in logs:
            return float(logs[prefix + key])
    return None


class _Checkpoints(keras.callbacks.Callback):
    """After each epoch: save the latest state, the best model, the history and curves."""

    def __init__(
        self,
        out: Path,
        info: ModelInfo,
        training: dict,
        history: dict[str, list[float]],
        has_validation: bool,
    ) -> None:
        super().__init__()
        self.out = out
        self.info = info
        self.training = training
        self.history = {k: list(v) for k, v in history.items()}
        self.has_validation = has_validation
        losses = self.history.get("val_loss" if has_validation else "loss", [])
        self.best_val_loss = min(losses) if losses else None
        self.best_val_accuracy = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        self.training["epochs_done"] = epoch + 1
        self.training["history"] = self.history
        attach_info(self.model, dataclasses.replace(self.info, training=dict(self.training)))
        save_model(self.model, companion_path(self.out, ".last.keras"))
        loss = logs.get("val_loss" if self.has_validation else "loss")
        if loss is not None and (self.best_val_loss is None or loss < self.best_val_loss):
            self.best_val_loss = loss
            self.best_val_accuracy = _accuracy(logs, "val_" if self.has_validation else "")
            save_model(self.model, self.out)
        _write_json(companion_path(self.out, ".history.json"), self.history)
        plot_training_curves(
            self.history, companion_path(self.out, ".curves.png"), title=self.out.name
        )


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
            "\nimgrec: stopping after this batch and saving (Ctrl-C again to abort)",
            file=sys.stderr,
        )
        signal.signal(signal.SIGINT, signal.default_int_handler)

    previous = signal.signal(signal.SIGINT, request_stop)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


def _write_json(path: Path, data: Any) -> None:
    write_bytes_atomic(path, json.dumps(data, indent=1).encode())
