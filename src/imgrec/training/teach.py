"""Teach a new classifier from a few samples (the page's Teach demo), in seconds.

Teachable Machine's recipe: a frozen ImageNet backbone (MobileNetV2 or
EfficientNet-Lite0) turns each sample into a feature vector once; only a small
softmax layer is trained on those vectors, so training takes seconds on a CPU. About
15 % of each class's samples are held out, the same ones for as long as the samples
stay, and the model is judged on them (per-class accuracy, a confusion matrix, the
most confident mistakes).

A sample's features are computed once per backbone and input size and kept beside
the samples (``FeatureStore``), one small ``.npy`` file per sample and view, written
atomically: adding a sample costs one forward pass, training costs none. With
``augment`` each training sample is also seen mirrored and cropped (two more views,
computed once as well); the held-out samples are always judged on the plain view.

The model saved at the end is one ``keras.Model`` that takes 0-255 pixels at the
backbone's input size (``imgrec.training.transfer.build_transfer_model``) and carries
its ``ModelInfo``: ``imgrec predict --model model.keras`` works on it as on any model
imgrec trained.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np

from imgrec.core.errors import ImgrecError
from imgrec.core.images import load_image
from imgrec.core.storage import atomic_path
from imgrec.models.loading import save_model
from imgrec.models.metadata import ModelInfo, attach_info
from imgrec.models.preprocessing import Preprocessing
from imgrec.models.pretrained import load_backbone
from imgrec.models.registry import get_model_entry
from imgrec.training.record import DatasetRef, SplitSettings, TrainingRecord
from imgrec.training.transfer import HEAD_DROPOUT, build_transfer_model, feature_extractor

TEACH_BACKBONES = ("mobilenet_v2", "efficientnet_lite0")
MIN_IMAGE_SIZE = 96
MAX_IMAGE_SIZE = 224
DEFAULT_IMAGE_SIZE = 160
HELD_OUT_FRACTION = 0.15
# The views of a sample: the photo itself, mirrored, and its centre 80 % enlarged.
PLAIN_VIEWS = ("plain",)
AUGMENTED_VIEWS = ("plain", "flip", "crop")
_CROP = 0.8
_FEATURE_BATCH = 32
MAX_MISTAKES = 10


class TeachError(ImgrecError):
    """Options or samples a Teach run cannot use."""


@dataclass(frozen=True)
class TeachOptions:
    """How a Teach run trains.

    Args:
        backbone: ``mobilenet_v2`` or ``efficientnet_lite0``.
        image_size: the backbone's input side, 96 to 224 pixels.
        epochs: passes over the training samples (1-200).
        batch_size: samples per step (1-512).
        learning_rate: Adam's (above 0, at most 1).
        augment: also train on each sample mirrored and cropped.
        seed: seeds the held-out choice, the shuffling and the new layer's weights.
    """

    backbone: str = "mobilenet_v2"
    image_size: int = DEFAULT_IMAGE_SIZE
    epochs: int = 50
    batch_size: int = 16
    learning_rate: float = 1e-3
    augment: bool = False
    seed: int = 0

    def check(self) -> TeachOptions:
        """This, if every option is in range.

        Raises:
            TeachError: the first option out of range, named.
        """
        problems = [
            (self.backbone not in TEACH_BACKBONES, f"one of {', '.join(TEACH_BACKBONES)}"),
            (not MIN_IMAGE_SIZE <= self.image_size <= MAX_IMAGE_SIZE, "from 96 to 224"),
            (not 1 <= self.epochs <= 200, "from 1 to 200"),
            (not 1 <= self.batch_size <= 512, "from 1 to 512"),
            (not 0 < self.learning_rate <= 1, "above 0 and at most 1"),
        ]
        names = ("backbone", "image_size", "epochs", "batch_size", "learning_rate")
        values = (self.backbone, self.image_size, self.epochs, self.batch_size, self.learning_rate)
        for name, value, (bad, rule) in zip(names, values, problems, strict=True):
            if bad:
                raise TeachError(f"{name} must be {rule}, got {value!r}")
        return self

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TeachOptions:
        known = {key: data[key] for key in cls.__dataclass_fields__ if key in data}
        return cls(**known)

    @property
    def views(self) -> tuple[str, ...]:
        return AUGMENTED_VIEWS if self.augment else PLAIN_VIEWS


@dataclass(frozen=True)
class Sample:
    """One labelled photo: its id (unique in its project), its file and its class."""

    id: str
    path: Path
    label: int


def decode_sample(
    source: str | os.PathLike | bytes, size: int, *, name: str | None = None
) -> np.ndarray:
    """A photo as the taught model sees it: RGB, stretched to ``size`` x ``size``, uint8.

    The same resize as the model's recipe (``Preprocessing(size=...)``, "stretch"), so
    that ``imgrec predict`` gives the model what it was trained on.
    """
    image = load_image(source, mode="RGB", name=name, min_side=size)
    return Preprocessing(size=(size, size)).resize_and_crop(image)


def sample_view(image: np.ndarray, view: str) -> np.ndarray:
    """One view of a decoded sample: ``plain``, ``flip`` (mirrored) or ``crop``."""
    if view == "plain":
        return image
    if view == "flip":
        return np.ascontiguousarray(image[:, ::-1])
    if view == "crop":
        size = image.shape[0]
        keep = max(1, round(size * _CROP))
        start = (size - keep) // 2
        part = image[start : start + keep, start : start + keep]
        return Preprocessing(size=(size, size)).resize_and_crop(np.ascontiguousarray(part))
    raise TeachError(f"unknown view {view!r}; views: {', '.join(AUGMENTED_VIEWS)}")


class FeatureStore:
    """Features of samples, one ``.npy`` per sample and view, under ``root``.

    Args:
        root: the folder for one backbone at one input size
            (``features_dir(project, backbone, size)``).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, sample_id: str, view: str) -> Path:
        return self.root / f"{sample_id}.{view}.npy"

    def get(self, sample_id: str, view: str) -> np.ndarray | None:
        """The stored features, or None (also for an unreadable file: it is recomputed)."""
        path = self.path(sample_id, view)
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None

    def put(self, sample_id: str, view: str, features: np.ndarray) -> None:
        with atomic_path(self.path(sample_id, view)) as tmp:
            np.save(tmp, np.asarray(features, np.float32), allow_pickle=False)

    def forget(self, sample_id: str) -> None:
        """Delete a sample's features, every view."""
        for view in AUGMENTED_VIEWS:
            self.path(sample_id, view).unlink(missing_ok=True)


