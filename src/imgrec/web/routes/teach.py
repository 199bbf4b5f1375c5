"""The Teach demo's API: projects of labelled photos, training runs, the taught model.

    GET    /api/projects                                  the projects, the quotas
    POST   /api/projects                                  a new project
    GET    /api/projects/{id}                             classes, counts, run, model
    PATCH  /api/projects/{id}                             rename
    DELETE /api/projects/{id}
    POST   /api/projects/{id}/classes                     a new class
    PATCH  /api/projects/{id}/classes/{class}             rename a class
    DELETE /api/projects/{id}/classes/{class}             a class and its samples
    POST   /api/projects/{id}/classes/{class}/samples     add photos (multipart "file")
    GET    /api/projects/{id}/classes/{class}/samples     a class's samples
    GET    /api/projects/{id}/samples/{sample}[/thumbnail]
    DELETE /api/projects/{id}/samples/{sample}
    POST   /api/projects/{id}/train                       start (or resume) a run
    POST   /api/projects/{id}/train/cancel
    GET    /api/projects/{id}/run                         the latest run
    GET    /api/projects/{id}/events                      the run, live (server-sent events)
    POST   /api/projects/{id}/predict                     probabilities and a CAM for a photo
    GET    /api/projects/{id}/model.keras|.onnx|.onnx.json|.tflite, samples.zip

The contract the page is written against is ``TEACH_API.md`` (kept with the branch);
the shapes are in ``imgrec.web.teach.schemas``. Uploads take the recognition routes'
guards (``imgrec.web.inputs``): the body cap, the pixel cap, decoding under the
memory budget; each file must decode as an image before any is stored.
"""

from __future__ import annotations

import asyncio
import io
import json
import tempfile
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

import numpy as np
from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse, Response, StreamingResponse
from PIL import Image

from imgrec.core.images import decode_cost, load_image
from imgrec.web.errors import ERRORS
from imgrec.web.inputs import Settings, single_form_values
from imgrec.web.routes.inference import png_data_url
from imgrec.web.teach import schemas
from imgrec.web.teach.runs import public_run
from imgrec.web.teach.service import TeachService
from imgrec.web.teach.store import ConflictError, Project

MAX_FILES_PER_UPLOAD = 64
SSE_POLL_SECONDS = 0.25
SSE_PING_SECONDS = 15.0
# Pillow's format names, and the extension a stored sample gets.
_EXTENSIONS = {
    "JPEG": ".jpg",
    "MPO": ".jpg",
    "PNG": ".png",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "WEBP": ".webp",
    "PPM": ".ppm",
}

router = APIRouter(
    tags=["teach"], form_limits={"max_files": MAX_FILES_PER_UPLOAD, "max_fields": 16}
)
_RESPONSES = {status: ERRORS.get(status, {"model": schemas.ErrorBody}) for status in (404, 422)}
_CONFLICT = {409: {"model": schemas.ErrorBody, "description": "a conflict with the state"}}
_QUOTA = {413: {"model": schemas.ErrorBody, "description": "a quota or the upload limit"}}


def _teach(request: Request) -> TeachService:
    return request.app.state.teach


Teach = Annotated[TeachService, Depends(_teach)]


def _project(teach: TeachService, project_id: str) -> Project:
    return teach.store.get(project_id)


@router.get("/api/projects", response_model=schemas.ProjectList)
def list_projects(teach: Teach) -> dict:
    """The projects, newest first, with the server's quotas and backbones."""
    from imgrec.training.teach import TEACH_BACKBONES

    return {
        "projects": [teach.summary_json(p) for p in teach.store.projects()],
        "limits": teach.quota.to_json(),
        "backbones": list(TEACH_BACKBONES),
    }


@router.post(
    "/api/projects",
    status_code=201,
    response_model=schemas.ProjectOut,
    responses=_RESPONSES | _QUOTA | _CONFLICT,
)
def create_project(teach: Teach, settings: Settings, body: schemas.ProjectCreate) -> dict:
    """A new project; from ``from_model``, with that model's classes (and samples)."""
    store = teach.store
    if body.from_model is None:
        project = store.create(
            body.name, backbone=body.backbone, image_size=body.image_size, classes=body.classes
        )
    else:
        from imgrec.web.teach.origin import project_from_model

        entry = settings.catalog.find(body.from_model)
        project = project_from_model(store, body, entry)
    meta = project.meta()
    teach.runs.prewarm(meta["backbone"], meta["image_size"])
    return teach.project_json(project)


@router.get("/api/projects/{project_id}", response_model=schemas.ProjectOut, responses=_RESPONSES)
def get_project(teach: Teach, project_id: str) -> dict:
    """A project: its classes and sample counts, its latest run and model."""
    return teach.project_json(_project(teach, project_id))


