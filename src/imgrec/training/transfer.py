"""Transfer learning: a network trained on ImageNet, adapted to the user's classes.

The chapter's three strategies, for every zoo network whose weights are here:

- ``scratch``: keep only the architecture and train every weight anew;
- ``finetune``: first train a new classifier on the frozen backbone, then unfreeze
  the upper layers (``freeze`` / ``unfreeze_from``) and train on at a tenth of the
  learning rate;
- ``head``: train only a new classifier on the frozen backbone's features.

The model is one ``keras.Model`` that takes 0-255 pixels at the data's own size:
augmentation, a resize to the backbone's input, grey-to-RGB, the backbone's own
normalisation (a frozen 1x1 convolution, so the file needs no custom code), the
backbone (called with ``training=False``, so its BatchNorm layers stay in inference
mode even when unfrozen), dropout and a new softmax layer.

Training a head on a frozen backbone repeats the same backbone computation every
epoch; imgrec computes the features once per data set and backbone, caches them on
disk, and trains the head on them. With augmentation every epoch sees new images,
so the features cannot be cached: then the backbone runs in the loop, and imgrec
says so.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from imgrec.core.choices import TRANSFER_STRATEGIES
from imgrec.core.errors import ImgrecError
from imgrec.core.storage import atomic_path, imgrec_home
from imgrec.datasets import Dataset
from imgrec.models.metadata import ModelInfo
from imgrec.models.preprocessing import Preprocessing
from imgrec.models.pretrained import load_backbone
from imgrec.models.registry import get_model_entry
from imgrec.training.augment import augmentation_layer, parse_augment, spec_to_string
from imgrec.training.checkpoints import RunFiles
from imgrec.training.loop import (
    FitOptions,
    FitOutcome,
    compile_classifier,
    fit_and_save,
)
from imgrec.training.record import DatasetRef, SplitSettings, TrainingRecord, steps_per_epoch

STRATEGIES = TRANSFER_STRATEGIES
BACKBONE_LAYER = "backbone"
HEAD_DROPOUT = 0.2
FINETUNE_LR_FACTOR = 0.1
DEFAULT_LR = 1e-3
# A head step on cached features is tiny; several per call keep Python out of the way.
HEAD_STEPS_PER_EXECUTION = 16
SCRATCH_BN_MOMENTUM = 0.9


def build_transfer_model(
    backbone: keras.Model,
    preprocessing: Preprocessing,
    data_shape: tuple[int, int, int],
    num_classes: int,
    augmentation: keras.layers.Layer | None = None,
    dropout: float = HEAD_DROPOUT,
    pretrained: bool = True,
) -> keras.Model:
    """The whole network: input pipeline, ``backbone`` and a new classifier.

    Args:
        backbone: a feature extractor ending in global pooling (``load_backbone``).
        preprocessing: the normalisation the backbone's weights expect.
        data_shape: height, width, channels of the data (0-255 pixels).
        num_classes: the new classifier's width.
        augmentation: a Keras layer applied first (active only in training).
        dropout: dropout rate before the new classifier.
        pretrained: run the backbone's BatchNorm in inference mode, always (its
            statistics come from ImageNet); False for training from scratch.
    """
    inputs = keras.Input(data_shape, name="pixels")
    x = augmentation(inputs) if augmentation is not None else inputs
    height, width = backbone.input_shape[1:3]
    if tuple(data_shape[:2]) != (height, width):
        x = layers.Resizing(height, width, name="resize_to_backbone")(x)
    if data_shape[-1] == 1:
        x = layers.Concatenate(name="grey_to_rgb")([x, x, x])
    normalize = layers.Conv2D(3, 1, trainable=False, name="imagenet_normalize")
    x = normalize(x)
    normalize.set_weights(_normalization_weights(preprocessing))
    backbone.name = BACKBONE_LAYER
    features = backbone(x, training=False) if pretrained else backbone(x)
    x = layers.Dropout(dropout, name="head_dropout")(features)
    outputs = layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs, name=f"{backbone.name}_transfer")


def _normalization_weights(preprocessing: Preprocessing) -> list[np.ndarray]:
    """A 1x1 convolution computing ((x[channel order] * scale) - mean) / std."""
    kernel = np.zeros((1, 1, 3, 3), np.float32)
    mean = np.asarray(preprocessing.mean, np.float32)
    std = np.asarray(preprocessing.std, np.float32)
    for out in range(3):
        source = 2 - out if preprocessing.bgr else out
        kernel[0, 0, source, out] = preprocessing.scale / std[out]
    return [kernel, -mean / std]


def set_trainable_backbone(
    model: keras.Model, freeze: int | None = None, unfreeze_from: str | None = None
) -> None:
    """Unfreeze the backbone's layers from a point on; BatchNorm layers stay frozen.

    Args:
        model: a model from ``build_transfer_model``.
        freeze: keep this many of the backbone's first layers frozen.
        unfreeze_from: or: unfreeze from the layer of this name on.
        With neither, the upper third of the layers is unfrozen.
    """
    backbone = model.get_layer(BACKBONE_LAYER)
    names = [layer.name for layer in backbone.layers]
    if unfreeze_from is not None:
        if unfreeze_from not in names:
            raise ImgrecError(
                f"the backbone has no layer {unfreeze_from!r}; 'imgrec summary "
                f"{backbone.name}' lists them (e.g. {names[len(names) * 2 // 3]!r})"
            )
        start = names.index(unfreeze_from)
    elif freeze is not None:
        if not 0 <= freeze < len(names):
            raise ImgrecError(f"--freeze must be from 0 to {len(names) - 1}, got {freeze}")
        start = freeze
    else:
        start = len(names) * 2 // 3
    backbone.trainable = True
    for index, layer in enumerate(backbone.layers):
        # Unfrozen BatchNorm would relearn its statistics from a few small batches.
        frozen = index < start or isinstance(layer, layers.BatchNormalization)
        layer.trainable = not frozen


def trainable_counts(model: keras.Model) -> dict[str, int]:
    """Trainable and frozen parameters, as Keras's summary counts them."""
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return {"trainable": trainable, "frozen": model.count_params() - trainable}


