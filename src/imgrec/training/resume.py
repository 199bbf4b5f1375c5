"""Continue a run that ``train`` saved: its optimizer state, its epochs, its split."""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path
from typing import Any

import keras

from imgrec.core.errors import ImgrecError
from imgrec.core.storage import atomic_path
from imgrec.datasets import Dataset
from imgrec.models.loading import load_keras_file
from imgrec.models.metadata import model_info
from imgrec.training.checkpoints import RunFiles, write_json
from imgrec.training.data import data_report, load_training_data
from imgrec.training.loop import FitOptions, fit_and_save
from imgrec.training.record import DatasetRef, TrainingRecord


def resume_training(
    dataset: str | os.PathLike | Dataset,
    resume: str | os.PathLike,
    *,
    options: FitOptions,
    out: str | os.PathLike | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    split: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Continue the run saved in ``resume`` (a ``.last.keras`` file, or its best model).

    Args:
        dataset: the run's data set (its classes must be the model's).
        resume: the file to continue from.
        options: how to fit; its batch size is replaced by the run's own.
        out: where the best model goes; by default the run's own files, beside
            ``resume`` (``X.last.keras`` -> ``X.keras``). A new ``out`` starts from a
            copy of the run's best model, so that it always holds the best so far.
        epochs: the total epochs to reach (default: what the run asked for).
        batch_size: override the run's batch size (the learning-rate schedule counts
            steps, so by default the run's own).
        split: ``val_split``, ``seed`` or ``limit_per_class`` to override (by default
            the run's own, so that no validation image is trained on).

    Raises:
        ImgrecError: not a model imgrec trained, nothing left to train, or other classes.
    """
    resume = Path(resume)
    model = load_keras_file(resume, compile=True)
    info = model_info(model)
    if not info.training:
        raise ImgrecError(f"{resume}: not a model trained by imgrec; nothing to resume")
    if model.optimizer is None:
        raise ImgrecError(
            f"{resume}: its last stage trained a head on cached features, which has no "
            "optimizer state to resume; rerun it (the features are cached, it is fast)"
        )
    record = TrainingRecord.from_json(info.training)
    overrides = {k: v for k, v in (split or {}).items() if v is not None}
    record = dataclasses.replace(
        record,
        batch_size=batch_size or record.batch_size,
        split=dataclasses.replace(record.split, **overrides),
    )
    keras.utils.set_random_seed(record.split.seed)
    height, width, channels = model.input_shape[1:]
    data = load_training_data(dataset, record.split, image_size=(height, width), channels=channels)
    if tuple(data.class_names) != info.class_names:
        raise ImgrecError(
            f"{resume} was trained on classes {list(info.class_names)}, "
            f"but the data set has {list(data.class_names)}"
        )
    record = dataclasses.replace(
        record, dataset=DatasetRef.of(data), epochs_asked=epochs or record.epochs_asked
    )
    if record.epochs_done >= record.epochs_asked:
        raise ImgrecError(
            f"{resume} has already trained {record.epochs_done} of {record.epochs_asked} epochs"
        )
    own = RunFiles.of_resumed(resume).without_stale_temporaries()
    files = (RunFiles.for_model(out) if out is not None else own).without_stale_temporaries()
    best_on_disk = _start_from(resume, own.best, files, record)
    options = dataclasses.replace(options, batch_size=record.batch_size)
    outcome = fit_and_save(
        model, data, record, files=files, info=info, options=options,
        last_on_disk=True, best_on_disk=best_on_disk,
    )  # fmt: skip
    return outcome.to_dict() | data_report(data)


def _start_from(resume: Path, best: Path, files: RunFiles, record: TrainingRecord) -> bool:
    """Make ``files`` the resumed run's: its state, its best model, its history.

    Returns whether ``files.best`` holds the run's best model (a run killed before
    its first best was copied has none; then the next epoch is the best so far).
    """
    _copy(resume, files.last)
    write_json(files.history, record.history)
    if not best.is_file():
        return False
    _copy(best, files.best)
    return True


def _copy(source: Path, target: Path) -> None:
    if target.resolve() != source.resolve():
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
