"""``imgrec summary``: Keras's summary of a registered architecture or a ``.keras`` file."""

from __future__ import annotations

import os

import keras

from imgrec.core.errors import ModelError
from imgrec.models.loading import load_keras_file
from imgrec.models.registry import CHAPTER, create_model, get_model_entry, list_models


def summary(model: str | os.PathLike | keras.Model) -> str:
    """Keras's layer-by-layer summary, and the chapter's parameter count where it has one.

    Args:
        model: a chapter network's name (``cifar-cnn``), a zoo name (``resnet50``:
            built without weights), a ``.keras`` file, or a model.

    Raises:
        ModelError: none of those.
    """
    reference = None
    if not isinstance(model, keras.Model):
        name = str(model)
        if name.endswith(".keras"):
            model = load_keras_file(name)
        else:
            model, reference = _build_by_name(name)
    lines: list[str] = []
    model.summary(print_fn=lambda text, line_break=True: lines.append(text))
    if reference is not None:
        match = "equal" if reference == model.count_params() else "DIFFERENT from"
        lines.append(f"Parameters: {model.count_params():,} ({match} the chapter's {reference:,})")
    return "\n".join(lines)


def _build_by_name(name: str) -> tuple[keras.Model, int | None]:
    try:
        entry = get_model_entry(name)
    except ModelError:
        raise ModelError(
            f"{name!r} is neither a .keras file, one of the chapter's networks "
            f"({', '.join(list_models(CHAPTER))}) nor a zoo network (see 'imgrec zoo')"
        ) from None
    reference = entry.chapter.reference_parameters if entry.kind == CHAPTER else None
    return create_model(entry.name), reference
