"""The web page and its JSON API, as a FastAPI application: ``create_app``.

A thin shell over imgrec's Python API, like the command line: each route reads its
inputs, calls ``classify``, ``class_activation_map``, ``describe_layers`` or
``feature_maps`` with a model from the cache, and returns plain JSON. ``classify``
runs on the server's runtime (``runtime=``: ONNX Runtime or Keras); the rest needs
the Keras model, which stays loaded beside it.

The page can also classify in the browser, with onnxruntime-web: it fetches the
model's ONNX export and its preprocessing recipe from here, and the runtime's
files from ``/vendor/onnxruntime-web/`` (``imgrec.web.ort_web``).

Routes:
    GET  /                      the page (``static/index.html``)
    GET  /static/...            its CSS and JavaScript; nothing comes from a CDN
    GET  /docs, /redoc          the API's interactive pages, their scripts served from
                                here too; ``/openapi.json`` describes the API
    GET  /api/models            the networks on offer
    GET  /api/models/NAME/onnx.json  a network's ONNX export: digest, classes, recipe
    GET  /api/models/NAME/onnx  the export itself (exported on the first request)
    GET  /api/browser           whether onnxruntime-web is here for in-browser inference
    GET  /vendor/onnxruntime-web/FILE  its modules and WebAssembly, from a fixed list
    GET  /api/samples[/NAME]    the sample photos, and each photo
    POST /api/predict           top-K classes and the inference time
    POST /api/explain           a class activation map
    GET  /api/colormaps         the colours the page paints a heatmap with
    GET  /api/layers            a model's layers and their output shapes
    POST /api/activations       one layer's feature maps for a photo

An image comes as one of three form fields: ``sample`` (a name from
``/api/samples``), ``url`` (fetched by ``imgrec.web.fetch``) or ``file`` (an upload).

Hostile input gets a 4xx answer with ``{"error": "..."}`` and the server goes on:
request bodies are capped (``upload_limit`` plus a little for the other fields),
uploads and fetched bodies at ``upload_limit``; images are opened by content with a
pixel cap (``imgrec.core.images.load_image``), a few at a time; URLs follow
``imgrec.web.fetch``'s rules; sample, model and onnxruntime-web file names are looked up
in a listing, never joined to a path.
"""

from __future__ import annotations

import base64
import functools
import io
import logging
import os
import threading
import urllib.parse
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated

import numpy as np
from fastapi import Depends, FastAPI, File, Form, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from imgrec import __version__
from imgrec.core.errors import ImgrecError
from imgrec.core.images import load_image
from imgrec.core.samples import SAMPLES, sample_path
from imgrec.deploy.sidecar import read_sidecar
from imgrec.explanation.cam import COLORMAPS, METHODS, class_activation_map, colorize
from imgrec.explanation.layer_view import channel_grid, describe_layers, feature_maps
from imgrec.models.zoo import DEFAULT_MODEL
from imgrec.prediction import classify
from imgrec.web import ort_web, schemas
from imgrec.web.catalog import ModelCatalog, UnknownModelError
from imgrec.web.fetch import (
    DEFAULT_TIMEOUT,
    AllowList,
    ForbiddenHostError,
    InvalidURLError,
    ResponseTooLargeError,
    fetch_url,
)
from imgrec.web.limits import BodySizeLimit
from imgrec.web.model_cache import LoadedModel, ModelCache

DEFAULT_UPLOAD_LIMIT = 10 * 2**20
DEFAULT_COLORMAP = "jet"
# Room in a request body for the form fields and multipart headers around an upload.
_FORM_OVERHEAD = 64 * 1024
# At the pixel cap one decoded photo takes 150 MB and more while it is converted: a few
# at a time keep a burst of large uploads from exhausting memory, and 2 cores gain
# nothing from more.
_DECODE_SLOTS = 4

_log = logging.getLogger(__name__)

# The first match gives the status. The rest (not an image, over the pixel cap, a URL
# that could not be fetched, a model that cannot load, a bad CAM method or layer) is
# input the server understood but cannot use: 422.
_ERROR_STATUS: tuple[tuple[type[ImgrecError], int], ...] = (
    (ResponseTooLargeError, 413),
    (InvalidURLError, 400),
    (ForbiddenHostError, 403),
    (UnknownModelError, 404),
    (ort_web.UnknownAssetError, 404),
    (ort_web.BrowserRuntimeMissingError, 503),
    (ImgrecError, 422),
)
# ONNX has no registered media type; a download of bytes is what it is to a browser.
_ONNX_MEDIA_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class ServerSettings:
    """What ``create_app`` was given, kept on ``app.state.imgrec`` for the routes.

    Args:
        catalog: the networks on offer.
        cache: the loaded models and the lock around Keras calls.
        allow_hosts: non-public hosts that image URLs may still reach.
        upload_limit: the largest upload or fetched body, in bytes.
        fetch_timeout: seconds for fetching one image URL, redirects included.
        max_pixels: the pixel cap for decoding, or ``None`` for ``load_image``'s default.
        decode_slots: how many images may be decoding at once.
    """

    catalog: ModelCatalog
    cache: ModelCache
    allow_hosts: AllowList
    upload_limit: int
    fetch_timeout: float
    max_pixels: int | None
    decode_slots: threading.BoundedSemaphore