@router.patch("/api/projects/{project_id}", response_model=schemas.ProjectOut, responses=_RESPONSES)
def rename_project(teach: Teach, project_id: str, body: schemas.NameBody) -> dict:
    """Give a project another name (its id stays)."""
    from imgrec.web.teach.store import check_project_name

    project = _project(teach, project_id)
    with teach.store.lock(project.id):
        project.update_meta(name=check_project_name(body.name))
    return teach.project_json(project)


@router.delete("/api/projects/{project_id}", responses=_RESPONSES)
def delete_project(teach: Teach, project_id: str) -> dict:
    """Delete a project, its samples and models (a running training is stopped first)."""
    project = _project(teach, project_id)
    teach.runs.forget(project)
    with teach.store.lock(project.id):
        teach.store.delete(project.id)
    return {"deleted": project.id}


@router.post(
    "/api/projects/{project_id}/classes",
    status_code=201,
    response_model=schemas.ProjectOut,
    responses=_RESPONSES | _CONFLICT | _QUOTA,
)
def add_class(teach: Teach, project_id: str, body: schemas.NameBody) -> dict:
    """A new, empty class."""
    project = _project(teach, project_id)
    with teach.store.lock(project.id):
        project.add_class(body.name)
    return teach.project_json(project)


@router.patch(
    "/api/projects/{project_id}/classes/{class_name}",
    response_model=schemas.ProjectOut,
    responses=_RESPONSES | _CONFLICT,
)
def rename_class(teach: Teach, project_id: str, class_name: str, body: schemas.NameBody) -> dict:
    """Rename a class (its samples go with it)."""
    project = _project(teach, project_id)
    with teach.store.lock(project.id):
        project.rename_class(class_name, body.name)
    return teach.project_json(project)


@router.delete(
    "/api/projects/{project_id}/classes/{class_name}",
    response_model=schemas.ProjectOut,
    responses=_RESPONSES,
)
def delete_class(teach: Teach, project_id: str, class_name: str) -> dict:
    """Delete a class and its samples."""
    project = _project(teach, project_id)
    with teach.store.lock(project.id):
        project.delete_class(class_name)
    return teach.project_json(project)


@router.post(
    "/api/projects/{project_id}/classes/{class_name}/samples",
    status_code=201,
    response_model=schemas.SamplesAdded,
    responses=ERRORS | _QUOTA,
)
def add_samples(
    teach: Teach,
    settings: Settings,
    project_id: str,
    class_name: str,
    file: Annotated[list[UploadFile], File(description="one or more images")],
) -> dict:
    """Add photos to a class (created if missing): all of them, or none if one is refused."""
    from imgrec.training.teach import Sample
    from imgrec.web.teach.store import check_class_name

    project = _project(teach, project_id)
    check_class_name(class_name)
    meta = project.meta()
    images = [_checked_image(settings, upload, meta["image_size"])[:2] for upload in file]
    with teach.store.lock(project.id):
        added = project.add_samples(class_name, images)
    teach.features.submit(
        meta["backbone"],
        meta["image_size"],
        project.features_dir,
        [Sample(s.id, s.path, 0) for s in added],
    )
    teach.runs.prewarm(meta["backbone"], meta["image_size"])
    return {
        "added": [s.to_json(project.id) for s in added],
        "project": teach.project_json(project),
    }


def _checked_image(settings: Any, upload: UploadFile, side: int) -> tuple[bytes, str, np.ndarray]:
    """An upload's bytes, the extension of its format, and its pixels (shrunk towards
    ``side``), once it decodes as an image under the server's guards."""
    name = upload.filename or "upload"
    limit = settings.upload_limit
    data = upload.file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"{name}: larger than the upload limit of {limit:,} bytes")
    cost = decode_cost(data, max_pixels=settings.max_pixels, name=name, min_side=side)
    with settings.decoding.admit(cost, name):
        pixels = load_image(data, max_pixels=settings.max_pixels, name=name, min_side=side)
    with Image.open(io.BytesIO(data)) as image:
        kind = image.format or ""
    extension = _EXTENSIONS.get(kind)
    if extension is None:
        # A format without an extension the folder readers know: stored as PNG (of the
        # pixels as decoded, shrunk at most to twice the backbone's input).
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        data, extension = buffer.getvalue(), ".png"
    return data, extension, pixels


