"""The page: ``GET /`` and the folder of its CSS and JavaScript (``/static``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse

router = APIRouter()


def static_dir() -> Path:
    """The folder of the page, its CSS and its JavaScript modules, inside the package."""
    return Path(str(resources.files("imgrec.web").joinpath("static")))


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(static_dir() / "index.html")