def create_app(
    models_dir: str | os.PathLike | None = None,
    *,
    upload_limit: int = DEFAULT_UPLOAD_LIMIT,
    allow_hosts: tuple[str, ...] | list[str] = (),
    fetch_timeout: float = DEFAULT_TIMEOUT,
    max_pixels: int | None = None,
    cache_size: int = 4,
    runtime: str = "auto",
) -> FastAPI:
    """Build the web application (serve it with uvicorn, or test it with TestClient).

    Args:
        models_dir: a folder whose ``.keras`` files the page offers besides the zoo
            networks that have weights on this machine.
        upload_limit: the largest upload, and the largest body fetched from a URL, in
            bytes (default 10 MiB).
        allow_hosts: host names, addresses or networks (``"127.0.0.1"``,
            ``"10.0.0.0/8"``) that image URLs may reach although they are not public.
            Empty by default: loopback, private and link-local addresses are refused.
        fetch_timeout: seconds for fetching one image URL, redirects included.
        max_pixels: the largest width x height decoded (default
            ``imgrec.core.images.DEFAULT_MAX_PIXELS``).
        cache_size: how many models stay loaded.
        runtime: what classifies for ``/api/predict``: ``"auto"`` (ONNX Runtime on the
            model's export, cached under ``imgrec_home()/onnx``, when it can be had;
            else Keras), ``"onnx"`` or ``"keras"``. Class activation maps and
            feature maps always run on the Keras model.

    Returns:
        The FastAPI application.

    Raises:
        ValueError: a limit below 1, or an unknown ``runtime``.
        ModelError: ``models_dir`` is not a folder.
    """
    if upload_limit < 1 or cache_size < 1 or fetch_timeout <= 0:
        raise ValueError(
            "upload_limit and cache_size must be at least 1 and fetch_timeout above 0, "
            f"got {upload_limit}, {cache_size}, {fetch_timeout}"
        )
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, got {max_pixels}")
    app = FastAPIOffline(
        title="imgrec",
        version=__version__,
        description="Recognise photos with Keras networks: top-K classes, class "
        'activation maps, layers and feature maps. Every error is `{"error": "..."}` '
        "with a 4xx status.",
        form_limits={"max_files": 1, "max_fields": 16},
    )
    app.state.imgrec = ServerSettings(
        catalog=ModelCatalog(models_dir),
        cache=ModelCache(cache_size, lock=threading.Lock(), runtime=runtime),
        allow_hosts=AllowList(allow_hosts),
        upload_limit=upload_limit,
        fetch_timeout=fetch_timeout,
        max_pixels=max_pixels,
        decode_slots=threading.BoundedSemaphore(_DECODE_SLOTS),
    )
    app.add_middleware(
        BodySizeLimit,
        limit=upload_limit + _FORM_OVERHEAD,
        message=f"the request is too large: uploads are limited to {upload_limit:,} bytes",
    )
    app.add_exception_handler(ImgrecError, _imgrec_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)
    app.mount("/static", StaticFiles(directory=_static_dir()), name="static")
    _add_routes(app)
    return app


def _static_dir() -> Path:
    return Path(str(resources.files("imgrec.web").joinpath("static")))


# ---- errors: always {"error": "..."} -------------------------------------------------


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


