"""Every flag of the ``imgrec`` command, declared once; each verb lists the ones it takes.

A flag is a :class:`Flag`: the names and the ``add_argument`` options. Where verbs
share a flag but word its help or default for themselves (``--out``, ``--top``), the
verb takes the shared one with ``.but(...)``: name, type and choices stay in one place.
Choices come from :mod:`imgrec.core.choices`, which imports no Keras, so that
``imgrec --help`` starts no TensorFlow and the CLI keeps no copy of them.

Each flag's ``dest`` is the name of the API parameter it sets (``--batch-size`` sets
``batch_size``), which lets a verb pass its flags on to its API function as they are
(:func:`imgrec.cli.shell.api_arguments`).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from typing import Any, NamedTuple

from imgrec.core.choices import (
    AUGMENTATIONS,
    CAM_METHODS,
    CLASS_WEIGHTS,
    COLORMAPS,
    DEFAULT_MODEL,
    DETECTORS,
    EXPORT_FORMATS,
    QUANTIZATIONS,
    RUNTIMES,
    TRANSFER_STRATEGIES,
    TTA_MODES,
)

# --- Argument types: each refuses a bad value as a usage error (exit code 2) ---------------


def positive_int(text: str) -> int:
    """An integer of at least 1."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    """An integer of at least 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def above_one(text: str) -> float:
    """A number greater than 1."""
    value = float(text)
    if not value > 1:
        raise argparse.ArgumentTypeError(f"must be above 1, got {text}")
    return value


def device_count(text: str) -> int | str:
    """A number of devices of at least 1, or ``all``."""
    if text.strip().lower() == "all":
        return "all"
    try:
        return positive_int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or 'all', got {text!r}") from None


def image_size(text: str) -> tuple[int, int]:
    """``N`` (a square) or ``HxW``, as (height, width)."""
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}")
    return (sizes[0], sizes[-1])


class Flag(NamedTuple):
    """One argument of a verb: its names and its ``argparse`` options."""

    names: tuple[str, ...]
    options: Mapping[str, Any]

    def but(self, **changes: Any) -> Flag:
        """The same flag with some options changed (a verb's own help or default)."""
        return Flag(self.names, {**self.options, **changes})

    def add_to(self, parser: argparse.ArgumentParser) -> None:
        """Declare this flag on ``parser``."""
        parser.add_argument(*self.names, **self.options)


def flag(*names: str, **options: Any) -> Flag:
    """A :class:`Flag` with these names and ``add_argument`` options."""
    return Flag(names, options)


# --- Help texts of flags that several verbs take (lists of names come from the choices) ---

RUNTIME_HELP = (
    "what runs the network: onnx (ONNX Runtime, the model exported once and cached), "
    "keras, or auto (default): onnx when it is installed and the model exports, else keras"
)
# What each augmentation takes after '=' (flip takes nothing; the others a fraction).
_AUGMENT_VALUES = {"flip": "", "rotate": "=DEGREES"}
AUGMENT_HELP = (
    "comma-separated: "
    + ", ".join(name + _AUGMENT_VALUES.get(name, "=F") for name in AUGMENTATIONS)
    + " (e.g. flip,rotate=15,zoom=0.1); default: the recipe's (fast-cnn: flip), "
    "none for none"
)

# --- Flags every verb takes --------------------------------------------------------------

JSON = flag("--json", action="store_true", help="print results as JSON")
QUIET = flag("--quiet", "-q", action="store_true", help="print only the results")
VERBOSE = flag(
    "--verbose",
    action="store_true",
    dest="library_logs",  # not `verbose`: that is the API's progress-bar parameter
    help="also show TensorFlow's, Keras's and the other libraries' own log lines and "
    "warnings (IMGREC_VERBOSE=1 does the same)",
)
COMMON = (JSON, QUIET, VERBOSE)

# --- Models and images -------------------------------------------------------------------

