"""Reach inside a model: its layers, nested models included, and their outputs.

Class Activation Maps need a feature map and the part of the network after it; the
layer viewer needs every layer's output for one photo. Keras gives a layer's
``output`` in the graph the layer was built in, which for a layer inside a nested
model (a transfer model keeps its backbone as one nested model named "backbone") is
the inner model's graph, not reachable from the outer model's input.

The functions here rebuild the model's graph on fresh inputs with
``keras.models.clone_model``, calling the model's own layers (so every weight is
shared, nothing is copied), and open nested models on the way, so that the wanted
tensors belong to one graph from the model's input. Layers are named by their path:
``"out_relu"`` at the top level, ``"backbone/out_relu"`` inside the nested model
``backbone`` (Keras forbids "/" in layer names, so paths are unambiguous).
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence

import keras

from imgrec.core.errors import ModelError

SEPARATOR = "/"
# How many candidate layers an error message lists (MobileNetV2 has over 150).
_LISTED_CANDIDATES = 12


def walk_layers(model: keras.Model) -> Iterator[tuple[str, keras.layers.Layer]]:
    """Every layer of ``model`` in order, each nested model followed by its own layers.

    Yields:
        ``(path, layer)``: ``path`` is the layer's name, prefixed with the names of
        the nested models around it (``"backbone/Conv1"``).
    """
    yield from _walk(model, "")


def _walk(model: keras.Model, prefix: str) -> Iterator[tuple[str, keras.layers.Layer]]:
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        yield path, layer
        if isinstance(layer, keras.Model):
            yield from _walk(layer, path + SEPARATOR)


def output_rank(layer: keras.layers.Layer) -> int | None:
    """The number of dimensions (batch included) of ``layer``'s output; None if unknown.

    A layer with several outputs, or one that was never called, has no single rank.
    """
    try:
        output = layer.output
    except (AttributeError, ValueError):  # Keras's answers for a layer never called
        return None
    return len(output.shape) if hasattr(output, "shape") else None


def spatial_layers(model: keras.Model) -> list[str]:
    """Paths of the layers with a 4-D output (``N x H x W x C``), in order.

    Input layers and nested models are left out: a nested model's output is its
    last layer's, listed under the layer's own path.
    """
    return [
        path
        for path, layer in walk_layers(model)
        if output_rank(layer) == 4 and not isinstance(layer, keras.layers.InputLayer | keras.Model)
    ]


def resolve_layer(model: keras.Model, name: str, candidates: Sequence[str]) -> str:
    """The path of the layer ``name`` among ``candidates`` (paths of ``model``'s layers).

    Args:
        model: the model, for error messages.
        name: a path (``"backbone/out_relu"``) or a bare layer name (``"out_relu"``)
            that ends exactly one candidate's path.
        candidates: the paths that may be chosen.

    Raises:
        ModelError: no candidate, or several, match ``name``; the message lists the
            candidates (the last ones, for long lists).
    """
    if name in candidates:
        return name
    matches = [path for path in candidates if path.rsplit(SEPARATOR, 1)[-1] == name]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise ModelError(
            f"layer {name!r} is ambiguous in model {model.name!r}: {', '.join(matches)}"
        )
    raise ModelError(
        f"model {model.name!r} has no layer {name!r} to choose here; "
        f"candidates: {describe_candidates(candidates)}"
    )


def describe_candidates(candidates: Sequence[str]) -> str:
    """The candidates as one line, the last ones (nearest the output) for long lists."""
    if len(candidates) <= _LISTED_CANDIDATES:
        return ", ".join(candidates) or "none"
    shown = ", ".join(candidates[-_LISTED_CANDIDATES:])
    return f"{shown} (the last {_LISTED_CANDIDATES} of {len(candidates)})"


def tap_model(model: keras.Model, paths: Sequence[str]) -> keras.Model:
    """A model from ``model``'s inputs to the outputs of the layers at ``paths``.

    The result shares every layer (and weight) with ``model``.

    Args:
        model: a functional or Sequential model.
        paths: layer paths, as ``walk_layers`` names them.

    Returns:
        A ``keras.Model`` with one output per path, in the order given.

    Raises:
        ModelError: a path names no layer of ``model``.
    """
    _check_paths(model, paths)
    clone, outputs, _ = _rebuild(model, taps=set(paths))
    return keras.Model(clone.input, [outputs[path] for path in paths], name=f"{model.name}_taps")


def split_model(
    model: keras.Model, path: str, stop_before: str | None = None
) -> tuple[keras.Model, keras.Model]:
    """Cut ``model`` in two at the output of the layer at ``path``.

    Args:
        model: a functional or Sequential model.
        path: the layer to cut after, as ``walk_layers`` names it.
        stop_before: the name of a top-level layer (the classifier, say): the second
            part then ends at this layer's input instead of the model's output.

    Returns:
        ``(features, head)``: ``features`` maps the model's inputs to two outputs,
        the layer's output and the model's output (one pass gives both); ``head``
        maps the layer's output to the model's output (or to ``stop_before``'s
        input). Both share their layers with ``model``.

    Raises:
        ModelError: ``path`` names no layer, or the layer is not on every path from
            the input to the output (a skip connection goes around it), so that
            the output is not a function of its output alone.
    """
    _check_paths(model, [path])
    clone, outputs, inputs = _rebuild(
        model, cut=path, inputs_of={stop_before} if stop_before else set()
    )
    feature_map = outputs[path]
    end = inputs[stop_before] if stop_before else clone.output
    features = keras.Model(clone.input, [feature_map, clone.output], name=f"{model.name}_features")
    return features, _tail(feature_map, end, model, path)


def _check_paths(model: keras.Model, paths: Collection[str]) -> None:
    known = {path for path, _ in walk_layers(model)}
    for path in paths:
        if path not in known:
            raise ModelError(f"model {model.name!r} has no layer {path!r}")


def _tail(start, end, model: keras.Model, path: str) -> keras.Model:
    """The graph from the tensor ``start`` to ``end``, as a model."""
    try:
        return keras.Model(start, end, name=f"{model.name}_head")
    except ValueError as err:  # Keras: "Output ... is not connected to `inputs`"
        raise ModelError(
            f"layer {path!r} of model {model.name!r} cannot be cut after: a skip "
            "connection goes around it, so the output does not depend on its output "
            "alone; choose a layer on every path to the output (the end of a block)"
        ) from err


def _functional(model: keras.Model) -> keras.Model:
    """``model`` as a functional model (a Sequential model's graph, same layers)."""
    if isinstance(model, keras.Sequential):
        # ``inputs``, not ``input``: a Sequential model called as a layer answers
        # ``input`` with the tensor it was called on, outside its own graph.
        inputs = model.inputs
        return keras.Model(
            inputs[0] if len(inputs) == 1 else inputs, model.outputs, name=model.name
        )
    return model


def _rebuild(
    model: keras.Model,
    taps: Collection[str] = frozenset(),
    cut: str | None = None,
    inputs_of: Collection[str] = frozenset(),
) -> tuple[keras.Model, dict[str, object], dict[str, object]]:
    """Rebuild ``model``'s graph with its own layers, opening nested models.

    Args:
        model: the model.
        taps: paths whose outputs the new graph must expose.
        cut: a path whose output must be a tensor on which all of the rest is
            computed: a nested model around it is called as two models, the part
            before the layer and the part after it.
        inputs_of: top-level layer names whose inputs the new graph must expose.

    Returns:
        The rebuilt model, its tensors for ``taps`` and ``cut`` by path, and the
        inputs of ``inputs_of`` by name.
    """
    outputs: dict[str, object] = {}
    inputs: dict[str, object] = {}

    def inner(paths: Collection[str], name: str) -> set[str]:
        prefix = name + SEPARATOR
        return {p[len(prefix) :] for p in paths if p.startswith(prefix)}

    def call(layer: keras.layers.Layer, *args, **kwargs):
        name = layer.name
        if name in inputs_of:
            inputs[name] = args[0]
        sub_taps = inner(taps, name)
        sub_cut = inner([cut] if cut else [], name)
        if sub_cut:
            (sub_path,) = sub_cut
            sub, sub_outputs, _ = _rebuild(_functional(layer), cut=sub_path)
            feature_map = sub_outputs[sub_path]
            before = keras.Model(sub.input, feature_map, name=f"{name}_features")
            after = _tail(feature_map, sub.outputs, layer, sub_path)
            outputs[cut] = before(*args, **kwargs)
            result = after(outputs[cut], **kwargs)
            return result[0] if len(sub.outputs) == 1 else result
        if sub_taps:
            order = sorted(sub_taps)
            sub, sub_outputs, _ = _rebuild(_functional(layer), taps=sub_taps)
            opened = keras.Model(
                sub.input, [*sub.outputs, *(sub_outputs[p] for p in order)], name=name
            )
            results = opened(*args, **kwargs)
            count = len(sub.outputs)
            for path, tensor in zip(order, results[count:], strict=True):
                outputs[f"{name}{SEPARATOR}{path}"] = tensor
            result = results[0] if count == 1 else results[:count]
        else:
            result = layer(*args, **kwargs)
        if name in taps or name == cut:
            outputs[name] = result
        return result

    clone = keras.models.clone_model(
        _functional(model), clone_function=lambda layer: layer, call_function=call
    )
    return clone, outputs, inputs
