"""Zoo networks with their ImageNet weights, resolved the way a user expects.

The order: a weights file the user names; Keras's cache (``~/.keras/models``); a
download, when the weights host answers; an offline package that carries
PyTorch weights; torchvision's weights file in PyTorch's hub cache
(``~/.cache/torch/hub/checkpoints``). PyTorch weights are converted once into
Keras's layout and cached under ``imgrec_home()/converted``. Preprocessing follows
where the weights came from.
"""

from __future__ import annotations

import hashlib
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from imgrec.core.errors import WeightsError
from imgrec.core.storage import atomic_path, imgrec_home
from imgrec.models.efficientnet_lite import (
    EfficientNetLite0,
    lite_preprocessing,
    load_torch_state_dict,
)
from imgrec.models.labels import imagenet_class_names
from imgrec.models.metadata import ModelInfo, attach_info, model_info
from imgrec.models.mobilenet_v2 import MobileNetV2Torchvision, load_torchvision_state_dict
from imgrec.models.preprocessing import Preprocessing, keras_imagenet, torchvision_imagenet
from imgrec.models.squeezenet import SqueezeNet1_1
from imgrec.models.squeezenet import load_torch_state_dict as load_squeezenet_state_dict
from imgrec.models.torch_weights import load_state_dict
from imgrec.models.zoo import (
    ZooEntry,
    get_entry,
    keras_cached_weights,
    missing_weights_message,
    weights_host_reachable,
    weights_origin,
)

DOWNLOAD_TIMEOUT_S = 60


@dataclass(frozen=True)
class _TorchArchitecture:
    """A Keras architecture that takes a PyTorch state dict, and its preprocessing."""

    build: Callable[[], keras.Model]
    load_state_dict: Callable[[keras.Model, dict[str, np.ndarray]], None]
    preprocessing: Callable[[], Preprocessing]


_TORCH_ARCHITECTURES = {
    "mobilenet_v2": _TorchArchitecture(
        MobileNetV2Torchvision, load_torchvision_state_dict, torchvision_imagenet
    ),
    "efficientnet_lite0": _TorchArchitecture(
        EfficientNetLite0, load_torch_state_dict, lite_preprocessing
    ),
    "squeezenet1_1": _TorchArchitecture(
        SqueezeNet1_1, load_squeezenet_state_dict, torchvision_imagenet
    ),
}


def build_architecture(entry: ZooEntry, torch_layout: bool = False, **options) -> keras.Model:
    """The network of ``entry`` with no weights.

    Args:
        entry: the zoo network.
        torch_layout: build the twin that takes PyTorch weights (where one exists)
            instead of Keras's own architecture.
        **options: ``input_shape``, ``include_top``, ``pooling`` as in Keras's
            applications.
    """
    if entry.keras_builder is None or torch_layout:
        return _TORCH_ARCHITECTURES[entry.name].build(**options)
    return getattr(keras.applications, entry.keras_builder)(weights=None, **options)


def load_backbone(
    name: str, input_shape: tuple[int, int, int], pretrained: bool = True
) -> tuple[keras.Model, Preprocessing, str]:
    """A zoo network without its classifier, ending in global average pooling.

    Args:
        name: a zoo name.
        input_shape: the input the backbone is built for (weights do not depend on it).
        pretrained: copy the ImageNet weights in (resolved as ``load_pretrained``
            does); False leaves the architecture's random initialisation.

    Returns:
        The backbone, the preprocessing its weights expect, and where they came from.
    """
    entry = get_entry(name)
    if not pretrained:
        backbone = build_architecture(
            entry, input_shape=input_shape, include_top=False, pooling="avg"
        )
        return backbone, torchvision_imagenet(input_shape[0]), "random initialisation"
    local = weights_origin(entry) in ("offline package", "torch hub cache")
    torch_file = _local_torch_file(entry) if local else None
    if torch_file is not None:
        # Straight from the PyTorch state dict into the headless twin: loading the
        # whole converted network only to copy its layers would build it twice.
        architecture = _TORCH_ARCHITECTURES[entry.name]
        backbone = architecture.build(input_shape=input_shape, include_top=False, pooling="avg")
        architecture.load_state_dict(backbone, load_state_dict(torch_file[0]))
        return backbone, architecture.preprocessing(), torch_file[1]
    full = load_pretrained(name)
    info = model_info(full)
    # The weights fit the layout they were loaded into: Keras's own or PyTorch's twin.
    torch_layout = not info.preprocessing.name.startswith("keras:")
    backbone = build_architecture(
        entry, torch_layout, input_shape=input_shape, include_top=False, pooling="avg"
    )
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(full.get_layer(layer.name).get_weights())
    return backbone, info.preprocessing, info.weights