def feature_extractor(model: keras.Model) -> keras.Model:
    """From pixels to the backbone's pooled features."""
    # The dropout's input is the backbone's output in this model's own graph.
    return keras.Model(model.input, model.get_layer("head_dropout").input)


def head_model(model: keras.Model) -> keras.Model:
    """The new classifier alone, sharing its layers (and weights) with ``model``."""
    features = keras.Input(model.get_layer("head_dropout").input.shape[1:], name="features")
    x = model.get_layer("head_dropout")(features)
    return keras.Model(features, model.get_layer("predictions")(x), name="head")


def cached_features(
    extractor: keras.Model,
    images: np.ndarray,
    key: str,
    batch_size: int = 64,
    verbose: int = 1,
) -> np.ndarray:
    """The backbone's features of ``images``, computed once and cached under ``key``."""
    path = imgrec_home() / "features" / f"{key}.npy"
    if path.is_file():
        return np.load(path, mmap_mode="r")
    from tqdm import tqdm

    batches = range(0, len(images), batch_size)
    parts = []
    for start in tqdm(batches, desc="Backbone features", unit="batch", disable=not verbose):
        batch = np.asarray(images[start : start + batch_size], np.float32)
        parts.append(np.asarray(extractor.predict_on_batch(batch)))
    features = np.concatenate(parts)
    with atomic_path(path) as tmp:
        np.save(tmp, features)
    return features


