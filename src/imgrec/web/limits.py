"""The limits that keep the web server up under hostile or heavy traffic.

- ``BodySizeLimit``: a body that announces its length is refused at once, unread, when
  it is too long; one sent in chunks is counted while it arrives and refused as soon as
  it passes the cap. Either way the client gets a 413 and nothing else is spent.
- ``BodyReadTimeout``: a body has a fixed time to arrive (408), however it trickles.
- ``Slots``: a bound on concurrent work such as URL fetches, with a 503 beyond it.
- ``DecodeBudget``: images are decoded only while their estimated memory fits a
  budget (503 when no room comes in time, 413 for an image that never fits), and
  freed memory goes back to the system once a wave is over.

Every refusal is ``{"error": "..."}`` with its status.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import threading
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import anyio
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from imgrec.core.errors import ImageError, ImgrecError


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


class BodyReadTimeout:
    """ASGI middleware that gives a request ``seconds`` to deliver its whole body.

    A client that trickles an upload holds a connection, a socket and a spooled file
    for as long as it likes otherwise. The clock starts when the application first
    asks for the body; past it the client gets a 408 with ``{"error": "..."}``.
    (Headers are read by uvicorn before the application sees the request:
    ``imgrec.web.server`` gives them a deadline of their own.)

    Args:
        app: the application to protect.
        seconds: how long the body may take to arrive, from its first read.
    """

    def __init__(self, app: ASGIApp, seconds: float) -> None:
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        deadline: float | None = None
        complete = False

        async def timed_receive() -> Message:
            nonlocal deadline, complete
            if complete:  # the body is in: what follows is the wait for a disconnect
                return await receive()
            if deadline is None:
                deadline = anyio.current_time() + self.seconds
            try:
                with anyio.fail_after(max(0.0, deadline - anyio.current_time())):
                    message = await receive()
            except TimeoutError:
                raise self._too_slow() from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            elif anyio.current_time() > deadline:  # a receive that never yielded
                raise self._too_slow()
            return message

        await self.app(scope, timed_receive, send)

    def _too_slow(self) -> HTTPException:
        return HTTPException(
            408, f"the request's body took longer than {self.seconds:g} s to arrive"
        )


class ServerBusyError(ImgrecError):
    """The server is at a limit it keeps to stay up (fetches, decoding memory): 503."""


class DecodeTooLargeError(ImageError):
    """One image would need more memory to decode than the server allows in all: 413."""


class Slots:
    """At most ``count`` holders at once; one more is told the server is busy, at once.

    Args:
        count: how many may hold a slot together.
        what: what a slot is for, for the message (``"image URLs being fetched"``).
    """

    def __init__(self, count: int, what: str) -> None:
        if count < 1:
            raise ValueError(f"need at least 1 slot for {what}, got {count}")
        self.count = count
        self.what = what
        self._free = threading.BoundedSemaphore(count)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Hold a slot for the block.

        Raises:
            ServerBusyError: every slot is taken.
        """
        if not self._free.acquire(blocking=False):
            raise ServerBusyError(
                f"the server is busy: it takes {self.count} {self.what} at once; try again shortly"
            )
        try:
            yield
        finally:
            self._free.release()


class DecodeBudget:
    """Admit image decoding by memory: estimated bytes in use stay under ``budget``.

    Requests are admitted in arrival order, each once its estimate fits beside those
    decoding and a decoding slot is free (decoding is CPU work: a few at a time keep
    the cores busy). A request that waits longer than ``wait`` seconds is told the
    server is busy (503); one whose estimate alone passes the budget, that it is too
    large (413). When the last decoding ends, freed memory is handed back to the
    system (``release_memory``), so a wave of big photos leaves no lasting footprint.

    Args:
        budget: bytes that decoding may use at once (estimates of
            ``imgrec.core.images.decode_cost``).
        slots: how many images may decode at once.
        wait: seconds a request may wait for room.
    """

    def __init__(self, budget: int, slots: int, wait: float) -> None:
        if budget < 1 or slots < 1 or wait < 0:
            raise ValueError(
                f"need budget >= 1, slots >= 1 and wait >= 0; got {budget}, {slots}, {wait}"
            )
        self.budget = budget
        self.slots = slots
        self.wait = wait
        self._changed = threading.Condition()
        self._queue: deque[object] = deque()
        self._used = 0
        self._active = 0

    @contextmanager
    def admit(self, cost: int, name: str) -> Iterator[None]:
        """Hold ``cost`` bytes of the budget and a decoding slot for the block.

        Args:
            cost: the decoding's estimated peak, in bytes.
            name: the image, for messages.

        Raises:
            DecodeTooLargeError: ``cost`` alone is over the budget.
            ServerBusyError: no room came within ``wait`` seconds.
        """
        if cost > self.budget:
            raise DecodeTooLargeError(
                f"{name}: decoding it would take about {_mib(cost)} of memory, more than "
                f"the server's {_mib(self.budget)} for decoding"
            )
        self._enter(cost, name)
        try:
            yield
        finally:
            with self._changed:
                self._used -= cost
                self._active -= 1
                idle = self._active == 0
                self._changed.notify_all()
            if idle:
                release_memory()

    def _enter(self, cost: int, name: str) -> None:
        ticket = object()

        def my_turn() -> bool:
            return (
                self._queue[0] is ticket
                and self._active < self.slots
                and self._used + cost <= self.budget
            )

        with self._changed:
            self._queue.append(ticket)
            try:
                admitted = self._changed.wait_for(my_turn, timeout=self.wait)
            finally:
                self._queue.remove(ticket)
                self._changed.notify_all()  # the next in line may fit now
            if not admitted:
                raise ServerBusyError(
                    f"{name}: the server is busy decoding other images (waited "
                    f"{self.wait:g} s for {_mib(cost)} of memory); try again shortly"
                )
            self._used += cost
            self._active += 1


def _mib(size: int) -> str:
    mib = size / 2**20
    return f"{mib:.1f} MiB" if mib < 10 else f"{mib:,.0f} MiB"


def release_memory() -> None:
    """Hand memory that the C allocator keeps after big frees back to the system.

    Pillow allocates images in blocks of a few megabytes from glibc's heaps, which
    keep freed space for reuse: after a wave of large photos the process would stay
    gigabytes larger than it needs. ``malloc_trim`` returns it; elsewhere than glibc
    this does nothing.
    """
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None
