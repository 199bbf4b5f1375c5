"""How good is a model: accuracy, top-k, per-class figures and pictures (``evaluate``), and
the chapter's CNN beside the traditional pipeline on the same split (``compare``)."""

from imgrec.core.metrics import classification_metrics
from imgrec.deploy.runtime import predict_probabilities
from imgrec.evaluation.report import evaluate
from imgrec.training.held_out import load_held_out

__all__ = ["classification_metrics", "evaluate", "load_held_out", "predict_probabilities"]
