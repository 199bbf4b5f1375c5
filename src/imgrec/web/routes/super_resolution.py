"""The super-resolution demo's API: its networks, and a photo made twice as large.

    GET  /api/super-resolution/models   the networks of the models folder that upscale
                                        (their metadata names sr-cnn or sr-resnet), or the
                                        command that makes one
    POST /api/super-resolution          a photo upscaled 2x by one of them, and by bilinear
                                        interpolation to compare with

The photo comes as the other routes take it (``sample``, ``url`` or ``file``, through
``imgrec.web.inputs``: the same size limits, decoding budget and refusals). A photo
larger than ``MAX_SIDE`` on its long side is shrunk to it first (the answer says so),
so that a request costs at most a ``2 * MAX_SIDE`` square of network output. The
network runs on the server, under the lock every Keras call of the server takes.
"""

from __future__ import annotations

import shlex
import threading
import time
from collections import OrderedDict

import keras
import numpy as np
from fastapi import APIRouter, Depends, Request
from PIL import Image
from pydantic import BaseModel, Field

from imgrec.core.images import decode_cost, load_image
from imgrec.models.loading import load_model
from imgrec.models.super_resolution import (
    SR_ARCHITECTURES,
    check_super_resolution_model,
    upscale_photo,
)
from imgrec.web.catalog import CatalogEntry, UnknownModelError
from imgrec.web.errors import ERRORS
from imgrec.web.inputs import (
    ModelName,
    ServerSettings,
    Settings,
    Source,
    image_data,
    single_form_values,
)
from imgrec.web.routes.inference import png_data_url

# The long side a photo is shrunk to before upscaling: 512 gives at most 1024 x 1024.
MAX_SIDE = 512
# Tiles of 256 input pixels: at most four a photo, each at most 75 MB of feature maps.
TILE = 256
# Networks kept loaded (they are small).
_CAPACITY = 4

router = APIRouter()


class SuperResolutionModel(BaseModel):
    name: str = Field(description="what POST /api/super-resolution takes", examples=["sr.keras"])
    arch: str = Field(examples=["sr-cnn"])


class SuperResolutionModels(BaseModel):
    models: list[SuperResolutionModel]
    architectures: list[str] = Field(description="the architectures the demo takes")
    command: str = Field(description="what makes a network, for a page without one")


class Upscaled(BaseModel):
    model: str
    arch: str
    image: str = Field(description="the photo's name")
    size: list[int] = Field(description="width and height of the photo upscaled")
    shrunk_from: list[int] | None = Field(description="its size before it was shrunk, if it was")
    upscaled: list[int] = Field(description="width and height of the results")
    seconds: float = Field(description="the network's time")
    input: str = Field(description="the photo upscaled, as a PNG data URL")
    network: str = Field(description="the network's result, as a PNG data URL")
    bilinear: str = Field(description="bilinear interpolation's result, as a PNG data URL")


def train_command(models_dir: str = "MODELS") -> str:
    """The commands that make a network for the demo (the sample photos, then training)."""
    return (
        'python -c "from imgrec.training.super_resolution import write_photo_folders; '
        "write_photo_folders('photos')\" && imgrec train photos/train --arch sr-cnn "
        f"--out {shlex.quote(models_dir + '/sr-cnn.keras')}"
    )


@router.get("/api/super-resolution/models", response_model=SuperResolutionModels, tags=["demos"])
def super_resolution_models(settings: Settings) -> dict:
    """The super-resolution networks in the server's models folder."""
    found = settings.catalog.files_of(SR_ARCHITECTURES)
    folder = settings.catalog.models_dir
    return {
        "models": [{"name": entry.name, "arch": arch} for entry, arch in found],
        "architectures": list(SR_ARCHITECTURES),
        "command": train_command(str(folder) if folder is not None else "MODELS")
        + ("" if folder is not None else "  (then: imgrec serve --models MODELS)"),
    }


@router.post(
    "/api/super-resolution",
    response_model=Upscaled,
    responses=ERRORS,
    tags=["demos"],
    dependencies=[Depends(single_form_values)],
)
def super_resolution(
    request: Request, settings: Settings, source: Source, model: ModelName
) -> dict:
    """A photo twice as large: by the network, and by bilinear interpolation."""
    entry, arch = _find(settings, model)
    data, name = image_data(settings, source)
    cost = decode_cost(data, max_pixels=settings.max_pixels, name=name, min_side=MAX_SIDE)
    with settings.decoding.admit(cost, name):
        photo, shrunk_from = _photo(load_image(
            data, mode="RGB", max_pixels=settings.max_pixels, name=name, min_side=MAX_SIDE
        ))  # fmt: skip
    network = _models(request).get(settings, entry)
    with settings.cache.lock:
        started = time.perf_counter()
        big = upscale_photo(network, photo, tile=TILE)
        seconds = time.perf_counter() - started
    height, width = photo.shape[:2]
    smooth = np.asarray(
        Image.fromarray(photo).resize((2 * width, 2 * height), Image.Resampling.BILINEAR)
    )
    return {
        "model": entry.name,
        "arch": arch,
        "image": name,
        "size": [width, height],
        "shrunk_from": shrunk_from,
        "upscaled": [2 * width, 2 * height],
        "seconds": round(seconds, 4),
        "input": png_data_url(photo),
        "network": png_data_url(big),
        "bilinear": png_data_url(smooth),
    }


def _find(settings: ServerSettings, name: str) -> tuple[CatalogEntry, str]:
    found = settings.catalog.files_of(SR_ARCHITECTURES)
    for entry, arch in found:
        if entry.name == name:
            return entry, arch
    offered = ", ".join(entry.name for entry, _ in found) or "none"
    raise UnknownModelError(f"unknown super-resolution model {name!r}; on offer: {offered}")


def _photo(image: np.ndarray) -> tuple[np.ndarray, list[int] | None]:
    height, width = image.shape[:2]
    if max(height, width) <= MAX_SIDE:
        return image, None
    factor = MAX_SIDE / max(height, width)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    shrunk = Image.fromarray(image).resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    return np.asarray(shrunk), [width, height]


class _LoadedNetworks:
    """The networks loaded so far, the most recently used few, by catalog entry (whose
    version changes when the file does)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._models: OrderedDict[CatalogEntry, keras.Model] = OrderedDict()

    def get(self, settings: ServerSettings, entry: CatalogEntry) -> keras.Model:
        with self._guard:
            if entry in self._models:
                self._models.move_to_end(entry)
                return self._models[entry]
        with settings.cache.lock:
            model = load_model(entry.source)
        check_super_resolution_model(model, entry.name)
        with self._guard:
            self._models[entry] = model
            while len(self._models) > _CAPACITY:
                self._models.popitem(last=False)
        return model


_STATE_LOCK = threading.Lock()


def _models(request: Request) -> _LoadedNetworks:
    state = request.app.state
    with _STATE_LOCK:
        if not hasattr(state, "super_resolution_models"):
            state.super_resolution_models = _LoadedNetworks()
        return state.super_resolution_models
