"""The "Draw a digit" demo's API: the MNIST convnet of the models folder, every layer shown.

    GET  /api/digits            the demo's model, or the one command that makes it
    GET  /api/digits/onnx.json  its every-layer ONNX export: digest, classes, segments
    GET  /api/digits/onnx       the export itself (exported on the first request)
    POST /api/digits/predict    a drawing (an image of dark strokes on white) through
                                the network on the server: the 28 x 28 digit, the
                                probabilities and every layer's output

The model is the first ``.keras`` file of the server's models folder that imgrec
trained as ``mnist-cnn`` (``ModelCatalog.find_architecture``). Both ways of running
it, in the browser and here, run ``imgrec.deploy.layer_outputs.layers_model``: one
output vector holding every layer's output, which ``layers`` cuts into segments. A
drawing sent here goes through ``imgrec.core.digits.mnist_digit`` (MNIST's own
preprocessing), as the page does it in ``static/demos/draw_preprocess.js``.
"""

from __future__ import annotations

import base64
import time

import numpy as np
from fastapi import APIRouter, Depends
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from imgrec.core.digits import MNIST_SIZE, ink_from_grey, mnist_digit
from imgrec.core.images import decode_cost, load_image
from imgrec.deploy.layer_outputs import layer_values, layers_export, layers_model
from imgrec.models.outputs import class_probabilities, top_classes
from imgrec.web.catalog import CatalogEntry, UnknownModelError
from imgrec.web.errors import ERRORS
from imgrec.web.inputs import ServerSettings, Settings, Source, image_data, single_form_values
from imgrec.web.model_cache import LoadedModel
from imgrec.web.routes.models import ONNX_MEDIA_TYPE

ARCHITECTURE = "mnist-cnn"
# Drawings are decoded at least this large (a larger upload is shrunk by a whole factor
# while decoding): the digit ends up 20 pixels tall, the page's canvas is 240.
DRAWING_SIDE = 480
MODEL_FILE = "mnist-cnn.keras"
INPUT_SHAPE = (MNIST_SIZE, MNIST_SIZE, 1)

router = APIRouter()


class NoDigitModelError(UnknownModelError):
    """The models folder holds no model trained as ``mnist-cnn``."""


class Segment(BaseModel):
    name: str = Field(examples=["conv1"])
    type: str = Field(examples=["Conv2D"])
    shape: list[int] = Field(description="without the batch", examples=[[26, 26, 32]])
    offset: int = Field(description="where it starts in the output vector")
    size: int


class DigitsDemo(BaseModel):
    architecture: str = Field(examples=[ARCHITECTURE])
    model: str | None = Field(description="the model file's name; null when there is none")
    command: str = Field(description="the command that makes the model")
    message: str | None = Field(description="why the demo cannot run, or null")


class DigitsExport(BaseModel):
    model: str
    onnx: str = Field(description="where the export is", examples=["/api/digits/onnx"])
    sha256: str
    bytes: int
    class_names: list[str]
    input: list[int] = Field(description="H x W x C, float32 pixels 0-255, ink bright")
    layers: list[Segment]


class DigitsPrediction(BaseModel):
    model: str
    digit: list[list[int]] = Field(description="the 28 x 28 input, MNIST's preprocessing")
    probabilities: list[float]
    top: list[dict]
    layers: list[Segment]
    values: str = Field(description="every layer's output: float32 little-endian, base64")
    time_ms: float = Field(description="the forward pass")


def make_command(settings: ServerSettings) -> str:
    """The one command that puts the demo's model where this server looks."""
    folder = settings.catalog.models_dir
    out = (folder / MODEL_FILE) if folder is not None else f"models/{MODEL_FILE}"
    return f"imgrec train mnist --arch {ARCHITECTURE} --out {out}"


def _missing(settings: ServerSettings) -> str:
    folder = settings.catalog.models_dir
    if folder is None:
        return (
            f"this server has no models folder: run '{make_command(settings)}', then start "
            "it again with --models models"
        )
    return f"no {ARCHITECTURE} model in {folder}: run '{make_command(settings)}'"