@router.get(
    "/api/projects/{project_id}/classes/{class_name}/samples",
    response_model=schemas.SampleList,
    responses=_RESPONSES,
)
def list_samples(teach: Teach, project_id: str, class_name: str) -> dict:
    """A class's samples, oldest first, with their thumbnails' addresses."""
    project = _project(teach, project_id)
    samples = project.samples(class_name)
    name = project.class_dir(class_name).name
    return {"class": name, "samples": [s.to_json(project.id) for s in samples]}


@router.get("/api/projects/{project_id}/samples/{sample_id}", responses=_RESPONSES)
def sample_file(teach: Teach, project_id: str, sample_id: str) -> FileResponse:
    """A stored sample, as it was uploaded."""
    sample = _project(teach, project_id).find_sample(sample_id)
    return FileResponse(sample.path)


@router.get("/api/projects/{project_id}/samples/{sample_id}/thumbnail", responses=_RESPONSES)
def sample_thumbnail(teach: Teach, project_id: str, sample_id: str) -> Response:
    """A sample's thumbnail: a PNG whose longest side is at most 96 pixels."""
    project = _project(teach, project_id)
    data = project.thumbnail(project.find_sample(sample_id))
    return Response(data, media_type="image/png", headers={"Cache-Control": "max-age=3600"})


@router.delete(
    "/api/projects/{project_id}/samples/{sample_id}",
    response_model=schemas.ProjectOut,
    responses=_RESPONSES,
)
def delete_sample(teach: Teach, project_id: str, sample_id: str) -> dict:
    """Delete one sample."""
    project = _project(teach, project_id)
    with teach.store.lock(project.id):
        project.delete_sample(sample_id)
    return teach.project_json(project)


@router.post(
    "/api/projects/{project_id}/train",
    status_code=202,
    response_model=schemas.RunOut,
    responses=_RESPONSES | _CONFLICT | {503: ERRORS[503]},
)
def train(teach: Teach, project_id: str, body: schemas.TrainOptions | None = None) -> dict:
    """Start a run (or resume the interrupted one); follow it at ``/events``."""
    project = _project(teach, project_id)
    body = body or schemas.TrainOptions()
    meta = project.meta()
    options = {
        "backbone": body.backbone or meta["backbone"],
        "image_size": body.image_size or meta["image_size"],
        "epochs": body.epochs,
        "batch_size": body.batch_size,
        "learning_rate": body.learning_rate,
        "augment": body.augment,
    }
    run = teach.runs.start(project, options, resume=body.resume)
    return public_run(run, project)


@router.post(
    "/api/projects/{project_id}/train/cancel",
    response_model=schemas.RunOut,
    responses=_RESPONSES | _CONFLICT,
)
def cancel(teach: Teach, project_id: str) -> dict:
    """Stop the active run; it stays resumable from its last finished epoch."""
    project = _project(teach, project_id)
    return public_run(teach.runs.cancel(project), project)


@router.get("/api/projects/{project_id}/run", response_model=schemas.RunOut, responses=_RESPONSES)
def latest_run(teach: Teach, project_id: str) -> dict:
    """The latest run: state, progress, curves, and once done its held-out numbers."""
    from imgrec.web.teach.store import NotFoundError

    project = _project(teach, project_id)
    run = public_run(teach.runs.current(project), project)
    if run is None:
        raise NotFoundError(f"project {project.id}: it has not been trained yet")
    return run


