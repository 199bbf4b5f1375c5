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
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np

from imgrec.core.choices import CLASS_WEIGHTS
from imgrec.core.errors import ImgrecError
from imgrec.core.plots import plot_training_curves
from imgrec.core.storage import atomic_path, write_bytes_atomic
from imgrec.datasets import Dataset, load_dataset
from imgrec.models.chapter import build_seed, get_seed_architecture, is_binary_output
from imgrec.models.loading import load_keras_file, save_model
from imgrec.models.metadata import ModelInfo, attach_info, model_info
from imgrec.models.preprocessing import Preprocessing
from imgrec.models.zoo import get_entry
from imgrec.training.augment import augmentation_layer, parse_augment, spec_to_string

DEFAULT_BATCH_SIZE = 64
DEFAULT_VAL_SPLIT = 0.1
# Epochs for transfer learning when --epochs is not given.
TRANSFER_EPOCHS = 10
# Models and curves are written at most this often during training (and at its end).
SAVE_EVERY_S = 30.0


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
    batch_size: int | None = None,
    lr: float | None = None,
    image_size: tuple[int, int] | None = None,
    augment: str = "",
    resume: str | os.PathLike | None = None,
    class_weight: str | None = None,
    val_split: float | None = None,
    limit_per_class: int | None = None,
    seed: int | None = None,
    patience: int = 5,
    verbose: int = 1,
    callbacks: list[keras.callbacks.Callback] | None = None,
    transfer: str | None = None,
    freeze: int | None = None,
    unfreeze_from: str | None = None,
) -> dict[str, Any]:
    """Train ``arch`` on ``dataset`` and save the best model to ``out``.

    Args:
        dataset: a data set name or path (see ``imgrec datasets``), or a loaded one.
        arch: a seed architecture (``cifar-cnn``, ``catdog-cnn``, ``mnist-cnn``,
            ``vgg-bn``), or a zoo network for transfer learning (``mobilenet_v2``);
            ignored with ``resume``.
        out: where the best model goes (``.keras``); its companions
            ``.last.keras``, ``.history.json``, ``.curves.png`` and, when files were
            skipped, ``.skipped.json`` go beside it.
        epochs: total epochs to reach (default: the architecture's recipe, or on
            resume what the interrupted run asked for).
        batch_size: images per step (default 64; on resume, the run's own).
        lr: learning rate (default: the architecture's recipe).
        image_size: height and width for photo folders (default: the architecture's
            input size); array data sets keep their own size unless this is given.
        augment: an augmentation spec such as ``"flip,rotate=15,zoom=0.1"``.
        resume: a ``.keras`` file saved by ``train`` to continue from.
        class_weight: ``"balanced"`` weighs classes by inverse frequency.
        val_split: fraction of the training data held out for validation when the
            data set has no validation split of its own (default 0.1; on resume,
            the run's own).
        limit_per_class: keep at most this many training images per class.
        seed: seeds the split, the shuffling, the augmentation and the weights
            (default 0; on resume, the run's own).
        patience: epochs without a better validation loss before stopping.
        verbose: 0 silent, 1 Keras's progress bar, 2 one line per epoch.
        callbacks: more Keras callbacks for ``fit``, run after imgrec's own.
        transfer: for a zoo network: ``"head"`` (default), ``"finetune"`` or
            ``"scratch"`` (see ``imgrec.training.transfer``).
        freeze, unfreeze_from: for ``finetune``: how many backbone layers stay
            frozen, or the layer from which on they are trained.

    Returns:
        Plain data: paths written, epochs done, best validation loss and accuracy,
        whether the run was interrupted, the data set summary and skipped files.

    Raises:
        DatasetError, ModelError, SpecError: bad data set, architecture or spec.
    """
    if class_weight not in (None, *CLASS_WEIGHTS):
        raise ImgrecError(f"class_weight must be 'balanced' or None, got {class_weight!r}")
    out = Path(out)
    if out.suffix != ".keras":
        raise ImgrecError(f"{out}: the model file must end in .keras")
    if resume is None:  # a resumed run takes these from its file
        batch_size = batch_size or DEFAULT_BATCH_SIZE
        val_split = DEFAULT_VAL_SPLIT if val_split is None else val_split
        seed = seed or 0
        keras.utils.set_random_seed(seed)

    if resume is not None:
        model = load_keras_file(resume, compile=True)
        previous = model_info(model)
        if not previous.training:
            raise ImgrecError(f"{resume}: not a model trained by imgrec; nothing to resume")
        if model.optimizer is None:
            raise ImgrecError(
                f"{resume}: its last stage trained a head on cached features, which has no "
                "optimizer state to resume; rerun it (the features are cached, it is fast)"
            )
        training = dict(previous.training)
        # The same split (no validation image may have been trained on) and the same
        # batch size (the learning-rate schedule counts steps), unless asked otherwise.
        batch_size = batch_size or training["batch_size"]
        val_split = training.get("val_split", DEFAULT_VAL_SPLIT) if val_split is None else val_split
        seed = training.get("seed", 0) if seed is None else seed
        limit_per_class = limit_per_class or training.get("limit_per_class")
        keras.utils.set_random_seed(seed)
        height, width, channels = model.input_shape[1:]
        data = _load(dataset, (height, width), channels, val_split, limit_per_class, seed)
        if tuple(data.class_names) != previous.class_names:
            raise ImgrecError(
                f"{resume} was trained on classes {list(previous.class_names)}, "
                f"but the data set has {list(data.class_names)}"
            )
        target = epochs or training["epochs_asked"]
        history = training["history"]
    elif is_transfer_architecture(arch):
        entry = get_entry(arch)
        backbone_size = image_size or (entry.input_size, entry.input_size)
        # Photos are decoded at the backbone's size; array data sets keep theirs and the
        # model resizes them up (a cache of Fashion-MNIST at 224 x 224 would take 10 GB).
        data = _load(dataset, None, None, val_split, limit_per_class, seed, backbone_size)
        # transfer.py builds on this module's fitting machinery: imported here, not on top.
        from imgrec.training.transfer import train_transfer

        fitted = train_transfer(
            data,
            arch,
            transfer or "head",
            out=out,
            epochs=epochs or TRANSFER_EPOCHS,
            batch_size=batch_size,
            lr=lr,
            image_size=backbone_size,
            augment=augment,
            freeze=freeze,
            unfreeze_from=unfreeze_from,
            class_weight=class_weight,
            seed=seed,
            val_split=val_split,
            limit_per_class=limit_per_class,
            patience=patience,
            verbose=verbose,
            callbacks=callbacks,
        )
        return fitted | _data_report(data)
    else:
        if transfer is not None:
            raise ImgrecError(f"--transfer needs a zoo network as --arch, not {arch!r}")
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
        compile_classifier(
            model,
            lr or architecture.learning_rate,
            schedule=architecture.lr_schedule,
            weight_decay=architecture.weight_decay,
            total_steps=target * steps_per_epoch(len(data.train.labels), batch_size),
        )
        history = {}
        training = {
            "architecture": architecture.name,
            "augment": spec_to_string(augment_spec),
            "batch_size": batch_size,
            "seed": seed,
            "val_split": val_split,
            "limit_per_class": limit_per_class,
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

    fitted = fit_with_checkpoints(
        model,
        data,
        out=out,
        info=previous,
        training=training,
        history=history,
        epochs=target,
        batch_size=batch_size,
        class_weight=class_weight,
        patience=patience,
        verbose=verbose,
        callbacks=callbacks,
    )
    return fitted | _data_report(data)


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
    """``model.fit`` with imgrec's checkpoints, early stopping and Ctrl-C handling.

    Args:
        model: the compiled model to fit.
        data: the data set; its labels are the targets.
        out, info, training: where and what to save (see ``train``).
        history: the epochs done so far, per metric; extended in place, epoch by epoch.
        epochs: the total epochs to reach; ``training["epochs_done"]`` are done.
        inputs: what to feed instead of the images (train, validation), such as
            cached backbone features for a new head.
        saved_model: the model to save when it is not ``model`` (the whole network
            when ``model`` is only its head).
    """
    if data.skipped:
        _write_json(companion_path(out, ".skipped.json"), [vars(s) for s in data.skipped])
    train_x, val_x = inputs or (data.train.images, data.val.images if data.val else None)
    validation = (val_x, data.val.labels) if data.val else None
    checkpoints = _Checkpoints(
        out, info, training, history, has_validation=bool(validation), saved_model=saved_model
    )
    fit_callbacks = [checkpoints]
    if validation is not None and patience > 0:
        fit_callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience))
    fit_callbacks += callbacks or []

    start = time.perf_counter()
    with _stop_on_sigint(model) as interrupted:
        model.fit(
            train_x,
            data.train.labels,
            batch_size=batch_size,
            epochs=epochs,
            initial_epoch=training.get("epochs_done", 0),
            validation_data=validation,
            class_weight=_balanced_weights(data.train.labels) if class_weight else None,
            callbacks=fit_callbacks,
            verbose=verbose,
        )
    return {
        "model": str(out),
        "last": str(companion_path(out, ".last.keras")),
        "history": str(companion_path(out, ".history.json")),
        "curves": str(companion_path(out, ".curves.png")),
        "epochs_done": checkpoints.training.get("epochs_done", 0),
        "epochs_asked": epochs,
        "best_val_loss": checkpoints.best_val_loss,
        "best_val_accuracy": checkpoints.best_val_accuracy,
        "interrupted": interrupted.is_set,
        "seconds": time.perf_counter() - start,
    }


