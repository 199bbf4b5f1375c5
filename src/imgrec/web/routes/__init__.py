"""The web application's routes, one router per concern, in the order they are served.

- ``pages``: the page itself;
- ``models``: the networks on offer, their ONNX exports, in-browser inference;
- ``files``: files served from fixed listings (onnxruntime-web, the sample photos);
- ``inference``: what networks say about photos (classes, CAM, layers, feature maps);
- ``teach``: the Teach demo's projects, training runs and taught models.
- ``digits``: the "Draw a digit" demo's network.

``/static`` (the page's CSS and JavaScript) and the API documentation pages are
mounted by ``imgrec.web.app.create_app``.
"""

from __future__ import annotations

from fastapi import APIRouter

from imgrec.web.routes import digits, files, inference, models, pages, teach

ROUTERS: tuple[APIRouter, ...] = (
    pages.router,
    models.router,
    files.router,
    inference.router,
    teach.router,
    digits.router,
)
