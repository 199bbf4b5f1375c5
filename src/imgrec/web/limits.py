"""Cap the size of request bodies: refuse big uploads before reading them into memory.

A body that announces its length is refused at once, unread, when it is too long; one
sent in chunks is counted while it arrives and refused as soon as it passes the cap.
Either way the client gets a 413 with ``{"error": "..."}`` and nothing else is spent.
"""

from __future__ import annotations

from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodySizeLimit:
    """ASGI middleware that refuses request bodies longer than ``limit`` bytes.

    Args:
        app: the application to protect.
        limit: the longest body accepted, in bytes (uploads plus form overhead).
        message: the error message sent with the 413.
    """

    def __init__(self, app: ASGIApp, limit: int, message: str) -> None:
        self.app = app
        self.limit = limit
        self.message = message

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            await JSONResponse({"error": self.message}, status_code=413)(scope, receive, send)
            return
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    # Raised inside the route's body parsing; the application's handler
                    # for HTTPException turns it into the JSON answer.
                    raise HTTPException(413, self.message)
            return message

        await self.app(scope, counted_receive, send)