async def _imgrec_error(request: Request, exc: ImgrecError) -> JSONResponse:
    status = next(code for kind, code in _ERROR_STATUS if isinstance(exc, kind))
    return _error(status, str(exc))


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return JSONResponse(
        {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
    )


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [
        f"{'.'.join(str(part) for part in error['loc'][1:]) or 'request'}: {error['msg']}"
        for error in exc.errors()
    ]
    return _error(422, "; ".join(problems))


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    _log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return _error(500, f"internal error ({type(exc).__name__}); the server's log has the details")


# ---- inputs shared by the routes ------------------------------------------------------


def _settings(request: Request) -> ServerSettings:
    return request.app.state.imgrec


Settings = Annotated[ServerSettings, Depends(_settings)]
ModelName = Annotated[str, Form(description="a name from /api/models", examples=[DEFAULT_MODEL])]


@dataclass(frozen=True)
class ImageSource:
    """Exactly one of a sample name, an image URL, or an upload."""

    sample: str | None
    url: str | None
    file: UploadFile | None


def _image_source(
    sample: Annotated[str | None, Form(description="a name from /api/samples")] = None,
    url: Annotated[str | None, Form(description="an http(s) URL of an image")] = None,
    file: Annotated[UploadFile | None, File(description="an image file")] = None,
) -> ImageSource:
    given = [name for name, value in (("sample", sample), ("url", url), ("file", file)) if value]
    if len(given) != 1:
        raise HTTPException(
            400,
            "give exactly one image: a 'sample', a 'url' or a 'file'"
            + (f" (got {', '.join(given)})" if given else ""),
        )
    return ImageSource(sample or None, url or None, file)


Source = Annotated[ImageSource, Depends(_image_source)]


def _image_data(settings: ServerSettings, source: ImageSource) -> tuple[bytes | Path, str]:
    """The source's file or bytes, and its name for messages; sizes and URLs checked."""
    if source.sample is not None:
        if source.sample not in SAMPLES:
            raise HTTPException(
                404, f"unknown sample {source.sample!r}; samples: {', '.join(SAMPLES)}"
            )
        return sample_path(source.sample), source.sample
    limit = settings.upload_limit
    if source.url is not None:
        data = fetch_url(
            source.url,
            allow_hosts=settings.allow_hosts,
            timeout=settings.fetch_timeout,
            max_bytes=limit,
        )
        return data, source.url
    assert source.file is not None  # _image_source made sure one of the three is there
    name = source.file.filename or "upload"
    data = source.file.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"{name}: larger than the upload limit of {limit:,} bytes")
    return data, name


def _model_and_image(
    settings: ServerSettings, model: str, source: ImageSource
) -> tuple[LoadedModel, np.ndarray, str]:
    """The loaded model, the photo decoded for its input (grey or colour), the photo's name.

    The cheap refusals (unknown model, bad URL, oversized upload) come before a load.
    """
    entry = settings.catalog.find(model)
    data, name = _image_data(settings, source)
    loaded = settings.cache.get(entry)
    with settings.decode_slots:
        image = load_image(data, mode=loaded.mode, max_pixels=settings.max_pixels, name=name)
    return loaded, image, name


