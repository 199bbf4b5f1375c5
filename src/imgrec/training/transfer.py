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
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from imgrec.core.errors import ImgrecError
from imgrec.core.storage import atomic_path, imgrec_home
from imgrec.datasets import Dataset
from imgrec.models.metadata import ModelInfo
from imgrec.models.preprocessing import Preprocessing
from imgrec.models.pretrained import load_backbone
from imgrec.models.zoo import get_entry
from imgrec.training.augment import augmentation_layer, parse_augment, spec_to_string
from imgrec.training.fit import compile_classifier, fit_with_checkpoints, steps_per_epoch

STRATEGIES = ("scratch", "finetune", "head")
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
    """Train a zoo network on ``data`` with one of the three strategies (see the module)."""
    if strategy not in STRATEGIES:
        raise ImgrecError(f"--transfer must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
    if (freeze is not None or unfreeze_from is not None) and strategy != "finetune":
        raise ImgrecError("--freeze and --unfreeze-from go with --transfer finetune")
    entry = get_entry(arch)
    size = image_size or (entry.input_size, entry.input_size)
    backbone, preprocessing, origin = load_backbone(
        entry.name, (*size, 3), pretrained=strategy != "scratch"
    )
    augment_spec = parse_augment(augment)
    model = build_transfer_model(
        backbone,
        preprocessing,
        data.train.images.shape[1:],
        len(data.class_names),
        augmentation=augmentation_layer(augment_spec, seed=seed),
        pretrained=strategy != "scratch",
    )
    lr = lr or DEFAULT_LR
    info = ModelInfo(
        name=out.name,
        class_names=tuple(data.class_names),
        preprocessing=Preprocessing(size=data.train.images.shape[1:3], name="pixels:0-255"),
        weights=f"{entry.display_name} ({origin}), {strategy} on {data.name}",
    )
    training = {
        "architecture": entry.name,
        "strategy": strategy,
        "backbone_input": list(size),
        "augment": spec_to_string(augment_spec),
        "batch_size": batch_size,
        "seed": seed,
        "val_split": val_split,
        "limit_per_class": limit_per_class,
        "dataset": {"name": data.name, "source": data.source, "fingerprint": data.fingerprint},
        "epochs_asked": epochs,
    }
    common = {
        "out": out,
        "info": info,
        "training": training,
        "batch_size": batch_size,
        "class_weight": class_weight,
        "patience": patience,
        "verbose": verbose,
        "callbacks": callbacks,
    }
    history: dict[str, list[float]] = {}
    stages = []
    start = time.perf_counter()

    if strategy == "scratch":
        backbone.trainable = True
        # Keras's ImageNet recipes average BatchNorm statistics over thousands of steps
        # (momentum 0.99-0.999); a few hundred steps on a small data set would leave
        # them at their initial values and inference at chance.
        for layer in backbone.layers:
            if isinstance(layer, layers.BatchNormalization):
                layer.momentum = SCRATCH_BN_MOMENTUM
        compile_classifier(
            model,
            lr,
            schedule="cosine",
            total_steps=epochs * steps_per_epoch(len(data.train.labels), batch_size),
        )
        stages.append(("scratch", trainable_counts(model)))
        result = fit_with_checkpoints(model, data, history=history, epochs=epochs, **common)
    else:
        backbone.trainable = False
        head_epochs = epochs if strategy == "head" else max(1, epochs // 2)
        stages.append(("head", trainable_counts(model)))
        if augment_spec:
            if verbose:
                print(
                    "imgrec: with --augment every epoch sees new images, so the backbone "
                    "runs in the loop (features are recomputed, not cached)",
                    file=sys.stderr,
                )
            compile_classifier(model, lr)
            result = fit_with_checkpoints(
                model, data, history=history, epochs=head_epochs, **common
            )
        else:
            result = _fit_head_on_cached_features(
                model, data, entry.name, origin, size, head_epochs, lr, history, common
            )
        if strategy == "finetune" and not result["interrupted"]:
            set_trainable_backbone(model, freeze, unfreeze_from)
            stages.append(("finetune", trainable_counts(model)))
            compile_classifier(model, lr * FINETUNE_LR_FACTOR)
            result = fit_with_checkpoints(model, data, history=history, epochs=epochs, **common)
    return result | {
        "seconds": time.perf_counter() - start,  # feature extraction included
        "strategy": strategy,
        "stages": [{"stage": name, **counts} for name, counts in stages],
        "parameters": stages[-1][1],
        "backbone_weights": origin,
    }


def _fit_head_on_cached_features(
    model, data, name, origin, size, epochs, lr, history, common
) -> dict[str, Any]:
    extractor = feature_extractor(model)
    key_base = hashlib.sha256(f"{data.fingerprint}|{name}|{origin}|{size}".encode()).hexdigest()[
        :24
    ]
    verbose = common["verbose"]
    train_features = cached_features(
        extractor, data.train.images, f"{key_base}-train", verbose=verbose
    )
    val_features = (
        cached_features(extractor, data.val.images, f"{key_base}-val", verbose=verbose)
        if data.val
        else None
    )
    head = head_model(model)
    compile_classifier(head, lr, steps_per_execution=HEAD_STEPS_PER_EXECUTION)
    return fit_with_checkpoints(
        head,
        data,
        history=history,
        epochs=epochs,
        inputs=(train_features, val_features),
        saved_model=model,
        **common,
    )
