"""The networks on offer, and what a browser needs to run them itself.

GET /api/models                   the networks on offer
GET /api/models/NAME/onnx.json    a network's ONNX export: digest, classes, recipe
GET /api/models/NAME/onnx         the export itself (exported on the first request)
GET /api/browser                  whether onnxruntime-web is here
"""

from __future__ import annotations

import urllib.parse

from fastapi import APIRouter
from fastapi.responses import FileResponse

from imgrec.deploy.sidecar import read_sidecar
from imgrec.web import ort_web, schemas
from imgrec.web.errors import ERRORS
from imgrec.web.inputs import Settings

router = APIRouter()

# ONNX has no registered media type; a download of bytes is what it is to a browser.
ONNX_MEDIA_TYPE = "application/octet-stream"


@router.get("/api/models", response_model=schemas.ModelList, tags=["models"])
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


@router.get(
    "/api/models/{name}/onnx.json",
    response_model=schemas.OnnxModel,
    responses={404: ERRORS[404], 422: ERRORS[422]},
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


@router.get(
    "/api/models/{name}/onnx",
    response_class=FileResponse,
    responses={404: ERRORS[404], 422: ERRORS[422]},
    tags=["browser"],
)
def onnx_file(settings: Settings, name: str) -> FileResponse:
    """A network's ONNX export (float32 NHWC in, probabilities out), streamed.

    ``/api/models/{name}/onnx.json`` describes it.
    """
    exported = settings.cache.onnx_export(settings.catalog.find(name))
    return FileResponse(exported.path, media_type=ONNX_MEDIA_TYPE)


@router.get("/api/browser", response_model=schemas.BrowserRuntime, tags=["browser"])
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