def features_dir(base: Path, backbone: str, size: int) -> Path:
    """Where the features for ``backbone`` at ``size`` go under ``base``."""
    return base / f"{backbone}-{size}"


class FeatureBackbone:
    """A frozen backbone with its normalisation: photos in, feature vectors out.

    Args:
        name: one of ``TEACH_BACKBONES``.
        size: its input side.

    Raises:
        TeachError: an unknown backbone or size.
        WeightsError: its ImageNet weights are not on this machine.
    """

    def __init__(self, name: str, size: int) -> None:
        TeachOptions(backbone=name, image_size=size).check()
        self.name = name
        self.size = size
        self.backbone, self.preprocessing, self.origin = load_backbone(name, (size, size, 3))
        template = build_transfer_model(self.backbone, self.preprocessing, self.shape, 2)
        self._extractor = feature_extractor(template)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, 3)

    def features(self, images: np.ndarray) -> np.ndarray:
        """float32 features of uint8 ``images`` (N x size x size x 3), in batches."""
        parts = []
        for start in range(0, len(images), _FEATURE_BATCH):
            batch = images[start : start + _FEATURE_BATCH]
            # Batches padded to a power of two: a few graph shapes, traced once each.
            padded = 1 << (len(batch) - 1).bit_length()
            if padded != len(batch):
                batch = np.concatenate([batch, np.repeat(batch[-1:], padded - len(batch), 0)])
            out = np.asarray(self._extractor.predict_on_batch(batch.astype(np.float32)))
            parts.append(out[: min(_FEATURE_BATCH, len(images) - start)])
        if not parts:
            return np.zeros((0, self._extractor.output_shape[-1]), np.float32)
        return np.concatenate(parts).astype(np.float32)

    def classifier(self, num_classes: int) -> keras.Model:
        """The whole network with a new (untrained) softmax layer of ``num_classes``."""
        return build_transfer_model(self.backbone, self.preprocessing, self.shape, num_classes)


