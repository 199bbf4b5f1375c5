"""The training record: what a run was and what it has done, saved inside its model.

A model trained by imgrec carries this record in its ``.keras`` file (the
``training`` field of its ``ModelInfo``, as JSON), so that ``--resume`` can continue
the run, ``evaluate`` and ``export`` can draw the same validation split again, and
the history of every epoch travels with the weights it produced.

The JSON form keeps the keys imgrec has always written, so files written before this
module existed read back, and files written now read in older versions too. Keys this
version does not know are kept as they were.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from imgrec.core.errors import ModelError
from imgrec.core.native import FLOAT32
from imgrec.datasets import Dataset

DEFAULT_VAL_SPLIT = 0.1
DEFAULT_BATCH_SIZE = 64


def steps_per_epoch(samples: int, batch_size: int) -> int:
    """Steps of ``batch_size`` images that cover ``samples`` images once."""
    return max(1, -(-samples // batch_size))


@dataclass(frozen=True)
class SplitSettings:
    """How a run split its data: draw the same split again and no image changes side.

    Args:
        val_split: the fraction of training images held out for validation (when the
            data set has no validation split of its own).
        seed: seeds the split, the shuffling, the augmentation and the weights.
        limit_per_class: at most this many training images per class, or None.
    """

    val_split: float = DEFAULT_VAL_SPLIT
    seed: int = 0
    limit_per_class: int | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> SplitSettings:
        """The split settings of a training record (a network's or the classic pipeline's)."""
        data = data or {}
        val_split = data.get("val_split")
        return cls(
            val_split=DEFAULT_VAL_SPLIT if val_split is None else float(val_split),
            seed=int(data.get("seed") or 0),
            limit_per_class=data.get("limit_per_class"),
        )


@dataclass(frozen=True)
class DatasetRef:
    """Which data a run trained on: its name, where it was read, and its fingerprint."""

    name: str = ""
    source: str = ""
    fingerprint: str = ""

    @classmethod
    def of(cls, data: Dataset) -> DatasetRef:
        return cls(name=data.name, source=data.source, fingerprint=data.fingerprint)


@dataclass(frozen=True)
class TrainingRecord:
    """One training run: its settings, its data, and its progress epoch by epoch.

    Args:
        architecture: the network (a chapter network's or a zoo network's name).
        dataset: the data it trained on.
        epochs_asked: the epochs the run is to reach.
        batch_size: images per step (the learning-rate schedule counts steps).
        split: how the data was split.
        augment: the augmentation spec, normalised ("" for none).
        strategy: for transfer learning, ``head``, ``finetune`` or ``scratch``.
        backbone_input: for transfer learning, the backbone's input height and width.
        devices: the devices the latest fit trained on, all processes together
            (written only when more than one).
        precision: the arithmetic the recipe asks for: ``"float32"``, or ``"bfloat16"``
            where the CPU has it natively (``imgrec.core.native.training_precision``;
            written only when not float32).
        alternate_flips: whether the training images are mirrored every other epoch
            (``imgrec.training.flips``) rather than by the model's augmentation layer
            (written only when they are).
        epochs_done: the epochs completed (a partial epoch never counts).
        history: per metric, one value per completed epoch.
        extra: keys of the stored record this version does not know, kept as read.
    """

    architecture: str
    dataset: DatasetRef
    epochs_asked: int
    batch_size: int = DEFAULT_BATCH_SIZE
    split: SplitSettings = SplitSettings()
    augment: str = ""
    strategy: str | None = None
    backbone_input: tuple[int, int] | None = None
    devices: int = 1
    precision: str = FLOAT32
    alternate_flips: bool = False
    epochs_done: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The record as JSON-ready data, with the keys imgrec has always written."""
        data: dict[str, Any] = {"architecture": self.architecture}
        if self.strategy is not None:
            data["strategy"] = self.strategy
        if self.backbone_input is not None:
            data["backbone_input"] = list(self.backbone_input)
        data |= {
            "augment": self.augment,
            "batch_size": self.batch_size,
            "seed": self.split.seed,
            "val_split": self.split.val_split,
            "limit_per_class": self.split.limit_per_class,
            "dataset": dataclasses.asdict(self.dataset),
            "epochs_asked": self.epochs_asked,
            "epochs_done": self.epochs_done,
            "history": {key: list(values) for key, values in self.history.items()},
        }
        if self.devices != 1:
            data["devices"] = self.devices
        if self.precision != FLOAT32:
            data["precision"] = self.precision
        if self.alternate_flips:
            data["alternate_flips"] = True
        return data | {k: v for k, v in self.extra.items() if k not in data}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainingRecord:
        """A record from its JSON form, as any version of imgrec wrote it.

        Raises:
            ModelError: ``data`` is not a network's training record.
        """
        if not isinstance(data, Mapping) or "architecture" not in data:
            raise ModelError(f"not a training record written by imgrec: {data!r:.200}")
        known = {f.name for f in dataclasses.fields(cls)} | {"seed", "val_split", "limit_per_class"}
        dataset = data.get("dataset") or {}
        backbone_input = data.get("backbone_input")
        epochs_done = int(data.get("epochs_done") or 0)
        return cls(
            architecture=str(data["architecture"]),
            dataset=DatasetRef(
                **{k: str(dataset.get(k, "")) for k in ("name", "source", "fingerprint")}
            ),
            epochs_asked=int(data.get("epochs_asked") or epochs_done),
            batch_size=int(data.get("batch_size") or DEFAULT_BATCH_SIZE),
            split=SplitSettings.from_json(data),
            augment=str(data.get("augment") or ""),
            strategy=data.get("strategy"),
            backbone_input=tuple(backbone_input) if backbone_input else None,
            devices=int(data.get("devices") or 1),
            precision=str(data.get("precision") or FLOAT32),
            alternate_flips=data.get("alternate_flips") is True,
            epochs_done=epochs_done,
            history={
                key: [float(v) for v in values]
                for key, values in (data.get("history") or {}).items()
            },
            extra={k: v for k, v in data.items() if k not in known},
        )

    def after_epoch(self, logs: Mapping[str, float]) -> TrainingRecord:
        """This record with one more completed epoch, whose metrics are ``logs``."""
        history = {key: list(values) for key, values in self.history.items()}
        for key, value in logs.items():
            history.setdefault(key, []).append(float(value))
        return dataclasses.replace(self, epochs_done=self.epochs_done + 1, history=history)

    def best_loss(self, has_validation: bool) -> float | None:
        """The lowest validation loss so far (training loss without validation data)."""
        losses = self.history.get("val_loss" if has_validation else "loss", [])
        return min(losses) if losses else None
