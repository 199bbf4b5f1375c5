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
    /api/projects/...           the Teach demo: projects of labelled photos, training
                                runs, the taught models (``imgrec.web.routes.teach``)

The routes live in ``imgrec.web.routes``, one module per concern (pages, models,
files, inference); what they take (settings, the image of a request) in
``imgrec.web.inputs``; how they fail in ``imgrec.web.errors``.

An image comes as one of three form fields: ``sample`` (a name from
``/api/samples``), ``url`` (fetched by ``imgrec.web.fetch``) or ``file`` (an upload).

Hostile input gets a 4xx answer with ``{"error": "..."}`` and the server goes on:
request bodies are capped (``upload_limit`` plus a little for the other fields) and
must arrive within ``body_timeout``; uploads and fetched bodies are capped at
``upload_limit``; a form field given twice is refused; images are opened by content
with a pixel cap (``imgrec.core.images.load_image``), decoded only while their
estimated memory fits ``decode_memory`` and shrunk to the model's input size at once;
URLs follow ``imgrec.web.fetch``'s rules, ``max_fetches`` at a time; sample, model and
onnxruntime-web file names are looked up in a listing, never joined to a path. A
server at one of its limits answers 503 (with ``Retry-After``), not by growing.
"""

from __future__ import annotations

import os
import threading

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from imgrec import __version__
from imgrec.web.catalog import ModelCatalog
from imgrec.web.errors import install_error_handlers
from imgrec.web.fetch import DEFAULT_TIMEOUT, AllowList
from imgrec.web.inputs import ImageSource, ServerSettings
from imgrec.web.limits import BodyReadTimeout, BodySizeLimit, DecodeBudget, Slots
from imgrec.web.model_cache import ModelCache
from imgrec.web.routes import ROUTERS
from imgrec.web.routes.inference import DEFAULT_COLORMAP
from imgrec.web.routes.pages import static_dir
from imgrec.web.teach.service import TeachConfig, TeachService

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_COLORMAP",
    "DEFAULT_DECODE_MEMORY",
    "DEFAULT_MAX_FETCHES",
    "DEFAULT_UPLOAD_LIMIT",
    "ImageSource",
    "ServerSettings",
    "create_app",
]

DEFAULT_UPLOAD_LIMIT = 10 * 2**20
# Image URLs fetched at once: each holds a worker thread for up to fetch_timeout.
DEFAULT_MAX_FETCHES = 8
# What decoding may take at once. The largest image under the default pixel cap needs
# about 600 MB at worst (RGBA PNG, 50 MP); a 49-megapixel RGB PNG about 200 MB.
DEFAULT_DECODE_MEMORY = 2**30
# Seconds a request's body may take to arrive: 10 MiB at about 1 Mbit/s.
DEFAULT_BODY_TIMEOUT = 120.0
# Room in a request body for the form fields and multipart headers around an upload.
_FORM_OVERHEAD = 64 * 1024
# Decoding is CPU work: a few at a time keep the cores busy, more only wait.
_DECODE_SLOTS = 4
# How long a request waits for decoding memory before it is told the server is busy.
_DECODE_WAIT = 30.0


def create_app(
    models_dir: str | os.PathLike | None = None,
    *,
    upload_limit: int = DEFAULT_UPLOAD_LIMIT,
    allow_hosts: tuple[str, ...] | list[str] = (),
    fetch_timeout: float = DEFAULT_TIMEOUT,
    max_pixels: int | None = None,
    cache_size: int = 4,
    runtime: str = "auto",
    max_fetches: int = DEFAULT_MAX_FETCHES,
    decode_memory: int = DEFAULT_DECODE_MEMORY,
    body_timeout: float = DEFAULT_BODY_TIMEOUT,
    teach: TeachConfig | None = None,
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
        max_fetches: how many image URLs may be fetched at once; one more gets a 503.
        decode_memory: bytes that decoding images may take at once, by the estimate of
            ``imgrec.core.images.decode_cost``; a request waits for room (503 after
            30 s), an image that alone needs more gets a 413.
        body_timeout: seconds a request's body may take to arrive (408 after).
        teach: the Teach demo's projects folder, quotas and workers (``TeachConfig``).

    Returns:
        The FastAPI application.

    Raises:
        ValueError: a limit below 1, or an unknown ``runtime``.
        ModelError: ``models_dir`` is not a folder.
    """
    _check_limits(upload_limit, cache_size, fetch_timeout, max_pixels, body_timeout)
    app = FastAPIOffline(
        title="imgrec",
        version=__version__,
        description="Recognise photos with Keras networks: top-K classes, class "
        'activation maps, layers and feature maps. Every error is `{"error": "..."}` '
        "with a 4xx status.",
        form_limits={"max_files": 1, "max_fields": 16},
    )
    cache = ModelCache(cache_size, lock=threading.Lock(), runtime=runtime)
    app.state.teach = teaching = TeachService(teach, cache.lock)
    app.state.imgrec = ServerSettings(
        catalog=ModelCatalog(models_dir, extra=teaching.catalog_entries),
        cache=cache,
        allow_hosts=AllowList(allow_hosts),
        upload_limit=upload_limit,
        fetch_timeout=fetch_timeout,
        max_pixels=max_pixels,
        fetches=Slots(max_fetches, "image URLs to fetch"),
        decoding=DecodeBudget(decode_memory, _DECODE_SLOTS, _DECODE_WAIT),
    )
    app.add_middleware(BodyReadTimeout, seconds=body_timeout)
    app.add_middleware(
        BodySizeLimit,
        limit=upload_limit + _FORM_OVERHEAD,
        message=f"the request is too large: uploads are limited to {upload_limit:,} bytes",
    )
    install_error_handlers(app)
    app.mount("/static", StaticFiles(directory=static_dir()), name="static")
    for router in ROUTERS:
        app.include_router(router)
    return app


def _check_limits(
    upload_limit: int,
    cache_size: int,
    fetch_timeout: float,
    max_pixels: int | None,
    body_timeout: float,
) -> None:
    if upload_limit < 1 or cache_size < 1 or fetch_timeout <= 0:
        raise ValueError(
            "upload_limit and cache_size must be at least 1 and fetch_timeout above 0, "
            f"got {upload_limit}, {cache_size}, {fetch_timeout}"
        )
    if max_pixels is not None and max_pixels < 1:
        raise ValueError(f"max_pixels must be at least 1, got {max_pixels}")
    if body_timeout <= 0:
        raise ValueError(f"body_timeout must be above 0, got {body_timeout}")
