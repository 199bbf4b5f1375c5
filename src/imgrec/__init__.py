"""imgrec: an image-recognition workbench on Keras 3.

The public API is imported on first use, so that ``import imgrec`` (and the command
line's ``--help``) stays fast and does not start TensorFlow.
"""

from __future__ import annotations

import importlib
import os

# TensorFlow's C++ start-up notices (CPU features, oneDNN) are noise for users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

_API = {
    "predict": "imgrec.prediction",
    "train": "imgrec.training",
    "evaluate": "imgrec.evaluation",
    "export": "imgrec.exporter",
    "load_runtime": "imgrec.runtime",
    "explain": "imgrec.explanation",
    "summary": "imgrec.summaries",
    "load_dataset": "imgrec.datasets",
    "load_model": "imgrec.models.loading",
    "save_model": "imgrec.models.loading",
    "load_image": "imgrec.images",
    "zoo_table": "imgrec.models.zoo",
    "classic_train": "imgrec.classic.pipeline",
    "load_classic": "imgrec.classic.pipeline",
    "compare": "imgrec.classic.compare",
    "detect": "imgrec.detection",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'imgrec' has no attribute {name!r}")
