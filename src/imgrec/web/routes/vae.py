"""The VAE demo's API: a convolutional VAE's latent plane, decoded on the server.

    GET /api/vae              the VAE on offer (or the command that makes one), its
                              classes and the held-out images' latent codes
    GET /api/vae/decode       one point of the plane: the decoded image and what each
                              decoder layer made of it, as PNG data URLs
    GET /api/vae/grid.png     an N x N grid of decodings over the plane, as a PNG

The model is the first ``.keras`` file of the server's models folder (by name) whose
training record says ``conv-vae`` (``ModelCatalog.with_architecture``), or the one a
request names. Decoding a point takes a few milliseconds on the server's Keras model,
so the page asks the server as the crosshair moves (one request at a time, the latest
point next) rather than fetching and running an ONNX export in the browser.

Every Keras call runs under the server's lock (``ModelCache.lock``). The VAEs are kept
loaded here, a few at a time, beside the classifiers' cache: they answer no
``/api/predict`` and need no runtime.
"""

from __future__ import annotations

import io
import shlex
import threading
import time
from collections import OrderedDict
from typing import Annotated, Any

import keras
import numpy as np
from fastapi import APIRouter, Query, Request
from fastapi.responses import Response
from PIL import Image
from pydantic import BaseModel, Field

from imgrec.core.errors import ImgrecError
from imgrec.explanation.cam import colorize
from imgrec.models import conv_vae
from imgrec.models.loading import load_model
from imgrec.models.metadata import ModelInfo, model_info
from imgrec.web.catalog import CatalogEntry, UnknownModelError
from imgrec.web.errors import ERRORS
from imgrec.web.inputs import Settings
from imgrec.web.routes.inference import png_data_url

router = APIRouter()

# How many VAEs stay loaded, and how many grids are kept drawn.
_MODELS_KEPT = 2
_GRIDS_KEPT = 8
_FEATURE_COLORMAP = "viridis"
_GAP = 1  # pixels between the channels of a layer's picture
_GAP_COLOUR = 255
# The API takes points this far out (the page's plane is [-1, 1]; the codes reach ~4).
_Z_LIMIT = 8.0

ModelQuery = Annotated[
    str | None,
    Query(description="a name from /api/vae's models (default: the first)", examples=["vae.keras"]),
]


class LatentSample(BaseModel):
    split: str = Field(description="the data set split the images came from", examples=["test"])
    points: list[list[float]] = Field(description="each image's latent mean")
    labels: list[int] = Field(description="each image's class, an index into class_names")


class VaeModel(BaseModel):
    model: str | None = Field(description="the VAE the page shows, or null when there is none")
    models: list[str] = Field(description="every VAE in the models folder")
    command: str = Field(description="the command that trains a VAE for this server")
    latent_dim: int | None = None
    extent: float = Field(description="the page's plane spans [-extent, extent] on both axes")
    image_size: list[int] | None = Field(None, description="height and width of a decoding")
    dataset: str | None = Field(None, description="the data set it was trained on")
    class_names: list[str] = []
    encodings: LatentSample | None = Field(
        None, description="latent means of held-out images, kept in the model file at training"
    )


class LayerPicture(BaseModel):
    name: str = Field(examples=["deconv1"])
    type: str = Field(examples=["Conv2DTranspose"])
    shape: list[int] = Field(description="the output's shape, no batch", examples=[[14, 14, 32]])
    image: str = Field(description="a PNG data URL: a vector as a square, channels side by side")


class Decoding(BaseModel):
    model: str
    z: list[float]
    image: str = Field(description="the decoded image, a PNG data URL at its own size")
    layers: list[LayerPicture]
    milliseconds: float = Field(description="the decoder's time on the server")