def load_pretrained(name: str, weights: str | Path | None = None) -> keras.Model:
    """A zoo network with ImageNet weights and its ``ModelInfo`` attached.

    Args:
        name: a zoo name (``imgrec zoo`` lists them), e.g. ``"mobilenet_v2"``.
        weights: a weights file to use instead of looking for one: Keras weights
            (``.h5``, ``.weights.h5``) or, for networks with a PyTorch
            converter, a PyTorch state dict (``.pth``).

    Raises:
        ModelError: unknown name.
        WeightsError: no weights to be had; the message names the file to get and
            the folder to put it in.
    """
    entry = get_entry(name)
    if weights is not None:
        return _from_user_file(entry, Path(weights))
    cached = keras_cached_weights(entry)
    if cached is not None:
        return _with_keras_weights(entry, str(cached), f"Keras cache ({cached})")
    if entry.keras_weights_file and weights_host_reachable():
        try:
            return _download(entry)
        except WeightsError as err:
            if entry.offline is None:
                raise
            print(f"imgrec: {err}; using the offline package instead", file=sys.stderr)
    torch_file = _local_torch_file(entry)
    if torch_file is not None:
        return _with_torch_weights(entry, *torch_file)
    raise WeightsError(missing_weights_message(entry))


def _local_torch_file(entry: ZooEntry) -> tuple[Path, str] | None:
    """PyTorch weights for ``entry`` on this machine, and where they came from.

    An offline package first, then torchvision's file in PyTorch's hub cache;
    ``None`` when there is neither.
    """
    path = entry.offline.path() if entry.offline else None
    if path is not None:
        return path, f"offline package {entry.offline.package}: {entry.offline.description}"
    path = entry.torch_hub.path() if entry.torch_hub else None
    if path is not None:
        return path, f"torch hub cache ({path}): {entry.torch_hub.description}"
    return None


def _info(entry: ZooEntry, preprocessing: Preprocessing, origin: str) -> ModelInfo:
    return ModelInfo(entry.display_name, imagenet_class_names(), preprocessing, origin)


def _with_keras_weights(entry: ZooEntry, weights: str, origin: str) -> keras.Model:
    if entry.keras_builder is None:
        raise WeightsError(f"{entry.display_name} has no Keras weights; pass a .pth file")
    try:
        model = getattr(keras.applications, entry.keras_builder)(weights=weights)
    except (ValueError, OSError) as err:
        raise WeightsError(
            f"{weights}: not usable as {entry.display_name} weights ({err})"
        ) from err
    preprocessing = keras_imagenet(entry.keras_preprocessing, entry.input_size)
    return attach_info(model, _info(entry, preprocessing, origin))


def _download(entry: ZooEntry) -> keras.Model:
    """Let Keras fetch its weights into its cache, with a timeout on the socket."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return _with_keras_weights(entry, "imagenet", "download (now in the Keras cache)")
    except Exception as err:  # Keras wraps network failures in a plain Exception
        if isinstance(err, WeightsError):
            raise
        raise WeightsError(f"downloading {entry.keras_weights_file} failed ({err})") from err
    finally:
        socket.setdefaulttimeout(previous)


def _from_user_file(entry: ZooEntry, path: Path) -> keras.Model:
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    if path.suffix == ".pth":
        return _with_torch_weights(entry, path, f"PyTorch weights {path}")
    return _with_keras_weights(entry, str(path), f"Keras weights {path}")


def _with_torch_weights(entry: ZooEntry, pth: Path, origin: str) -> keras.Model:
    """The Keras twin of a PyTorch network; ``pth`` is converted once, then cached.

    The cache holds the whole converted model as a ``.keras`` file: loading it is
    faster than building the architecture again.
    """
    architecture = _TORCH_ARCHITECTURES.get(entry.name)
    if architecture is None:
        raise WeightsError(f"{pth}: imgrec has no PyTorch converter for {entry.display_name}")
    converted = _converted_path(entry, pth)
    model = _load_converted(converted)
    if model is None:
        model = architecture.build()
        architecture.load_state_dict(model, load_state_dict(pth))
        with atomic_path(converted) as tmp:
            model.save(tmp)
    return attach_info(model, _info(entry, architecture.preprocessing(), origin))


def _load_converted(path: Path) -> keras.Model | None:
    if not path.is_file():
        return None
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as err:  # a damaged cache entry is rebuilt, not fatal
        print(f"imgrec: ignoring damaged cache file {path} ({err})", file=sys.stderr)
        return None


def _converted_path(entry: ZooEntry, pth: Path) -> Path:
    digest = hashlib.sha256(pth.read_bytes()).hexdigest()[:16]
    return imgrec_home() / "converted" / f"{entry.name}-{digest}-keras{keras.__version__}.keras"