def ensure_features(
    backbone: FeatureBackbone,
    store: FeatureStore,
    samples: Sequence[Sample],
    views: Sequence[str],
    on_progress: Callable[[int, int], None] | None = None,
) -> dict[tuple[str, str], np.ndarray]:
    """Every sample's features for ``views``: read from ``store``, computed when missing.

    A sample that cannot be decoded any more (deleted meanwhile) is left out.

    Args:
        on_progress: called with (samples done, samples in all) as it goes.
    """
    found: dict[tuple[str, str], np.ndarray] = {}
    missing = []
    for sample in samples:
        for view in views:
            features = store.get(sample.id, view)
            if features is None:
                missing.append(sample)
                break
            found[sample.id, view] = features
    total = len(samples)
    done = total - len(missing)
    if on_progress is not None:
        on_progress(done, total)
    for start in range(0, len(missing), _FEATURE_BATCH):
        batch = []
        for sample in missing[start : start + _FEATURE_BATCH]:
            try:
                image = decode_sample(sample.path, backbone.size)
            except (OSError, ImgrecError):
                continue
            batch.extend((sample.id, view, sample_view(image, view)) for view in views)
        if batch:
            vectors = backbone.features(np.stack([pixels for _, _, pixels in batch]))
            for (sample_id, view, _), vector in zip(batch, vectors, strict=True):
                store.put(sample_id, view, vector)
                found[sample_id, view] = vector
        done += len(missing[start : start + _FEATURE_BATCH])
        if on_progress is not None:
            on_progress(done, total)
    return found


def held_out(samples: Sequence[Sample], fraction: float = HELD_OUT_FRACTION, seed: int = 0) -> set:
    """The ids of the samples held out: about ``fraction`` of each class.

    Each class with at least two samples holds out ``round(fraction * n)`` of them, at
    least one; which ones depends on the sample ids and ``seed`` only, so a sample
    stays on its side while others are added.
    """
    by_class: dict[int, list[Sample]] = {}
    for sample in samples:
        by_class.setdefault(sample.label, []).append(sample)
    chosen = set()
    for members in by_class.values():
        if len(members) < 2:
            continue
        count = max(1, round(fraction * len(members)))

        def rank(sample: Sample) -> str:
            return hashlib.sha256(f"{seed}:{sample.id}".encode()).hexdigest()

        chosen.update(sample.id for sample in sorted(members, key=rank)[:count])
    return chosen


@dataclass
class TeachResult:
    """What a finished run made: the model, its curves and its held-out numbers."""

    model: keras.Model
    history: list[dict[str, Any]]
    metrics: dict[str, Any]
    epochs_done: int