@router.get("/api/vae", response_model=VaeModel, responses={404: ERRORS[404]}, tags=["vae"])
def vae(request: Request, settings: Settings, model: ModelQuery = None) -> dict:
    """The VAE the page shows, what it was trained on, and its held-out latent codes.

    Without a VAE in the models folder, ``model`` is null and ``command`` says how to
    make one.
    """
    entries = settings.catalog.with_architecture(conv_vae.ARCHITECTURE)
    base = {
        "models": [entry.name for entry in entries],
        "command": _command(settings),
        "extent": conv_vae.PLANE_EXTENT,
    }
    if not entries and model is None:
        return base | {"model": None}
    entry = _entry(settings, model)
    loaded, info = _loaded(request, settings, entry)
    training = info.training or {}
    sample = training.get("latent_sample")
    return base | {
        "model": entry.name,
        "latent_dim": conv_vae.latent_dim_of(loaded),
        "image_size": list(info.preprocessing.size),
        "dataset": (training.get("dataset") or {}).get("name"),
        "class_names": list(info.class_names),
        "encodings": sample if isinstance(sample, dict) else None,
    }


@router.get(
    "/api/vae/decode",
    response_model=Decoding,
    responses={404: ERRORS[404], 422: ERRORS[422]},
    tags=["vae"],
)
def decode(
    request: Request,
    settings: Settings,
    x: Annotated[float, Query(ge=-_Z_LIMIT, le=_Z_LIMIT, description="the first latent value")],
    y: Annotated[float, Query(ge=-_Z_LIMIT, le=_Z_LIMIT, description="the second")],
    model: ModelQuery = None,
) -> dict:
    """Decode the latent point (x, y): the image and each decoder layer's output."""
    entry = _entry(settings, model)
    loaded, _ = _loaded(request, settings, entry)
    _check_plane(loaded, entry)
    with settings.cache.lock:
        start = time.perf_counter()
        outputs = conv_vae.decoder_outputs(loaded, [x, y])
        milliseconds = (time.perf_counter() - start) * 1000
    image = outputs[-1]["values"]
    return {
        "model": entry.name,
        "z": [x, y],
        "image": png_data_url(_grey_or_rgb(image)),
        "layers": [
            {
                "name": output["name"],
                "type": output["type"],
                "shape": list(output["values"].shape),
                "image": png_data_url(layer_picture(output["values"])),
            }
            for output in outputs
        ],
        "milliseconds": milliseconds,
    }


@router.get(
    "/api/vae/grid.png",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: ERRORS[404], 422: ERRORS[422]},
    tags=["vae"],
)
def grid(
    request: Request,
    settings: Settings,
    size: Annotated[int, Query(ge=1, le=32, description="decodings a side")] = 15,
    model: ModelQuery = None,
) -> Response:
    """``size x size`` decodings over the page's plane, top row at y = +extent."""
    entry = _entry(settings, model)
    state = _state(request)
    key = (entry, size)
    with state.guard:
        png = state.grids.get(key)
    if png is None:
        loaded, _ = _loaded(request, settings, entry)
        _check_plane(loaded, entry)
        with settings.cache.lock:
            pixels = conv_vae.latent_grid(loaded, size)
        png = _png(_grey_or_rgb(pixels))
        with state.guard:
            state.grids[key] = png
            while len(state.grids) > _GRIDS_KEPT:
                state.grids.popitem(last=False)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-cache"})