def _data_report(data: Dataset) -> dict[str, Any]:
    return {"dataset": data.summary(), "skipped": [vars(s) for s in data.skipped]}


def is_transfer_architecture(arch: str) -> bool:
    """Whether ``arch`` names a zoo network (transfer learning), not a seed network."""
    try:
        get_seed_architecture(arch)
        return False
    except ImgrecError:
        pass
    try:
        get_entry(arch)
        return True
    except ImgrecError:
        return False


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


def steps_per_epoch(samples: int, batch_size: int) -> int:
    return max(1, -(-samples // batch_size))


def compile_classifier(
    model: keras.Model,
    lr: float,
    *,
    schedule: str = "constant",
    weight_decay: float = 0.0,
    total_steps: int = 1,
    steps_per_execution: int = 1,
) -> None:
    """Adam (AdamW with weight decay), a constant or cosine learning rate, the right loss.

    ``steps_per_execution`` runs several steps per call into the backend: worth it when
    a step is tiny, such as a new head on cached features.
    """
    if schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(lr, decay_steps=total_steps)
    if weight_decay:
        optimizer = keras.optimizers.AdamW(lr, weight_decay=weight_decay)
    else:
        optimizer = keras.optimizers.Adam(lr)
    binary = is_binary_output(model)
    model.compile(
        optimizer=optimizer,
        loss="binary_crossentropy" if binary else "sparse_categorical_crossentropy",
        metrics=["binary_accuracy" if binary else "accuracy"],
        steps_per_execution=steps_per_execution,
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
    """Keep the latest state, the best model, the history and the curves on disk.

    The history is written after every epoch. Models and curves are written at most
    every ``SAVE_EVERY_S`` seconds, and when training ends (Ctrl-C included): saving a
    large model takes seconds, which would dominate short epochs such as a new head on
    cached features. The best weights are kept in memory in between, so no improvement
    is lost.
    """

    def __init__(
        self,
        out: Path,
        info: ModelInfo,
        training: dict,
        history: dict[str, list[float]],
        has_validation: bool,
        saved_model: keras.Model | None = None,
    ) -> None:
        super().__init__()
        self.saved_model = saved_model
        self.out = out
        self.info = info
        self.training = training
        self.history = history
        self.has_validation = has_validation
        losses = self.history.get("val_loss" if has_validation else "loss", [])
        self.best_val_loss = min(losses) if losses else None
        self.best_val_accuracy = None
        self.best_weights: list[np.ndarray] | None = None
        self.best_is_latest = False
        self.last_write = time.monotonic()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = {k: float(v) for k, v in (logs or {}).items()}
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        self.training["epochs_done"] = epoch + 1
        self.training["history"] = self.history
        loss = logs.get("val_loss" if self.has_validation else "loss")
        if loss is not None and (self.best_val_loss is None or loss < self.best_val_loss):
            self.best_val_loss = loss
            self.best_val_accuracy = _accuracy(logs, "val_" if self.has_validation else "")
            self.best_weights = (self.saved_model or self.model).get_weights()
        self.best_is_latest = loss is not None and loss == self.best_val_loss
        _write_json(companion_path(self.out, ".history.json"), self.history)
        if time.monotonic() - self.last_write >= SAVE_EVERY_S:
            self._write()

    def on_train_end(self, logs: dict | None = None) -> None:
        self._write()

    def _write(self) -> None:
        model = self.saved_model or self.model
        attach_info(model, dataclasses.replace(self.info, training=dict(self.training)))
        last = companion_path(self.out, ".last.keras")
        save_model(model, last)
        if self.best_weights is not None and self.best_is_latest:
            with atomic_path(self.out) as tmp:
                shutil.copyfile(last, tmp)
            self.best_weights = None
        elif self.best_weights is not None:
            current = model.get_weights()
            model.set_weights(self.best_weights)
            save_model(model, self.out)
            model.set_weights(current)
            self.best_weights = None
        plot_training_curves(
            self.history, companion_path(self.out, ".curves.png"), title=self.out.name
        )
        self.last_write = time.monotonic()


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