@dataclass
class TeachRun:
    """One training run on cached features (see the module's docstring).

    Args:
        backbone: the loaded backbone (its name and size are the options').
        class_names: the classes, in output order.
        samples: the samples, labelled by index into ``class_names``.
        features: from ``ensure_features``.
        options: the run's options.
        on_epoch: called after each epoch with its history entry; it may return True
            to stop the run there (cancel).
        checkpoint: where the new layer's weights go after each epoch (``.npz``).
        model_name: the model's name for people (``ModelInfo.name``).
    """

    backbone: FeatureBackbone
    class_names: Sequence[str]
    samples: Sequence[Sample]
    features: dict[tuple[str, str], np.ndarray]
    options: TeachOptions
    on_epoch: Callable[[dict[str, Any]], bool | None] | None = None
    checkpoint: Path | None = None
    model_name: str = "teach"
    history: list[dict[str, Any]] = field(default_factory=list)

    def train(self, resume: Sequence[dict[str, Any]] | None = None) -> TeachResult:
        """Train the new layer; with ``resume`` (the history so far), from the checkpoint.

        Raises:
            TeachError: fewer than two classes have samples.
        """
        samples = [s for s in self.samples if (s.id, "plain") in self.features]
        if len({s.label for s in samples}) < 2:
            raise TeachError("a classifier needs samples in at least two classes")
        held = held_out(samples, seed=self.options.seed)
        train = [s for s in samples if s.id not in held]
        test = [s for s in samples if s.id in held]
        x, y = self._arrays(train, self.options.views)
        test_x, test_y = self._arrays(test, PLAIN_VIEWS)
        head = SoftmaxHead(x.shape[1], len(self.class_names), self.options.seed)
        initial = 0
        if resume is not None and self.checkpoint is not None and self.checkpoint.is_file():
            initial = head.load(self.checkpoint)
            self.history = list(resume)[:initial]
        rng = np.random.default_rng([self.options.seed, initial])
        for epoch in range(initial, self.options.epochs):
            head.epoch(x, y, self.options.batch_size, self.options.learning_rate, rng)
            entry = {"epoch": epoch + 1, **head.scores(x, y, "")}
            entry |= head.scores(test_x, test_y, "val_")
            self.history.append(entry)
            if self.checkpoint is not None:
                head.save(self.checkpoint, epoch + 1)
            if self.on_epoch is not None and self.on_epoch(entry):
                break
        metrics = evaluate_held_out(head.probabilities(test_x), test, test_y, self.class_names)
        metrics["trained_on"] = len(train)
        model = self.backbone.classifier(len(self.class_names))
        model.get_layer("predictions").set_weights([head.kernel, head.bias])
        self._attach_info(model, len(self.history))
        return TeachResult(model, self.history, metrics, len(self.history))

    def _arrays(self, samples: Sequence[Sample], views: Sequence[str]) -> tuple[np.ndarray, ...]:
        rows = [
            (self.features[s.id, view], s.label)
            for s in samples
            for view in views
            if (s.id, view) in self.features
        ]
        width = next(iter(self.features.values())).shape[-1]
        x = np.stack([r[0] for r in rows]) if rows else np.zeros((0, width), np.float32)
        return x, np.asarray([r[1] for r in rows], np.int64)

    def _attach_info(self, model: keras.Model, epochs_done: int) -> None:
        entry = get_model_entry(self.options.backbone)
        history: dict[str, list[float]] = {}
        for row in self.history:
            for key, value in row.items():
                if key != "epoch" and value is not None:
                    history.setdefault(key, []).append(float(value))
        record = TrainingRecord(
            architecture=entry.name,
            dataset=DatasetRef(name="teach"),
            epochs_asked=self.options.epochs,
            batch_size=self.options.batch_size,
            split=SplitSettings(HELD_OUT_FRACTION, self.options.seed),
            augment="flip,crop" if self.options.augment else "",
            strategy="head",
            backbone_input=(self.options.image_size, self.options.image_size),
            epochs_done=epochs_done,
            history=history,
        )
        size = self.options.image_size
        info = ModelInfo(
            name=self.model_name,
            class_names=tuple(self.class_names),
            preprocessing=Preprocessing(size=(size, size), name="pixels:0-255"),
            weights=f"{entry.display_name} ({self.backbone.origin}), a new head taught",
            training=record.to_json(),
        )
        attach_info(model, info)


