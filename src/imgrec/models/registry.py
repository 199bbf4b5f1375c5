"""One registry of architectures: the chapter's networks and the zoo's, asked by name.

Modelled on timm's: :func:`list_models` names them, :func:`get_model_entry` says what
one is, :func:`create_model` builds it, and :func:`register_model` adds one.

>>> from imgrec.models.registry import create_model, get_model_entry, list_models
>>> list_models("chapter")
['cifar-cnn', 'catdog-cnn', 'mnist-cnn', 'vgg-bn']
>>> get_model_entry("MobileNetV2").kind, get_model_entry("cifar_cnn").input_shape
('zoo', (32, 32, 3))
>>> model = create_model("cifar-cnn", input_shape=(28, 28, 1), num_classes=10)
>>> model = create_model("mobilenet_v2", pretrained=True)  # with its ImageNet weights

An entry says:

- ``kind``: ``"chapter"`` (the chapter's networks, trained from scratch with their
  recipe in ``entry.chapter``), ``"zoo"`` (ImageNet networks, whose weights and
  published figures are in ``entry.zoo``) or ``"super-resolution"`` (2x upscaling
  networks trained on a folder of photos, recipe in ``entry.super_resolution``);
- ``input_shape``: the default ``(height, width, channels)``;
- ``builder``: what builds the architecture without weights.

The registry builds itself from the tables (``chapter.CHAPTER_ARCHITECTURES``,
``zoo.ZOO`` and ``super_resolution.SR_ARCHITECTURES``), which do not import it. Looking
up and listing import neither Keras nor TensorFlow; building does.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imgrec.core.errors import ModelError
from imgrec.models.chapter import CHAPTER_ARCHITECTURES, ChapterArchitecture
from imgrec.models.super_resolution import (
    SR_ARCHITECTURES,
    SUPER_RESOLUTION,
    SuperResolutionArchitecture,
)
from imgrec.models.zoo import ZOO, ZooEntry

if TYPE_CHECKING:
    import keras

CHAPTER = "chapter"
ZOO_KIND = "zoo"
SR_KIND = SUPER_RESOLUTION
KINDS = (CHAPTER, ZOO_KIND, SR_KIND)


@dataclass(frozen=True)
class ModelEntry:
    """One architecture of the registry.

    Args:
        name: the name users type (``cifar-cnn``, ``mobilenet_v2``).
        kind: ``"chapter"``, ``"zoo"`` or ``"super-resolution"``.
        display_name: the name for people (the paper's spelling for zoo networks).
        description: one line for people.
        input_shape: the default ``(height, width, channels)``.
        builder: builds the architecture without weights. Chapter networks:
            ``builder(input_shape, num_classes, augmentation=None)``; zoo networks:
            ``builder(**options)`` with Keras applications' ``input_shape``,
            ``include_top``, ``pooling``, ``classes``.
        num_classes: the default number of classes (1,000 for the zoo's ImageNet).
        chapter: the chapter network's training recipe, for ``kind == "chapter"``.
        zoo: the zoo's metadata (weights, published figures), for ``kind == "zoo"``.
        super_resolution: the recipe of a ``"super-resolution"`` network (2x upscaling,
            ``imgrec.models.super_resolution``), whose builder is ``builder(channels=3)``.
    """

    name: str
    kind: str
    display_name: str
    description: str
    input_shape: tuple[int, int, int]
    builder: Callable[..., keras.Model]
    num_classes: int
    chapter: ChapterArchitecture | None = None
    zoo: ZooEntry | None = None
    super_resolution: SuperResolutionArchitecture | None = None

    @property
    def input_size(self) -> tuple[int, int]:
        """The default ``(height, width)``."""
        return self.input_shape[0], self.input_shape[1]


def _normalise(name: str) -> str:
    return str(name).lower().replace("-", "").replace("_", "").replace(" ", "")


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(entry: ModelEntry) -> ModelEntry:
    """Add ``entry`` to the registry, so that every verb knows it by name.

    Raises:
        ModelError: the kind is unknown, or the name (spelled any common way) is taken.
    """
    if entry.kind not in KINDS:
        raise ModelError(
            f"{entry.name}: kind must be one of {', '.join(KINDS)}, not {entry.kind!r}"
        )
    for spelling in {_normalise(entry.name), _normalise(entry.display_name)}:
        taken = _find(spelling)
        if taken is not None and taken is not entry:
            raise ModelError(
                f"{entry.name}: the name is taken by {taken.kind} network {taken.name}"
            )
    _REGISTRY[entry.name] = entry
    return entry


def _find(normalised: str) -> ModelEntry | None:
    for entry in _REGISTRY.values():
        if normalised in (_normalise(entry.name), _normalise(entry.display_name)):
            return entry
    return None


def list_models(kind: str | None = None, pattern: str = "*") -> list[str]:
    """The registered names: the chapter's networks first, then the zoo's, in table order.

    Args:
        kind: ``"chapter"``, ``"zoo"`` or ``"super-resolution"`` for one kind only;
            ``None`` for all.
        pattern: a shell-style pattern on the name (``"resnet*"``).

    Raises:
        ModelError: an unknown ``kind``.
    """
    if kind is not None and kind not in KINDS:
        raise ModelError(f"kind must be one of {', '.join(KINDS)}, not {kind!r}")
    return [
        name
        for name, entry in _REGISTRY.items()
        if (kind is None or entry.kind == kind) and fnmatch.fnmatchcase(name, pattern)
    ]


def get_model_entry(name: str) -> ModelEntry:
    """The entry called ``name``, spelled any common way (``CIFAR_CNN``, ``MobileNetV2``).

    Raises:
        ModelError: no architecture of that name; the message lists the known ones.
    """
    entry = _find(_normalise(name))
    if entry is None:
        raise ModelError(
            f"unknown architecture {name!r}; the chapter's networks: "
            f"{', '.join(list_models(CHAPTER))}; the zoo: {', '.join(list_models(ZOO_KIND))}; "
            f"super-resolution: {', '.join(list_models(SR_KIND))}"
        )
    return entry


def is_model(name: str) -> bool:
    """Whether ``name`` (spelled any common way) is a registered architecture."""
    return _find(_normalise(name)) is not None


def create_model(
    name: str,
    pretrained: bool = False,
    *,
    input_shape: tuple[int, int, int] | None = None,
    num_classes: int | None = None,
    augmentation: Any = None,
    weights: str | Path | None = None,
    **options: Any,
) -> keras.Model:
    """Build the architecture ``name``: a plain ``keras.Model``.

    Args:
        name: a registered name (``list_models()``).
        pretrained: for zoo networks, load the ImageNet weights (resolved as
            ``imgrec.load_model`` does: the Keras cache, a download, an offline
            package) with their ``ModelInfo`` attached; the chapter's networks have none.
        input_shape: ``(height, width, channels)``; ``None`` for the entry's default.
        num_classes: the number of classes; ``None`` for the entry's default.
        augmentation: chapter networks only: a Keras layer placed after the input.
        weights: zoo networks, with ``pretrained``: a weights file to use instead.
        **options: zoo networks without weights: Keras applications' ``include_top``,
            ``pooling``...

    Raises:
        ModelError: an unknown name, or options that the kind does not take.
        WeightsError: ``pretrained`` and no weights to be had (the message says
            which file to get and where to put it).
    """
    entry = get_model_entry(name)
    if entry.kind == SR_KIND:
        if pretrained or weights is not None or options or num_classes or augmentation:
            raise ModelError(f"{entry.name} is a super-resolution network: it takes input_shape")
        return entry.builder(channels=(input_shape or entry.input_shape)[-1])
    if entry.kind == CHAPTER:
        if pretrained or weights is not None or options:
            unexpected = ["pretrained"] * bool(pretrained or weights) + sorted(options)
            raise ModelError(
                f"{entry.name} is one of the chapter's networks, trained from scratch: "
                f"it takes no {', '.join(unexpected)}"
            )
        shape = entry.input_shape if input_shape is None else input_shape
        classes = entry.num_classes if num_classes is None else num_classes
        return entry.builder(shape, classes, augmentation=augmentation)
    return _create_zoo_model(
        entry, pretrained, input_shape, num_classes, augmentation, weights, options
    )


def _create_zoo_model(entry, pretrained, input_shape, num_classes, augmentation, weights, options):
    if augmentation is not None:
        raise ModelError(f"{entry.name}: augmentation goes with the chapter's networks")
    if pretrained or weights is not None:
        if input_shape is not None or num_classes is not None or options:
            raise ModelError(
                f"{entry.name}: the pretrained network has ImageNet's input and classes; "
                "for another head, train one (imgrec train --arch with --transfer)"
            )
        from imgrec.models.pretrained import load_pretrained

        return load_pretrained(entry.name, weights)
    if input_shape is not None:
        options["input_shape"] = tuple(input_shape)
    if num_classes is not None:
        options["classes"] = num_classes
    return entry.builder(**options)


# --------------------------------------------------------------------- the two tables


def _chapter_entry(arch: ChapterArchitecture) -> ModelEntry:
    return ModelEntry(
        name=arch.name,
        kind=CHAPTER,
        display_name=arch.name,
        description=arch.description,
        input_shape=arch.default_input_shape,
        builder=arch.build,
        num_classes=arch.default_num_classes,
        chapter=arch,
    )


def _zoo_builder(zoo: ZooEntry) -> Callable[..., keras.Model]:
    def build(**options: Any) -> keras.Model:
        """The zoo network without weights (``pretrained.build_architecture``)."""
        from imgrec.models.pretrained import build_architecture

        return build_architecture(zoo, **options)

    build.__name__ = build.__qualname__ = zoo.name
    return build


def _zoo_entry(zoo: ZooEntry) -> ModelEntry:
    top1 = f", {zoo.top1} % top-1 on ImageNet" if zoo.top1 is not None else ""
    return ModelEntry(
        name=zoo.name,
        kind=ZOO_KIND,
        display_name=zoo.display_name,
        description=f"{zoo.display_name}: ImageNet classifier, {zoo.size_mb} MB{top1}",
        input_shape=(zoo.input_size, zoo.input_size, 3),
        builder=_zoo_builder(zoo),
        num_classes=1000,
        zoo=zoo,
    )


def _sr_entry(arch: SuperResolutionArchitecture) -> ModelEntry:
    return ModelEntry(
        name=arch.name,
        kind=SR_KIND,
        display_name=arch.name,
        description=arch.description,
        input_shape=(32, 32, 3),
        builder=arch.build,
        num_classes=0,
        super_resolution=arch,
    )


for _arch in CHAPTER_ARCHITECTURES.values():
    register_model(_chapter_entry(_arch))
for _zoo in ZOO:
    register_model(_zoo_entry(_zoo))
for _sr in SR_ARCHITECTURES.values():
    register_model(_sr_entry(_sr))
del _arch, _zoo, _sr