def _entry(settings: ServerSettings) -> CatalogEntry:
    entry = settings.catalog.find_architecture(ARCHITECTURE)
    if entry is None:
        raise NoDigitModelError(_missing(settings))
    return entry


def _loaded(settings: ServerSettings) -> LoadedModel:
    loaded = settings.cache.get(_entry(settings))
    shape = tuple(loaded.model.input_shape[1:])
    if shape != INPUT_SHAPE:
        raise UnknownModelError(
            f"{loaded.entry.name}: the demo draws 28 x 28 x 1 digits, this model takes {shape}"
        )
    return loaded


@router.get("/api/digits", response_model=DigitsDemo, tags=["digits"])
def digits(settings: Settings) -> dict:
    """The demo's model (found by its training record), or the command that makes it."""
    entry = settings.catalog.find_architecture(ARCHITECTURE)
    return {
        "architecture": ARCHITECTURE,
        "model": entry.name if entry else None,
        "command": make_command(settings),
        "message": None if entry else _missing(settings),
    }


@router.get(
    "/api/digits/onnx.json",
    response_model=DigitsExport,
    responses={404: ERRORS[404], 422: ERRORS[422]},
    tags=["digits"],
)
def digits_export(settings: Settings) -> dict:
    """What the browser needs to run the demo's network: its every-layer ONNX export.

    The first request exports it (seconds); the export is kept.
    """
    loaded = _loaded(settings)
    with settings.cache.lock:
        exported = layers_export(loaded.model)
    return {
        "model": loaded.entry.name,
        "onnx": "/api/digits/onnx",
        "sha256": exported.sha256,
        "bytes": exported.path.stat().st_size,
        "class_names": list(loaded.info.class_names),
        "input": list(INPUT_SHAPE),
        "layers": exported.layers,
    }


@router.get(
    "/api/digits/onnx",
    response_class=FileResponse,
    responses={404: ERRORS[404], 422: ERRORS[422]},
    tags=["digits"],
)
def digits_onnx(settings: Settings) -> FileResponse:
    """The every-layer ONNX export (``/api/digits/onnx.json`` describes its output)."""
    loaded = _loaded(settings)
    with settings.cache.lock:
        exported = layers_export(loaded.model)
    return FileResponse(exported.path, media_type=ONNX_MEDIA_TYPE)


@router.post(
    "/api/digits/predict",
    response_model=DigitsPrediction,
    responses=ERRORS,
    tags=["digits"],
    dependencies=[Depends(single_form_values)],
)
def digits_predict(settings: Settings, source: Source) -> dict:
    """A drawing through the demo's network here: MNIST's preprocessing, every layer.

    The drawing is an image (the page sends its canvas as a PNG ``file``) of dark
    strokes on a light background; transparency counts as white.
    """
    loaded = _loaded(settings)
    data, name = image_data(settings, source)
    limits = {"max_pixels": settings.max_pixels, "name": name, "min_side": DRAWING_SIDE}
    cost = decode_cost(data, **limits)
    with settings.decoding.admit(cost, name):
        grey = load_image(data, mode="L", **limits)
        digit = mnist_digit(ink_from_grey(grey))
    batch = digit.astype(np.float32)[np.newaxis, :, :, np.newaxis]
    with settings.cache.lock:
        _, segments = layers_model(loaded.model)
        started = time.perf_counter()
        values = layer_values(loaded.model, batch)[0]
        ms = (time.perf_counter() - started) * 1000
    last = segments[-1]
    output = values[last["offset"] : last["offset"] + last["size"]]
    probabilities = class_probabilities(output[np.newaxis])[0]
    names = loaded.info.class_names
    return {
        "model": loaded.entry.name,
        "digit": digit.tolist(),
        "probabilities": [float(p) for p in probabilities],
        "top": top_classes(probabilities, names, len(names)),
        "layers": segments,
        "values": base64.b64encode(values.astype("<f4").tobytes()).decode("ascii"),
        "time_ms": ms,
    }
