"""The web page: choose a network and a photo, see its classes, CAM and layers.

``create_app`` builds the FastAPI application (page, JSON API, offline API docs);
``serve`` runs it with uvicorn, as ``imgrec serve`` does. ``imgrec.web.fetch`` is the
guarded URL fetcher behind image URLs. Importing this package imports none of them:
the application brings in Keras and TensorFlow.
"""

from __future__ import annotations

import importlib

_API = {"create_app": "imgrec.web.app", "serve": "imgrec.web.server"}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'imgrec.web' has no attribute {name!r}")
