"""The traditional pipeline beside the CNN: hand-made features, then a scikit-learn classifier.

>>> from imgrec.classic import classic_train, load_classic
>>> classic_train("fashion-mnist", features="hog", classifier="svm", out="fm.joblib")
>>> model = load_classic("fm.joblib")      # refused if fm.joblib.json's digest differs
>>> model.predict(images)                  # uint8, N x 28 x 28 x 1

Modules: ``spec`` (the pipeline spec language shared by ``classic train`` and
``compare``), ``features`` (HOG, LBP, colour histograms, raw pixels, in parallel),
``pipeline`` (train, save and load with the digest check), ``compare`` (the CNN and
the pipeline on the same split).
"""

from __future__ import annotations

from imgrec.classic.pipeline import ClassicModel, classic_train, load_classic, save_classic
from imgrec.classic.spec import PipelineSpec, parse_spec

__all__ = [
    "ClassicModel",
    "PipelineSpec",
    "classic_train",
    "load_classic",
    "parse_spec",
    "save_classic",
]