MODEL = flag("model", metavar="MODEL", help="a zoo name or a .keras file")
MODEL_OPTION = flag(
    "--model",
    default=DEFAULT_MODEL,
    help="a zoo name (see 'imgrec zoo'), a .keras file, or an .onnx file from "
    f"'imgrec export' (default: {DEFAULT_MODEL})",
)
WEIGHTS = flag("--weights", metavar="PATH", help="weights file for a zoo network")
IMAGE = flag("image", metavar="IMAGE")
RUNTIME = flag("--runtime", choices=RUNTIMES, default="auto", help=RUNTIME_HELP)
TOP = flag("--top", type=positive_int, default=5, metavar="K", help="top-K")
TTA = flag(
    "--tta",
    metavar="MODE",
    help="test-time augmentation: " + ", ".join(TTA_MODES) + "; flip averages the "
    "probabilities of each image and its mirror, flip,shift also of one-pixel diagonal "
    "shifts of both (airbench's six views); default: the one the model recorded, else none",
)
OUT = flag("--out", help="where the results go")

# --- Data sets and training --------------------------------------------------------------

DATASET = flag("dataset", metavar="DATASET", help="a folder, archive or built-in name")
VAL_SPLIT = flag(
    "--val-split", type=float, help="validation fraction (default 0.1; on resume the run's)"
)
LIMIT_PER_CLASS = flag("--limit-per-class", type=positive_int, help="at most N images a class")
SEED = flag(
    "--seed", type=int, help="seeds split, shuffling and weights (default 0; on resume the run's)"
)
# The data set of train, classic train and compare, and how it is split.
DATA = (DATASET, VAL_SPLIT, LIMIT_PER_CLASS, SEED)

EPOCHS = flag("--epochs", type=positive_int, help="total epochs (default: the recipe's)")
BATCH_SIZE = flag(
    "--batch-size",
    type=positive_int,
    help="images per step (default: the recipe's, else 64; on resume the run's)",
)
IMAGE_SIZE = flag(
    "--image-size", type=image_size, help="N or HxW for photos (default: the network's)"
)
AUGMENT = flag("--augment", metavar="SPEC", help=AUGMENT_HELP)
TRANSFER = flag(
    "--transfer",
    choices=TRANSFER_STRATEGIES,
    help="with a zoo network: train a new head on frozen features (default), "
    "fine-tune the upper layers too, or train the architecture from scratch",
)
CLASS_WEIGHT = flag("--class-weight", choices=CLASS_WEIGHTS, help="weigh rare classes up")
PATIENCE = flag("--patience", type=int, default=5, help="epochs without progress before stopping")
DEVICES = flag(
    "--devices",
    type=device_count,
    metavar="N|all",
    help="train data-parallel on N devices of this host, or all (default 1; the batch size "
    "stays the global one: JAX's DataParallel, TensorFlow's MirroredStrategy)",
)
COORDINATOR = flag(
    "--coordinator",
    metavar="HOST:PORT",
    help="several hosts (JAX): process 0's address; with --num-processes and --process-id",
)
NUM_PROCESSES = flag(
    "--num-processes", type=positive_int, metavar="P", help="several hosts: processes in all"
)
PROCESS_ID = flag(
    "--process-id",
    type=non_negative_int,
    metavar="I",
    help="several hosts: this process, 0 to P-1 (0 writes the files)",
)
# Where training runs: devices of this host, and the processes of several hosts.
PLACEMENT = (DEVICES, COORDINATOR, NUM_PROCESSES, PROCESS_ID)
JOBS = flag("--jobs", type=positive_int, help="processes for feature extraction (default: cores)")

# --- Explanation -------------------------------------------------------------------------

METHOD = flag("--method", choices=CAM_METHODS, default="gradcam", help="CAM method")
CLASS_INDEX = flag(
    "--class", dest="class_index", type=int, metavar="K", help="class index to explain"
)
COLORMAP = flag("--colormap", default="jet", help=f"{', '.join(COLORMAPS)} (default jet)")

# --- Detection and export ----------------------------------------------------------------

DETECTOR = flag("--detector", choices=DETECTORS, default="face", help="what to find")
EXPORT_FORMAT = flag("--format", choices=EXPORT_FORMATS, default="onnx", help="default onnx")
QUANTIZE = flag(
    "--quantize",
    choices=QUANTIZATIONS,
    help="fp16: half-precision weights; int8: 8-bit weights and activations, "
    "calibrated on --val's training images (else on sample photos)",
)
