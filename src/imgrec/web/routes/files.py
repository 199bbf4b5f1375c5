"""Files served by exact name from fixed listings, never joined to a path.

GET /vendor/onnxruntime-web/FILE  its modules and WebAssembly (``imgrec.web.ort_web``)
GET /api/samples[/NAME]           the sample photos, and each photo
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse

from imgrec.core.samples import SAMPLES, sample_path
from imgrec.web import ort_web, schemas
from imgrec.web.errors import ERRORS
from imgrec.web.inputs import unknown_sample

router = APIRouter()


@router.get(
    "/vendor/onnxruntime-web/{file}",
    response_class=FileResponse,
    responses={404: ERRORS[404], 503: {"model": schemas.ErrorBody}},
    tags=["browser"],
)
def ort_web_file(file: str) -> FileResponse:
    """One of the onnxruntime-web files the page runs networks with.

    503 when the package is not installed: the message says how to install it.
    """
    found = ort_web.asset(file)
    return FileResponse(found.path, media_type=found.media_type)


@router.get("/api/samples", response_model=schemas.SampleList, tags=["images"])
def samples() -> dict:
    """The sample photos that install with imgrec."""
    return {"samples": [{"name": name, "url": f"/api/samples/{name}"} for name in SAMPLES]}


@router.get(
    "/api/samples/{name}",
    response_class=FileResponse,
    responses={404: ERRORS[404]},
    tags=["images"],
)
def sample(name: str) -> FileResponse:
    """One sample photo, by its name in /api/samples."""
    if name not in SAMPLES:
        raise unknown_sample(name)
    return FileResponse(sample_path(name))
