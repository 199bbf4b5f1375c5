"""The files of a training run, and the callback that keeps them up to date.

After every completed epoch the latest state (weights, optimizer, and the training
record with the history of every epoch) is saved atomically to ``<out>.last.keras``;
when the epoch was the best so far, that file is copied to ``out``; then the history
is written to ``<out>.history.json``. The history inside each model file is the one
its weights went with, so the two cannot disagree; a kill between the two writes
leaves ``.history.json`` one epoch behind the model, never ahead of it.

Saving costs about a tenth of a second for the chapter's networks, so it happens
after every epoch. Only where a save takes longer than the training since the last
one (a new head on cached features: epochs of milliseconds, a whole backbone to
save) are saves spaced out, so that they take at most about half the time; the best
weights are then kept in memory until the next save. The first epoch and the end of
training are always saved. The curves (PNG) are drawn at most every 30 s, and at the
end.

A partial epoch (Ctrl-C, or a callback stopping mid-epoch) is not counted: its
metrics are not recorded and the last completed epoch's checkpoint stays as it is.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from imgrec.core.errors import ImgrecError
from imgrec.core.plots import plot_training_curves
from imgrec.core.storage import atomic_path, remove_stale_temporaries, write_bytes_atomic
from imgrec.models.loading import save_model
from imgrec.models.metadata import ModelInfo, attach_info
from imgrec.training.record import TrainingRecord

# The training curves are redrawn at most this often (drawing takes about 0.5 s).
CURVES_EVERY_S = 30.0


def companion_path(out: str | os.PathLike, suffix: str) -> Path:
    """A file that belongs to the model ``out``: ``model.keras`` -> ``model<suffix>``."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".keras") + suffix)


@dataclass(frozen=True)
class RunFiles:
    """Where a run writes: the best model and its companions beside it."""

    best: Path

    @classmethod
    def for_model(cls, out: str | os.PathLike) -> RunFiles:
        """The files of a run whose best model goes to ``out``.

        Raises:
            ImgrecError: ``out`` does not end in ``.keras``.
        """
        out = Path(out)
        if out.suffix != ".keras":
            raise ImgrecError(f"{out}: the model file must end in .keras")
        return cls(out)

    @classmethod
    def of_resumed(cls, resumed: str | os.PathLike) -> RunFiles:
        """The files of the run that saved ``resumed`` (``X.last.keras`` -> ``X.keras``)."""
        resumed = Path(resumed)
        stem = resumed.name.removesuffix(".keras").removesuffix(".last")
        return cls.for_model(resumed.with_name(stem + ".keras"))

    @property
    def last(self) -> Path:
        """The latest state, optimizer included: what ``--resume`` continues."""
        return companion_path(self.best, ".last.keras")

    @property
    def history(self) -> Path:
        """The history of every epoch, as JSON."""
        return companion_path(self.best, ".history.json")

    @property
    def curves(self) -> Path:
        """The training curves, as a PNG."""
        return companion_path(self.best, ".curves.png")

    @property
    def skipped(self) -> Path:
        """The files of the data set that could not be read, as JSON."""
        return companion_path(self.best, ".skipped.json")

    def without_stale_temporaries(self) -> RunFiles:
        """Delete the temporary files a killed run left beside these files; return self."""
        for path in (self.best, self.last, self.history, self.curves, self.skipped):
            remove_stale_temporaries(path)
        return self


def write_json(path: Path, data: Any) -> None:
    """Write ``data`` as indented JSON to ``path``, atomically."""
    write_bytes_atomic(path, json.dumps(data, indent=1).encode())


def _accuracy(logs: dict[str, float], prefix: str = "") -> float | None:
    for key in ("accuracy", "binary_accuracy"):
        if prefix + key in logs:
            return float(logs[prefix + key])
    return None


def _best_so_far(record: TrainingRecord, has_validation: bool) -> tuple[float | None, float | None]:
    """The lowest loss in ``record``'s history, and the accuracy of that epoch."""
    prefix = "val_" if has_validation else ""
    losses = record.history.get(prefix + "loss", [])
    if not losses:
        return None, None
    epoch = int(np.argmin(losses))
    accuracies = {
        key: values[epoch] for key, values in record.history.items() if len(values) > epoch
    }
    return losses[epoch], _accuracy(accuracies, prefix)