def _png_data_url(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


@functools.cache
def _colormap_tables() -> dict[str, list[list[int]]]:
    ramp = np.linspace(0, 1, 256, dtype=np.float32)[np.newaxis, :]
    return {name: colorize(ramp, name)[0].tolist() for name in COLORMAPS}


# ---- routes ---------------------------------------------------------------------------

_ERRORS = {
    status: {"model": schemas.ErrorBody, "description": description}
    for status, description in (
        (400, "a bad request: no image, two images, or a URL that is not http(s)"),
        (403, "an image URL whose host is not public"),
        (404, "an unknown model, sample or layer"),
        (413, "an upload or a fetched image over the limit"),
        (
            422,
            "not an image, an image over the pixel cap, a URL that could not be "
            "fetched, or a bad form field",
        ),
    )
}


def _add_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(_static_dir() / "index.html")

    @app.get("/api/models", response_model=schemas.ModelList, tags=["models"])
    def models(settings: Settings) -> dict:
        """The networks on offer: zoo networks with weights here, and the folder's files."""
        loaded = settings.cache.loaded_names()
        return {
            "models": [
                {"name": e.name, "label": e.label, "kind": e.kind, "loaded": e.name in loaded}
                for e in settings.catalog.entries()
            ],
            "default": settings.catalog.default(),
            "upload_limit": settings.upload_limit,
        }

    @app.get(
        "/api/models/{name}/onnx.json",
        response_model=schemas.OnnxModel,
        responses={404: _ERRORS[404], 422: _ERRORS[422]},
        tags=["browser"],
    )
    def onnx_description(settings: Settings, name: str) -> dict:
        """What a browser needs to run a network itself: its ONNX export and recipe.

        The first request exports the network (seconds); the export is kept, and
        checked against the Keras model when it is made (``imgrec.export``).
        """
        entry = settings.catalog.find(name)
        exported = settings.cache.onnx_export(entry)
        sidecar = read_sidecar(exported.path)
        model = sidecar["model"]
        return {
            "model": entry.name,
            "label": model["name"],
            "onnx": f"/api/models/{urllib.parse.quote(entry.name, safe='')}/onnx",
            "sha256": sidecar["sha256"],
            "bytes": exported.path.stat().st_size,
            "class_names": model["class_names"],
            "preprocessing": model["preprocessing"],
            "input": sidecar["input"],
            "output": sidecar["output"],
        }

    @app.get(
        "/api/models/{name}/onnx",
        response_class=FileResponse,
        responses={404: _ERRORS[404], 422: _ERRORS[422]},
        tags=["browser"],
    )
    def onnx_file(settings: Settings, name: str) -> FileResponse:
        """A network's ONNX export (float32 NHWC in, probabilities out), streamed.

        ``/api/models/{name}/onnx.json`` describes it.
        """
        exported = settings.cache.onnx_export(settings.catalog.find(name))
        return FileResponse(exported.path, media_type=_ONNX_MEDIA_TYPE)

    @app.get("/api/browser", response_model=schemas.BrowserRuntime, tags=["browser"])
    def browser_runtime() -> dict:
        """Whether the page can classify in the browser: onnxruntime-web, served from here."""
        problem = ort_web.missing()
        prefix = "/vendor/onnxruntime-web/"
        return {
            "available": problem is None,
            "package": ort_web.PACKAGE,
            "version": ort_web.installed_version(),
            "wasm": None if problem else prefix + ort_web.WASM_MODULE,
            "webgpu": None if problem else prefix + ort_web.WEBGPU_MODULE,
            "message": problem,
        }

    @app.get(
        "/vendor/onnxruntime-web/{file}",
        response_class=FileResponse,
        responses={404: _ERRORS[404], 503: {"model": schemas.ErrorBody}},
        tags=["browser"],
    )
    def ort_web_file(file: str) -> FileResponse:
        """One of the onnxruntime-web files the page runs networks with.

        503 when the package is not installed: the message says how to install it.
        """
        found = ort_web.asset(file)
        return FileResponse(found.path, media_type=found.media_type)

    @app.get("/api/samples", response_model=schemas.SampleList, tags=["images"])
    def samples() -> dict:
        """The sample photos that install with imgrec."""
        return {"samples": [{"name": name, "url": f"/api/samples/{name}"} for name in SAMPLES]}

    @app.get(
        "/api/samples/{name}",
        response_class=FileResponse,
        responses={404: _ERRORS[404]},
        tags=["images"],
    )
    def sample(name: str) -> FileResponse:
        """One sample photo, by its name in /api/samples."""
        if name not in SAMPLES:
            raise HTTPException(404, f"unknown sample {name!r}; samples: {', '.join(SAMPLES)}")
        return FileResponse(sample_path(name))

    @app.post("/api/predict", response_model=schemas.Prediction, responses=_ERRORS, tags=["models"])
    def predict(
        settings: Settings,
        source: Source,
        model: ModelName = DEFAULT_MODEL,
        top: Annotated[int, Form(ge=1, le=100, description="how many classes")] = 5,
    ) -> dict:
        """The top classes of a photo, the runtime that ran the network, and its time."""
        loaded, image, name = _model_and_image(settings, model, source)
        with settings.cache.lock:
            result = classify(loaded.runtime, loaded.info, image, top)
        return result | {"image": name}

    @app.post(
        "/api/explain", response_model=schemas.Explanation, responses=_ERRORS, tags=["explain"]
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
        loaded, image, _ = _model_and_image(settings, model, source)
        with settings.cache.lock:
            result = class_activation_map(
                loaded.model, image, method=method, layer=layer, class_index=class_index
            )
        heatmap = np.round(np.clip(result.heatmap, 0, 1) * 255).astype(np.uint8)
        return {
            "image": _png_data_url(result.image),
            "heatmap": _png_data_url(heatmap),
            "method": result.method,
            "layer": result.layer,
            "class_index": result.class_index,
            "class_name": result.class_name,
            "probability": result.probability,
        }

    @app.get("/api/colormaps", response_model=schemas.Colormaps, tags=["explain"])
    def colormaps() -> dict:
        """The colours of each colormap, so that a page can paint heatmaps itself."""
        return {"default": DEFAULT_COLORMAP, "colormaps": _colormap_tables()}

    @app.get(
        "/api/layers",
        response_model=schemas.LayerList,
        responses={404: _ERRORS[404], 422: _ERRORS[422]},
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

    @app.post(
        "/api/activations",
        response_model=schemas.Activations,
        responses=_ERRORS,
        tags=["layers"],
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
        loaded, image, _ = _model_and_image(settings, model, source)
        with settings.cache.lock:
            shapes = {row["name"]: row["output_shape"] for row in describe_layers(loaded.model)}
            if layer not in shapes:
                raise HTTPException(404, f"model {model!r} has no layer {layer!r}")
            maps = feature_maps(loaded.model, image, layers=[layer], channels=channels)
        values = maps[layer]
        return {
            "layer": layer,
            "shape": shapes[layer][1:],
            "channels": [
                _png_data_url(channel_grid(values[..., [c]])) for c in range(values.shape[-1])
            ],
        }