def evaluate_held_out(
    probabilities: np.ndarray,
    samples: Sequence[Sample],
    y: np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Accuracy, per-class accuracy, confusion matrix and most confident mistakes.

    Args:
        probabilities: the model's answers for the held-out samples, one row each.
        samples: the held-out samples, in the order of the rows.
        y: their labels.
        class_names: the classes, in output order.
    """
    count = len(class_names)
    x = probabilities
    predicted = probabilities.argmax(axis=1) if len(x) else np.zeros(0, np.int64)
    confusion = np.zeros((count, count), np.int64)
    for truth, guess in zip(y, predicted, strict=True):
        confusion[truth, guess] += 1
    per_class = []
    for index, name in enumerate(class_names):
        total = int(confusion[index].sum())
        correct = int(confusion[index, index])
        per_class.append(
            {
                "class": name,
                "correct": correct,
                "total": total,
                "accuracy": correct / total if total else None,
            }
        )
    wrong = [i for i in range(len(x)) if predicted[i] != y[i]]
    wrong.sort(key=lambda i: -float(probabilities[i, predicted[i]]))
    mistakes = [
        {
            "sample": samples[i].id,
            "class": class_names[int(y[i])],
            "predicted": class_names[int(predicted[i])],
            "confidence": float(probabilities[i, predicted[i]]),
        }
        for i in wrong[:MAX_MISTAKES]
    ]
    return {
        "classes": list(class_names),
        "held_out": len(x),
        "accuracy": float(np.mean(predicted == y)) if len(x) else None,
        "per_class": per_class,
        "confusion": confusion.tolist(),
        "mistakes": mistakes,
    }


class SoftmaxHead:
    """The new layer (dense + softmax, dropout before it), trained with Adam in NumPy.

    It is Keras's ``Dense(softmax)`` on the features after ``HEAD_DROPOUT``, with the
    same loss and Adam's defaults; in NumPy because a step on a few hundred cached
    vectors costs microseconds, while Keras's ``fit`` spends seconds tracing its
    graphs before the first step.

    Args:
        width: the features' length; classes: the outputs; seed: seeds the weights.
    """

    def __init__(self, width: int, classes: int, seed: int) -> None:
        limit = np.sqrt(6 / (width + classes))  # Glorot uniform, Keras's default
        rng = np.random.default_rng(seed)
        self.kernel = rng.uniform(-limit, limit, (width, classes)).astype(np.float32)
        self.bias = np.zeros(classes, np.float32)
        self._moments = [np.zeros_like(w) for w in (self.kernel, self.bias) for _ in (0, 1)]
        self._steps = 0

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """Softmax outputs for features ``x`` (no dropout)."""
        logits = x @ self.kernel + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return exp / exp.sum(axis=1, keepdims=True)

    def epoch(
        self, x: np.ndarray, y: np.ndarray, batch_size: int, lr: float, rng: np.random.Generator
    ) -> None:
        """One pass over ``x`` in shuffled batches."""
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            rows = order[start : start + batch_size]
            keep = rng.random(x[rows].shape) >= HEAD_DROPOUT
            inputs = x[rows] * keep / (1 - HEAD_DROPOUT)
            error = self.probabilities(inputs)
            error[np.arange(len(rows)), y[rows]] -= 1
            error /= len(rows)
            self._adam(lr, inputs.T @ error, error.sum(axis=0))

    def _adam(self, lr: float, *gradients: np.ndarray) -> None:
        beta1, beta2, epsilon = 0.9, 0.999, 1e-7  # Keras's defaults
        self._steps += 1
        rate = lr * np.sqrt(1 - beta2**self._steps) / (1 - beta1**self._steps)
        for index, (weights, gradient) in enumerate(
            zip((self.kernel, self.bias), gradients, strict=True)
        ):
            m, v = self._moments[2 * index], self._moments[2 * index + 1]
            m += (1 - beta1) * (gradient - m)
            v += (1 - beta2) * (gradient**2 - v)
            weights -= (rate * m / (np.sqrt(v) + epsilon)).astype(np.float32)

    def scores(self, x: np.ndarray, y: np.ndarray, prefix: str) -> dict[str, float | None]:
        """Mean cross-entropy and accuracy on ``x`` (None for both when it is empty)."""
        if not len(x):
            return {f"{prefix}loss": None, f"{prefix}accuracy": None}
        p = self.probabilities(x)
        loss = -np.mean(np.log(np.clip(p[np.arange(len(y)), y], 1e-7, 1)))
        return {
            f"{prefix}loss": float(loss),
            f"{prefix}accuracy": float(np.mean(p.argmax(axis=1) == y)),
        }

    def save(self, path: Path, epoch: int) -> None:
        """Weights, Adam's moments and steps, and the epochs done, atomically (``.npz``)."""
        with atomic_path(path) as tmp:
            steps = np.asarray([self._steps, epoch])
            np.savez(tmp, self.kernel, self.bias, *self._moments, steps)

    def load(self, path: Path) -> int:
        """What ``save`` wrote; returns the epochs done."""
        with np.load(path, allow_pickle=False) as saved:
            arrays = [saved[f"arr_{i}"] for i in range(7)]
        self.kernel, self.bias = arrays[0], arrays[1]
        self._moments = arrays[2:6]
        self._steps, epoch = (int(v) for v in arrays[6])
        return epoch


def save_taught_model(model: keras.Model, path: Path) -> Path:
    """Save a taught model (with its ``ModelInfo``) as one ``.keras`` file, atomically."""
    return save_model(model, path)