def train_transfer(
    data: Dataset,
    arch: str,
    strategy: str,
    *,
    out: Path,
    epochs: int,
    batch_size: int,
    lr: float | None,
    image_size: tuple[int, int] | None,
    augment: str,
    freeze: int | None,
    unfreeze_from: str | None,
    class_weight: str | None,
    seed: int,
    val_split: float,
    limit_per_class: int | None,
    patience: int,
    verbose: int,
    callbacks: list | None,
) -> dict[str, Any]:
    """Train a zoo network on ``data`` with one of the three strategies (see the module).

    Args:
        data: the loaded data set.
        arch: a zoo network; strategy: ``scratch``, ``finetune`` or ``head``.
        out: where the best model goes; epochs: the total epochs (both stages).
        freeze, unfreeze_from: for ``finetune`` (see ``set_trainable_backbone``).
        The others: as ``imgrec.train`` takes them.
    """
    if strategy not in STRATEGIES:
        raise ImgrecError(f"--transfer must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if (freeze is not None or unfreeze_from is not None) and strategy != "finetune":
        raise ImgrecError("--freeze and --unfreeze-from go with --transfer finetune")
    entry = get_model_entry(arch)
    size = image_size or entry.input_size
    augment_spec = parse_augment(augment)
    model, origin = _build(entry.name, size, strategy, data, augmentation_layer(augment_spec, seed))
    files = RunFiles.for_model(out)
    run = _TransferRun(
        model=model,
        data=data,
        files=files,
        info=ModelInfo(
            name=files.best.name,
            class_names=tuple(data.class_names),
            preprocessing=Preprocessing(size=data.train.images.shape[1:3], name="pixels:0-255"),
            weights=f"{entry.display_name} ({origin}), {strategy} on {data.name}",
        ),
        options=FitOptions(batch_size, class_weight, patience, verbose, tuple(callbacks or ())),
        lr=lr or DEFAULT_LR,
        features_key=f"{data.fingerprint}|{entry.name}|{origin}|{size}",
    )
    record = TrainingRecord(
        architecture=entry.name,
        strategy=strategy,
        backbone_input=size,
        augment=spec_to_string(augment_spec),
        batch_size=batch_size,
        split=SplitSettings(val_split, seed, limit_per_class),
        dataset=DatasetRef.of(data),
        epochs_asked=epochs,
    )
    start = time.perf_counter()
    if strategy == "scratch":
        outcome = run.scratch(record)
    else:
        head_epochs = epochs if strategy == "head" else max(1, epochs // 2)
        outcome = run.head(record, head_epochs, augmented=bool(augment_spec))
        if strategy == "finetune" and not outcome.interrupted:
            outcome = run.finetune(outcome, freeze, unfreeze_from)
    return outcome.to_dict() | {
        "seconds": time.perf_counter() - start,  # feature extraction included
        "strategy": strategy,
        "stages": [{"stage": name, **counts} for name, counts in run.stages],
        "parameters": run.stages[-1][1],
        "backbone_weights": origin,
    }


def _build(
    name: str,
    size: tuple[int, int],
    strategy: str,
    data: Dataset,
    augmentation: keras.layers.Layer | None,
) -> tuple[keras.Model, str]:
    """The whole network for ``data``, and where its backbone's weights came from."""
    pretrained = strategy != "scratch"
    backbone, preprocessing, origin = load_backbone(name, (*size, 3), pretrained=pretrained)
    model = build_transfer_model(
        backbone,
        preprocessing,
        data.train.images.shape[1:],
        len(data.class_names),
        augmentation=augmentation,
        pretrained=pretrained,
    )
    return model, origin


@dataclass
class _TransferRun:
    """The stages of one transfer-learning run, fitted one after the other."""

    model: keras.Model
    data: Dataset
    files: RunFiles
    info: ModelInfo
    options: FitOptions
    lr: float
    features_key: str
    stages: list[tuple[str, dict[str, int]]] = field(default_factory=list)

    def _fit(self, model: keras.Model, record: TrainingRecord, **kwargs: Any) -> FitOutcome:
        return fit_and_save(
            model, self.data, record, files=self.files, info=self.info, options=self.options,
            **kwargs,
        )  # fmt: skip

    def scratch(self, record: TrainingRecord) -> FitOutcome:
        """Train every weight anew, with a cosine schedule."""
        backbone = self.model.get_layer(BACKBONE_LAYER)
        backbone.trainable = True
        # Keras's ImageNet recipes average BatchNorm statistics over thousands of steps
        # (momentum 0.99-0.999); a few hundred steps on a small data set would leave
        # them at their initial values and inference at chance.
        for layer in backbone.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = SCRATCH_BN_MOMENTUM
        steps = steps_per_epoch(len(self.data.train.labels), self.options.batch_size)
        compile_classifier(
            self.model, self.lr, schedule="cosine", total_steps=record.epochs_asked * steps
        )
        self.stages.append(("scratch", trainable_counts(self.model)))
        return self._fit(self.model, record)

    def head(self, record: TrainingRecord, epochs: int, augmented: bool) -> FitOutcome:
        """Train a new classifier on the frozen backbone, on cached features if it can."""
        self.model.get_layer(BACKBONE_LAYER).trainable = False
        self.stages.append(("head", trainable_counts(self.model)))
        if augmented:
            if self.options.verbose:
                print(
                    "imgrec: with --augment every epoch sees new images, so the backbone "
                    "runs in the loop (features are recomputed, not cached)",
                    file=sys.stderr,
                )
            compile_classifier(self.model, self.lr)
            return self._fit(self.model, record, epochs=epochs)
        extractor = feature_extractor(self.model)
        key = hashlib.sha256(self.features_key.encode()).hexdigest()[:24]
        verbose = self.options.verbose
        data = self.data
        train_features = cached_features(
            extractor, data.train.images, f"{key}-train", verbose=verbose
        )
        val_features = (
            cached_features(extractor, data.val.images, f"{key}-val", verbose=verbose)
            if data.val
            else None
        )
        head = head_model(self.model)
        compile_classifier(head, self.lr, steps_per_execution=HEAD_STEPS_PER_EXECUTION)
        return self._fit(
            head,
            record,
            epochs=epochs,
            inputs=(train_features, val_features),
            saved_model=self.model,
        )

    def finetune(
        self, previous: FitOutcome, freeze: int | None, unfreeze_from: str | None
    ) -> FitOutcome:
        """Unfreeze the backbone's upper layers and train on at a lower learning rate."""
        set_trainable_backbone(self.model, freeze, unfreeze_from)
        self.stages.append(("finetune", trainable_counts(self.model)))
        compile_classifier(self.model, self.lr * FINETUNE_LR_FACTOR)
        return self._fit(
            self.model, previous.record, last_on_disk=True, best_on_disk=previous.best_written
        )