class Checkpoints(keras.callbacks.Callback):
    """Keep the latest state, the best model, the history and the curves on disk.

    Args:
        files: where to write.
        info: the model's metadata; the record goes into its ``training`` field.
        record: the run so far; ``self.record`` follows it epoch by epoch.
        has_validation: whether "best" means the lowest validation loss (else the
            lowest training loss).
        saved_model: the model to save when it is not the fitted one (the whole
            network when only its head is fitted).
        last_on_disk: whether ``files.last`` holds ``record`` already (a resumed
            run, or an earlier stage of this one).
        best_on_disk: whether ``files.best`` holds the best model of ``record``'s
            epochs already.
    """

    def __init__(
        self,
        files: RunFiles,
        info: ModelInfo,
        record: TrainingRecord,
        has_validation: bool,
        saved_model: keras.Model | None = None,
        last_on_disk: bool = False,
        best_on_disk: bool = False,
    ) -> None:
        super().__init__()
        self.files = files
        self.info = info
        self.record = record
        self.has_validation = has_validation
        self.saved_model = saved_model
        # Without the best model on disk, the next epoch is the best so far.
        self.best_written = best_on_disk
        self.best_val_loss, self.best_val_accuracy = (
            _best_so_far(record, has_validation) if best_on_disk else (None, None)
        )
        self._pending_best: tuple[list[np.ndarray], TrainingRecord] | None = None
        self._saved_record = record if last_on_disk else None
        self._saves = 0
        self._save_seconds = 0.0
        self._trained_since_save = 0.0
        self._curves_drawn = time.monotonic()
        self._epoch_start = 0.0
        self._steps_seen = 0

    @property
    def unsaved(self) -> bool:
        """Whether completed epochs are not on disk yet."""
        return self.record.epochs_done > 0 and self.record is not self._saved_record

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._epoch_start = time.monotonic()
        self._steps_seen = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._steps_seen = batch + 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        steps = self.params.get("steps")
        if steps is not None and self._steps_seen < steps:
            return  # stopped mid-epoch: the epoch did not happen
        logs = {k: float(v) for k, v in (logs or {}).items()}
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        self.record = self.record.after_epoch(logs)
        self._trained_since_save += time.monotonic() - self._epoch_start
        loss = logs.get("val_loss" if self.has_validation else "loss")
        improved = loss is not None and (self.best_val_loss is None or loss < self.best_val_loss)
        if improved:
            self.best_val_loss = loss
            self.best_val_accuracy = _accuracy(logs, "val_" if self.has_validation else "")
        if self._saves == 0 or self._trained_since_save >= self._save_seconds:
            self._save(best_is_latest=improved)
        elif improved:
            self._pending_best = (self._target.get_weights(), self.record)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.unsaved:
            self._save(best_is_latest=False)
        if self.record.history:
            self._draw_curves()

    @property
    def _target(self) -> keras.Model:
        return self.saved_model or self.model

    def _save(self, best_is_latest: bool) -> None:
        start = time.monotonic()
        model = self._target
        attach_info(model, dataclasses.replace(self.info, training=self.record.to_json()))
        save_model(model, self.files.last)
        if best_is_latest:
            with atomic_path(self.files.best) as tmp:
                shutil.copyfile(self.files.last, tmp)
            self.best_written, self._pending_best = True, None
        elif self._pending_best is not None:
            self._save_best(*self._pending_best)
        write_json(self.files.history, self.record.history)
        self._saved_record = self.record
        self._saves += 1
        self._save_seconds = time.monotonic() - start
        self._trained_since_save = 0.0
        if time.monotonic() - self._curves_drawn >= CURVES_EVERY_S:
            self._draw_curves()

    def _save_best(self, weights: list[np.ndarray], record: TrainingRecord) -> None:
        model = self._target
        current = model.get_weights()
        model.set_weights(weights)
        attach_info(model, dataclasses.replace(self.info, training=record.to_json()))
        try:
            save_model(model, self.files.best)
        finally:
            model.set_weights(current)
            attach_info(model, dataclasses.replace(self.info, training=self.record.to_json()))
        self.best_written, self._pending_best = True, None

    def _draw_curves(self) -> None:
        plot_training_curves(self.record.history, self.files.curves, title=self.files.best.name)
        self._curves_drawn = time.monotonic()
