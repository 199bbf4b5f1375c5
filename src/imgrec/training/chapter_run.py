"""A new run of one of the chapter's networks (``cifar-cnn``, ``vgg-bn``, ...)."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from imgrec.datasets import Dataset
from imgrec.models.metadata import ModelInfo, attach_info
from imgrec.models.preprocessing import Preprocessing
from imgrec.models.registry import create_model, get_model_entry
from imgrec.training.augment import augmentation_layer, parse_augment, spec_to_string
from imgrec.training.checkpoints import RunFiles
from imgrec.training.data import data_report, load_training_data
from imgrec.training.loop import FitOptions, compile_classifier, fit_and_save
from imgrec.training.record import DatasetRef, SplitSettings, TrainingRecord, steps_per_epoch


def train_chapter_network(
    dataset: str | os.PathLike | Dataset,
    arch: str,
    *,
    files: RunFiles,
    split: SplitSettings,
    options: FitOptions,
    epochs: int | None = None,
    lr: float | None = None,
    image_size: tuple[int, int] | None = None,
    augment: str = "",
    split_named: bool = True,
) -> dict[str, Any]:
    """Build the chapter network ``arch`` for ``dataset`` and train it with its recipe.

    Args:
        dataset: a data set name or path, or a loaded one.
        arch: the name of one of the chapter's networks.
        files: where the run writes; split, options: see ``SplitSettings``, ``FitOptions``.
        epochs, lr: override the architecture's recipe.
        image_size: the size photo folders are decoded at (default: the network's).
        augment: an augmentation spec (``""``: the recipe's, ``"none"``: none).
        split_named: whether the run named its validation fraction; if not, the
            recipe's ``val_split`` applies where the data set has a test split.

    Returns:
        ``train``'s result: the fit's outcome and the data set's report.
    """
    architecture = get_model_entry(arch).chapter
    default_height, default_width, _ = architecture.default_input_shape
    sizes = {"image_size": image_size or None, "folder_size": (default_height, default_width)}
    data, split = _load(dataset, split, architecture.val_split, split_named, sizes)
    augment_spec = parse_augment(augment or architecture.augment)
    alternate = architecture.alternate_flips and bool(augment_spec.get("flip"))
    in_model = {k: v for k, v in augment_spec.items() if not (alternate and k == "flip")}
    model = create_model(
        architecture.name,
        input_shape=data.train.images.shape[1:],
        num_classes=len(data.class_names),
        augmentation=augmentation_layer(in_model, seed=split.seed),
    )
    if architecture.prepare is not None:
        architecture.prepare(model, data.train.images)
    record = TrainingRecord(
        architecture=architecture.name,
        dataset=DatasetRef.of(data),
        epochs_asked=epochs or architecture.epochs,
        batch_size=options.batch_size,
        split=split,
        augment=spec_to_string(augment_spec),
        precision=architecture.precision,
        alternate_flips=alternate,
    )
    epoch_steps = steps_per_epoch(len(data.train.labels), options.batch_size)
    compile_classifier(
        model,
        lr or architecture.learning_rate,
        schedule=architecture.lr_schedule,
        weight_decay=architecture.weight_decay,
        total_steps=record.epochs_asked * epoch_steps,
        optimizer=architecture.optimizer,
        warmup_steps=round(architecture.warmup_epochs * epoch_steps),
        label_smoothing=architecture.label_smoothing,
    )
    info = ModelInfo(
        name=files.best.name,
        class_names=tuple(data.class_names),
        preprocessing=Preprocessing(size=data.train.images.shape[1:3], name="pixels:0-255"),
        weights=f"trained by imgrec on {data.name}",
        tta=_recorded_tta(architecture.tta, augment_spec),
    )
    attach_info(model, info)
    outcome = fit_and_save(model, data, record, files=files, info=info, options=options)
    return outcome.to_dict() | data_report(data)


def _load(
    dataset: str | os.PathLike | Dataset,
    split: SplitSettings,
    recipe_split: float | None,
    split_named: bool,
    sizes: dict[str, Any],
) -> tuple[Dataset, SplitSettings]:
    """The data and its split: the recipe's validation fraction where the run named none
    and a test split of the data set's own is there to measure the model on."""
    if split_named or recipe_split is None or isinstance(dataset, Dataset):
        return load_training_data(dataset, split, **sizes), split
    data = load_training_data(dataset, split, val_split_if_test=recipe_split, **sizes)
    if data.test is not None:
        return data, dataclasses.replace(split, val_split=recipe_split)
    return data, split


def _recorded_tta(tta: str, augment_spec: dict[str, float | bool]) -> str | None:
    """The recipe's test-time augmentation, if the run trained for it (None: none).

    Mirrored views only help a network that saw mirrored images: a run without ``flip``
    (digits, text: a mirrored 7 is no 7) records none.
    """
    if not tta or ("flip" in tta and not augment_spec.get("flip")):
        return None
    return tta
