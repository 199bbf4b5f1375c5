"""What a network says about a photo: classes, class activation maps, layers, feature maps.

    POST /api/predict       top-K classes and the inference time
    POST /api/explain       a class activation map
    GET  /api/colormaps     the colours the page paints a heatmap with
    GET  /api/layers        a model's layers and their output shapes
    POST /api/activations   one layer's feature maps for a photo

The routes that take a photo refuse a form field given twice (400) and take the
photo through ``imgrec.web.inputs.model_and_image``.
"""

from __future__ import annotations

import base64
import functools
import io
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Form, HTTPException, Query
from PIL import Image

from imgrec.core.choices import DEFAULT_MODEL
from imgrec.explanation.cam import COLORMAPS, METHODS, class_activation_map, colorize
from imgrec.explanation.layer_view import channel_grid, describe_layers, feature_maps
from imgrec.prediction import classify
from imgrec.web import schemas
from imgrec.web.errors import ERRORS
from imgrec.web.inputs import ModelName, Settings, Source, model_and_image, single_form_values

DEFAULT_COLORMAP = "jet"

router = APIRouter()
_SINGLE_VALUES = [Depends(single_form_values)]


def png_data_url(pixels: np.ndarray) -> str:
    """``pixels`` (uint8, grey or RGB) as a ``data:image/png;base64,...`` URL."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@functools.cache
def _colormap_tables() -> dict[str, list[list[int]]]:
    ramp = np.linspace(0, 1, 256, dtype=np.float32)[np.newaxis, :]
    return {name: colorize(ramp, name)[0].tolist() for name in COLORMAPS}


@router.post(
    "/api/predict",
    response_model=schemas.Prediction,
    responses=ERRORS,
    tags=["models"],
    dependencies=_SINGLE_VALUES,
)
def predict(
    settings: Settings,
    source: Source,
    model: ModelName = DEFAULT_MODEL,
    top: Annotated[int, Form(ge=1, le=100, description="how many classes")] = 5,
) -> dict:
    """The top classes of a photo, the runtime that ran the network, and its time."""
    loaded, image, name = model_and_image(settings, model, source)
    with settings.cache.lock:
        result = classify(loaded.runtime, loaded.info, image, top)
    return result | {"image": name}


@router.post(
    "/api/explain",
    response_model=schemas.Explanation,
    responses=ERRORS,
    tags=["explain"],
    dependencies=_SINGLE_VALUES,
)
def explain(
    settings: Settings,
    source: Source,
    model: ModelName = DEFAULT_MODEL,
    method: Annotated[str, Form(description=f"one of {', '.join(METHODS)}")] = "gradcam",
    layer: Annotated[str | None, Form(description="default: the last feature map")] = None,
    class_index: Annotated[int | None, Form(ge=0, description="default: the top class")] = None,
) -> dict:
    """Where in the photo the network saw its class: a class activation map."""
    loaded, image, _ = model_and_image(settings, model, source)
    with settings.cache.lock:
        result = class_activation_map(
            loaded.model, image, method=method, layer=layer, class_index=class_index
        )
    heatmap = np.round(np.clip(result.heatmap, 0, 1) * 255).astype(np.uint8)
    return {
        "image": png_data_url(result.image),
        "heatmap": png_data_url(heatmap),
        "method": result.method,
        "layer": result.layer,
        "class_index": result.class_index,
        "class_name": result.class_name,
        "probability": result.probability,
    }


@router.get("/api/colormaps", response_model=schemas.Colormaps, tags=["explain"])
def colormaps() -> dict:
    """The colours of each colormap, so that a page can paint heatmaps itself."""
    return {"default": DEFAULT_COLORMAP, "colormaps": _colormap_tables()}


@router.get(
    "/api/layers",
    response_model=schemas.LayerList,
    responses={404: ERRORS[404], 422: ERRORS[422]},
    tags=["layers"],
)
def layers(
    settings: Settings,
    model: Annotated[str, Query(description="a name from /api/models")] = DEFAULT_MODEL,
) -> dict:
    """A model's layers in order, with their types, output shapes and parameters."""
    loaded = settings.cache.get(settings.catalog.find(model))
    with settings.cache.lock:
        described = describe_layers(loaded.model)
    return {"model": model, "layers": described}


@router.post(
    "/api/activations",
    response_model=schemas.Activations,
    responses=ERRORS,
    tags=["layers"],
    dependencies=_SINGLE_VALUES,
)
def activations(
    settings: Settings,
    source: Source,
    layer: Annotated[str, Form(description="a layer name from /api/layers")],
    model: ModelName = DEFAULT_MODEL,
    channels: Annotated[int, Form(ge=1, le=64, description="how many channels")] = 16,
) -> dict:
    """The first channels of one layer's output for a photo, as small pictures.

    A layer whose output is not ``H x W x channels`` has no pictures: 422.
    """
    loaded, image, _ = model_and_image(settings, model, source)
    with settings.cache.lock:
        shapes = {row["name"]: row["output_shape"] for row in describe_layers(loaded.model)}
        if layer not in shapes:
            raise HTTPException(404, f"model {model!r} has no layer {layer!r}")
        maps = feature_maps(loaded.model, image, layers=[layer], channels=channels)
    values = maps[layer]
    return {
        "layer": layer,
        "shape": shapes[layer][1:],
        "channels": [png_data_url(channel_grid(values[..., [c]])) for c in range(values.shape[-1])],
    }