def layer_picture(values: np.ndarray) -> np.ndarray:
    """One decoder layer's output as a small picture (the page enlarges it, pixel for pixel).

    Args:
        values: float, without the batch axis: a vector (``n``) or feature maps
            (``h x w x c``).

    Returns:
        uint8 RGB: a vector as a near-square of cells, feature maps as their channels
        side by side in a near-square grid, one pixel of white between them; each
        channel (or the vector) scaled from its minimum to its maximum and painted
        with viridis.
    """
    values = np.asarray(values, dtype=np.float32)
    if values.ndim == 1:
        side = int(np.ceil(np.sqrt(values.size)))
        padded = np.full(side * side, values.min() if values.size else 0.0, np.float32)
        padded[: values.size] = values
        values = padded.reshape(side, side, 1)
    height, width, count = values.shape
    columns = int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    picture = np.full(
        (rows * (height + _GAP) - _GAP, columns * (width + _GAP) - _GAP, 3),
        _GAP_COLOUR,
        np.uint8,
    )
    for channel in range(count):
        plane = values[..., channel]
        low, high = float(plane.min()), float(plane.max())
        scaled = (plane - low) / (high - low) if high > low else np.zeros_like(plane)
        top = (channel // columns) * (height + _GAP)
        left = (channel % columns) * (width + _GAP)
        picture[top : top + height, left : left + width] = colorize(scaled, _FEATURE_COLORMAP)
    return picture


# ---- the models -------------------------------------------------------------------------


class _State:
    """The VAEs loaded for this application, and the grids drawn with them."""

    def __init__(self) -> None:
        self.guard = threading.Lock()
        self.models: OrderedDict[CatalogEntry, tuple[keras.Model, ModelInfo]] = OrderedDict()
        self.grids: OrderedDict[tuple[CatalogEntry, int], bytes] = OrderedDict()
        self.loading = threading.Lock()


def _state(request: Request) -> _State:
    app_state = request.app.state
    with _STATE_GUARD:
        if not hasattr(app_state, "imgrec_vae"):
            app_state.imgrec_vae = _State()
        return app_state.imgrec_vae


_STATE_GUARD = threading.Lock()


def _entry(settings: Any, name: str | None) -> CatalogEntry:
    """The VAE named ``name``, or the first; 404 for a name that is not a VAE here."""
    entries = settings.catalog.with_architecture(conv_vae.ARCHITECTURE)
    if name is None:
        if not entries:
            raise UnknownModelError(
                f"no {conv_vae.ARCHITECTURE} model in the models folder; make one with: "
                f"{_command(settings)}"
            )
        return entries[0]
    for entry in entries:
        if entry.name == name:
            return entry
    offered = ", ".join(entry.name for entry in entries) or "none"
    raise UnknownModelError(f"no {conv_vae.ARCHITECTURE} model {name!r}; VAEs on offer: {offered}")


def _loaded(request: Request, settings: Any, entry: CatalogEntry) -> tuple[keras.Model, ModelInfo]:
    state = _state(request)
    with state.guard:
        if entry in state.models:
            state.models.move_to_end(entry)
            return state.models[entry]
    with state.loading:  # one load at a time; a second request for it waits for the first
        with state.guard:
            if entry in state.models:
                return state.models[entry]
        with settings.cache.lock:
            model = load_model(entry.source)
            conv_vae.check_conv_vae(model, entry.name)
            conv_vae.decode(model, [[0.0] * conv_vae.latent_dim_of(model)])  # warm up
        loaded = (model, model_info(model))
        with state.guard:
            state.models[entry] = loaded
            while len(state.models) > _MODELS_KEPT:
                state.models.popitem(last=False)
        return loaded


def _check_plane(model: keras.Model, entry: CatalogEntry) -> None:
    latent = conv_vae.latent_dim_of(model)
    if latent != 2:
        raise ImgrecError(f"{entry.name}: its latent code has {latent} values; the plane needs 2")


def _command(settings: Any) -> str:
    """The command that trains a VAE where this server finds it."""
    folder = settings.catalog.models_dir
    train = f"imgrec train mnist --arch {conv_vae.ARCHITECTURE} --out "
    if folder is None:
        return train + "models/vae.keras && imgrec serve --models models"
    return train + shlex.quote(str(folder / "vae.keras"))


# ---- pictures ---------------------------------------------------------------------------


def _grey_or_rgb(pixels: np.ndarray) -> np.ndarray:
    """A decoded image (float in [0, 1] or uint8, ``H x W x C``) as uint8 grey or RGB."""
    if pixels.dtype != np.uint8:
        pixels = np.clip(np.rint(pixels * 255), 0, 255).astype(np.uint8)
    return pixels[..., 0] if pixels.shape[-1] == 1 else pixels[..., :3]


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()
