"""The pages: ``GET /`` (ImageNet recognition), ``GET /demos/NAME`` (the other demos of
the menu, ``static/demos/NAME.html``) and the folder of their CSS and JavaScript
(``/static``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

router = APIRouter()


def static_dir() -> Path:
    """The folder of the page, its CSS and its JavaScript modules, inside the package."""
    return Path(str(resources.files("imgrec.web").joinpath("static")))


def demo_pages() -> dict[str, Path]:
    """The demos besides ImageNet recognition: name -> its page, from ``static/demos``."""
    return {path.stem: path for path in sorted((static_dir() / "demos").glob("*.html"))}


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(static_dir() / "index.html")


@router.get("/demos/{name}", include_in_schema=False)
def demo(name: str) -> FileResponse:
    # The name is looked up in the folder's listing, never joined to a path.
    found = demo_pages().get(name)
    if found is None:
        raise HTTPException(404, f"no demo named {name!r}: see the menu at /")
    return FileResponse(found)
