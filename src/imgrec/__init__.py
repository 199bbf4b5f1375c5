"""imgrec: an image-recognition workbench on Keras 3.

The public API is imported on first use, so that ``import imgrec`` (and the command
line's ``--help``) stays fast and does not start TensorFlow.
"""

from __future__ import annotations

import importlib

from imgrec import _moved
from imgrec.core import native, quiet

# TensorFlow's C++ start-up notices (CPU features, oneDNN) are noise for users: off before
# anything imports TensorFlow, unless the user set TF_CPP_MIN_LOG_LEVEL or IMGREC_VERBOSE.
quiet.quiet_native_logs()
# oneDNN's CPU kernels (twice as fast to train here), unless the user chose.
native.prefer_onednn()

__version__ = "0.1.0"

# Modules regrouped by stage keep their old import paths for one release.
_moved.install()

_API = {
    "predict": "imgrec.prediction",
    "train": "imgrec.training.fit",
    "evaluate": "imgrec.evaluation.report",
    "export": "imgrec.deploy.exporter",
    "load_runtime": "imgrec.deploy.export_cache",
    "explain": "imgrec.explanation.cam",
    "summary": "imgrec.models.summaries",
    "load_dataset": "imgrec.datasets",
    "load_model": "imgrec.models.loading",
    "save_model": "imgrec.models.loading",
    "load_image": "imgrec.core.images",
    "zoo_table": "imgrec.models.zoo",
    "classic_train": "imgrec.classic.pipeline",
    "load_classic": "imgrec.classic.pipeline",
    "compare": "imgrec.evaluation.comparison",
    "detect": "imgrec.classic.detection",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'imgrec' has no attribute {name!r}")
