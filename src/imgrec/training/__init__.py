"""Fit a network: the chapter's ``model.fit`` with checkpoints, resume, augmentation and
transfer learning. ``imgrec.train`` is the one entry point."""

from imgrec.training.checkpoints import companion_path
from imgrec.training.fit import is_transfer_architecture, train
from imgrec.training.loop import compile_classifier, fit_with_checkpoints
from imgrec.training.record import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_VAL_SPLIT,
    TrainingRecord,
    steps_per_epoch,
)

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "DEFAULT_VAL_SPLIT",
    "TrainingRecord",
    "companion_path",
    "compile_classifier",
    "fit_with_checkpoints",
    "is_transfer_architecture",
    "steps_per_epoch",
    "train",
]
