"""How the web API fails: always ``{"error": "..."}``, with a status per kind of failure.

``install_error_handlers`` puts the handlers on an application; ``ERRORS`` documents
the statuses in the OpenAPI description of the routes that take images.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from imgrec.core.errors import ImgrecError
from imgrec.web import ort_web, schemas
from imgrec.web.catalog import UnknownModelError
from imgrec.web.fetch import ForbiddenHostError, InvalidURLError, ResponseTooLargeError
from imgrec.web.limits import DecodeTooLargeError, ServerBusyError
from imgrec.web.teach.store import ConflictError, NotFoundError, QuotaError

_log = logging.getLogger("imgrec.web.app")

# The first match gives the status. The rest (not an image, over the pixel cap, a URL
# that could not be fetched, a model that cannot load, a bad CAM method or layer) is
# input the server understood but cannot use: 422.
ERROR_STATUS: tuple[tuple[type[ImgrecError], int], ...] = (
    (ResponseTooLargeError, 413),
    (DecodeTooLargeError, 413),
    (InvalidURLError, 400),
    (ForbiddenHostError, 403),
    (UnknownModelError, 404),
    (ort_web.UnknownAssetError, 404),
    (ort_web.BrowserRuntimeMissingError, 503),
    (ServerBusyError, 503),
    (NotFoundError, 404),
    (ConflictError, 409),
    (QuotaError, 413),
    (ImgrecError, 422),
)
# How long a client told the server is busy should wait before it tries again.
RETRY_AFTER_SECONDS = 5

ERRORS = {
    status: {"model": schemas.ErrorBody, "description": description}
    for status, description in (
        (
            400,
            "a bad request: no image, two images, a form field given twice, or a URL "
            "that is not http(s)",
        ),
        (403, "an image URL whose host is not public"),
        (404, "an unknown model, sample or layer"),
        (408, "a request body that took too long to arrive"),
        (413, "an upload or a fetched image over the limit, or an image too large to decode"),
        (
            422,
            "not an image, an image over the pixel cap, a URL that could not be "
            "fetched, or a bad form field",
        ),
        (503, "the server is busy: too many URL fetches, or no memory to decode now"),
    )
}


def install_error_handlers(app: FastAPI) -> None:
    """Make every failure of ``app`` an ``{"error": "..."}`` answer."""
    app.add_exception_handler(ImgrecError, _imgrec_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _internal_error)


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """The JSON answer for a failure."""
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _imgrec_error(request: Request, exc: ImgrecError) -> JSONResponse:
    status = next(code for kind, code in ERROR_STATUS if isinstance(exc, kind))
    busy = isinstance(exc, ServerBusyError)
    return error(status, str(exc), {"Retry-After": str(RETRY_AFTER_SECONDS)} if busy else None)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error(exc.status_code, str(exc.detail), exc.headers)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = [
        f"{'.'.join(str(part) for part in problem['loc'][1:]) or 'request'}: {problem['msg']}"
        for problem in exc.errors()
    ]
    return error(422, "; ".join(problems))


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    _log.exception("internal error on %s %s", request.method, request.url.path, exc_info=exc)
    return error(500, f"internal error ({type(exc).__name__}); the server's log has the details")
