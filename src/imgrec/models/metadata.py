"""What imgrec knows about a model beyond its layers: class names, preprocessing, origin.

A model stays a plain ``keras.Model``; this record rides along as an attribute, and
inside the ``.keras`` file when the model is saved.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import keras

from imgrec.core.choices import TTA_MODES
from imgrec.core.errors import ModelError

# class_probabilities lives with the other Keras-free output helpers; importable here too.
from imgrec.models.outputs import class_probabilities as class_probabilities
from imgrec.models.preprocessing import Preprocessing
from imgrec.models.tta import check_tta

_ATTRIBUTE = "_imgrec_info"


@dataclass(frozen=True)
class ModelInfo:
    """What a model needs besides its weights to give answers people can read.

    Args:
        name: the model's name for people ("MobileNetV2", or a file name).
        class_names: one name per output unit (two for a single sigmoid unit).
        preprocessing: how to turn a photo into the model's input.
        weights: where the weights came from ("offline package fdet-...", a path, ...).
        training: for a model imgrec trained, its training record as JSON data: the
            architecture, the data set (name, source, fingerprint), the augmentation,
            the epochs done and asked for, the history and the training settings
            (``imgrec.training.record.TrainingRecord.from_json`` reads it, old files
            included); ``None`` for pretrained networks.
        tta: the test-time augmentation this model is best run with (``"flip"``,
            ``"flip,shift"``; ``imgrec.models.tta``), which ``evaluate`` and ``predict``
            use unless told otherwise; ``None`` (files written before it existed too):
            none.
    """

    name: str
    class_names: tuple[str, ...]
    preprocessing: Preprocessing
    weights: str
    training: dict[str, Any] | None = None
    tta: str | None = None

    def __post_init__(self) -> None:
        if self.tta is not None:
            check_tta(self.tta)

    def to_config(self) -> dict[str, Any]:
        config = {
            "name": self.name,
            "class_names": list(self.class_names),
            "preprocessing": self.preprocessing.to_config(),
            "weights": self.weights,
            "training": self.training,
        }
        # Written only when set: a model without one keeps the bytes (and so the digests
        # that name its exports) it had before the field existed.
        if self.tta is not None:
            config["tta"] = self.tta
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelInfo:
        """The ``ModelInfo`` of ``to_config``'s data (older files included: no ``tta``, none).

        Raises:
            KeyError, TypeError, ValueError: data that is not a ``ModelInfo``'s (the
                readers of files turn them into a ``ModelError`` naming the file).
        """
        tta = config.get("tta")
        if tta is not None and tta not in TTA_MODES:
            raise ValueError(f"unknown test-time augmentation {tta!r}")
        return cls(
            name=config["name"],
            class_names=tuple(config["class_names"]),
            preprocessing=Preprocessing.from_config(config["preprocessing"]),
            weights=config["weights"],
            training=config.get("training"),
            tta=config.get("tta"),
        )


def attach_info(model: keras.Model, info: ModelInfo) -> keras.Model:
    """Record ``info`` on ``model`` and return the model."""
    object.__setattr__(model, _ATTRIBUTE, info)
    return model


def model_info(model: keras.Model) -> ModelInfo:
    """The ``ModelInfo`` recorded on ``model``.

    Raises:
        ModelError: the model was not built or loaded by imgrec.
    """
    info = getattr(model, _ATTRIBUTE, None)
    if info is None:
        raise ModelError(
            f"model {model.name!r} carries no imgrec metadata (class names, preprocessing); "
            "build it with imgrec.load_model"
        )
    return info
