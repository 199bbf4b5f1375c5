"""The names a user chooses from: runtimes, export formats, CAM methods and the like.

The modules that implement them import these tuples, and so does the command line,
which must not start Keras or TensorFlow to list a verb's choices (``imgrec --help``).
One definition each, so that the two cannot drift apart. Nothing here imports Keras.
"""

from __future__ import annotations

DEFAULT_MODEL = "mobilenet_v2"

# What runs a network's forward pass (imgrec.deploy.export_cache.load_runtime).
RUNTIMES = ("auto", "keras", "onnx")

# Test-time augmentation of `imgrec evaluate` and `imgrec predict` (imgrec.models.tta): none;
# the image and its mirror; airbench's six views (mirror, and one-pixel diagonal shifts).
TTA_MODES = ("none", "flip", "flip,shift")

# What runs `imgrec predict` over many images: this process (imgrec.prediction.predict_many)
# or a pool of Ray Data workers (imgrec.prediction.ray_batch.predict_ray).
ENGINES = ("local", "ray")

# What imgrec.deploy.exporter.export writes, and the quantizations it offers.
EXPORT_FORMATS = ("onnx", "tflite", "savedmodel")
QUANTIZATIONS = ("fp16", "int8")

# Class activation map methods (imgrec.explanation.cam) and the colour maps they paint with.
CAM_METHODS = ("cam", "gradcam", "gradcam++")
COLORMAPS = (
    "jet",
    "turbo",
    "viridis",
    "inferno",
    "magma",
    "plasma",
    "hot",
    "cividis",
    "coolwarm",
    "gray",
)

# The transformations of an --augment spec (imgrec.training.augment).
AUGMENTATIONS = ("flip", "rotate", "zoom", "shift", "brightness", "contrast")

# Transfer-learning strategies (imgrec.training.transfer), in the order the CLI lists them.
TRANSFER_STRATEGIES = ("head", "finetune", "scratch")

# OpenCV's Haar cascades that imgrec detect offers (imgrec.classic.detection).
DETECTORS = ("face", "eyes", "cat-face")

# How imgrec.training.fit.train may weigh the classes (besides not at all).
CLASS_WEIGHTS = ("balanced",)