@router.get(
    "/api/projects/{project_id}/events",
    response_class=StreamingResponse,
    responses=_RESPONSES
    | {
        200: {
            "content": {"text/event-stream": {}},
            "description": "events: project, run, epoch, end (see TEACH_API.md)",
        }
    },
)
async def events(teach: Teach, project_id: str, request: Request) -> StreamingResponse:
    """The project and its run, then the run live, as server-sent events."""
    project = await asyncio.to_thread(_project, teach, project_id)
    return StreamingResponse(
        _event_stream(teach, project, request),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _event(name: str, data: Any) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


async def _event_stream(
    teach: TeachService, project: Project, request: Request
) -> AsyncIterator[bytes]:
    yield _event("project", await asyncio.to_thread(teach.project_json, project))
    run = await asyncio.to_thread(teach.runs.current, project)
    last: Any = None
    sent_epochs = 0
    pinged = time.monotonic()
    while run is not None:
        shown = public_run(run, project)
        if shown != last:
            if last is not None:
                for entry in run.get("history", [])[sent_epochs:]:
                    yield _event("epoch", entry | {"epochs": run.get("epochs")})
            sent_epochs = len(run.get("history", []))
            yield _event("run", shown)
            last = shown
        if not shown["active"]:
            yield _event("end", shown)
            return
        if await request.is_disconnected():
            return
        if time.monotonic() - pinged > SSE_PING_SECONDS:
            yield b": ping\n\n"
            pinged = time.monotonic()
        await asyncio.sleep(SSE_POLL_SECONDS)
        run = await asyncio.to_thread(teach.runs.current, project)


@router.post(
    "/api/projects/{project_id}/predict",
    response_model=schemas.TeachPrediction,
    responses=ERRORS | _CONFLICT,
    dependencies=[Depends(single_form_values)],
)
def predict(
    teach: Teach,
    settings: Settings,
    project_id: str,
    file: Annotated[UploadFile, File(description="an image")],
    cam: Annotated[bool, Form(description="also send a class activation map")] = True,
    method: Annotated[str, Form(description="cam, gradcam or gradcam++")] = "gradcam",
) -> dict:
    """The taught model's probabilities for a photo, and where it looked (CAM)."""
    from imgrec.explanation.cam import class_activation_map
    from imgrec.models.metadata import model_info
    from imgrec.prediction import classify
    from imgrec.web.inputs import model_view

    project = _project(teach, project_id)
    if project.model_pointer() is None:
        raise ConflictError(f"project {project.id}: no trained model yet; train it first")
    model = teach.model(project)
    info = model_info(model)
    name = file.filename or "upload"
    _, _, pixels = _checked_image(settings, file, max(info.preprocessing.size))
    image = model_view(info.preprocessing, pixels)
    with teach.lock:
        result = classify(model, info, image, len(info.class_names))
        explained = class_activation_map(model, image, method=method) if cam else None
    probabilities = np.zeros(len(info.class_names))
    for row in result["top"]:
        probabilities[row["index"]] = row["probability"]
    best = int(probabilities.argmax())
    return {
        "image": name,
        "classes": list(info.class_names),
        "probabilities": probabilities.tolist(),
        "top": {"class": info.class_names[best], "index": best, "probability": probabilities[best]},
        "cam": None if explained is None else _cam_json(explained),
    }


def _cam_json(result: Any) -> dict:
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


def _download_name(project: Project, suffix: str) -> str:
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in project.meta()["name"])
    return f"{safe.strip('_') or project.id}{suffix}"


@router.get("/api/projects/{project_id}/model.keras", responses=_RESPONSES)
def download_keras(teach: Teach, project_id: str) -> FileResponse:
    """The latest model, a ``.keras`` file (``imgrec predict --model`` takes it)."""
    project = _project(teach, project_id)
    return FileResponse(
        project.model_path(),
        media_type="application/octet-stream",
        filename=_download_name(project, ".keras"),
    )


@router.get("/api/projects/{project_id}/model.onnx", responses=_RESPONSES)
def download_onnx(teach: Teach, project_id: str) -> FileResponse:
    """The latest model exported to ONNX (made on the first request; seconds)."""
    project = _project(teach, project_id)
    path = teach.export(project, "onnx")
    return FileResponse(
        path, media_type="application/octet-stream", filename=_download_name(project, ".onnx")
    )


@router.get("/api/projects/{project_id}/model.onnx.json", responses=_RESPONSES)
def download_onnx_sidecar(teach: Teach, project_id: str) -> FileResponse:
    """The ONNX export's sidecar: classes, preprocessing, digest, the export's check."""
    project = _project(teach, project_id)
    path = teach.export(project, "onnx")
    return FileResponse(
        str(path) + ".json",
        media_type="application/json",
        filename=_download_name(project, ".onnx.json"),
    )


@router.get("/api/projects/{project_id}/model.tflite", responses=_RESPONSES)
def download_tflite(teach: Teach, project_id: str) -> FileResponse:
    """The latest model exported to TensorFlow Lite (made on the first request)."""
    project = _project(teach, project_id)
    path = teach.export(project, "tflite")
    return FileResponse(
        path, media_type="application/octet-stream", filename=_download_name(project, ".tflite")
    )


@router.get("/api/projects/{project_id}/samples.zip", responses=_RESPONSES)
def download_samples(teach: Teach, project_id: str) -> Response:
    """Every sample in a zip, one folder per class (``imgrec train`` reads it)."""
    project = _project(teach, project_id)
    spool = tempfile.SpooledTemporaryFile(max_size=16 * 2**20)  # noqa: SIM115 - closed by chunks
    project.write_zip(spool)
    size = spool.tell()
    spool.seek(0)

    def chunks() -> Any:
        with spool:
            while block := spool.read(2**16):
                yield block

    return StreamingResponse(
        chunks(),
        media_type="application/zip",
        headers={
            "Content-Disposition": f'attachment; filename="{_download_name(project, ".zip")}"',
            "Content-Length": str(size),
        },
    )
