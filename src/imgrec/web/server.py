"""Run the web application on a socket with uvicorn: ``serve``, behind ``imgrec serve``.

A slow client cannot hold a connection open for as long as it likes: its request
headers must arrive within ``HEADER_TIMEOUT`` seconds of the connection (or of the
previous response on a kept-alive one), else the connection is closed, and its body
within the application's ``body_timeout`` (408). The page has no login and no rate
limit of its own: to listen on other machines' addresses (``--host 0.0.0.0``), put it
behind a reverse proxy that limits connections per client and buffers requests
(nginx: ``limit_conn``, ``client_header_timeout``, ``client_body_timeout``,
``client_max_body_size 11m``).
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Iterable

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from imgrec.core.errors import ImgrecError
from imgrec.web.app import DEFAULT_UPLOAD_LIMIT, create_app
from imgrec.web.teach.service import TeachConfig

# Seconds a connection has to send a request's headers.
HEADER_TIMEOUT = 20.0


class ServeError(ImgrecError):
    """The server cannot listen where it was asked to."""


def serve(
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    models_dir: str | os.PathLike | None = None,
    upload_limit: int = DEFAULT_UPLOAD_LIMIT,
    allow_hosts: Iterable[str] = (),
    cache_size: int = 4,
    runtime: str = "auto",
    log_level: str = "info",
    on_ready: Callable[[str], None] | None = None,
    projects_dir: str | os.PathLike | None = None,
) -> None:
    """Serve the page and its API until interrupted (Ctrl-C or SIGTERM).

    The socket is bound before uvicorn starts, so ``port=0`` picks a free port and
    ``on_ready`` learns the real address: connections made from then on wait in the
    socket's queue until uvicorn answers them.

    Args:
        host: the address to listen on. The default answers this machine only; the
            page has no login, so listen on others only where everyone may use it.
        port: the TCP port, 0 for any free one.
        models_dir, upload_limit, allow_hosts, cache_size, runtime: as for ``create_app``.
        log_level: uvicorn's ("info" logs every request, "warning" only problems).
        on_ready: called with the page's URL once the socket listens.
        projects_dir: the Teach demo's projects folder (as for ``create_app``).

    Raises:
        ServeError: the port is out of range or the address cannot be listened on.
        ModelError: ``models_dir`` is not a folder.
        ValueError: an unknown ``runtime``.
    """
    if not 0 <= port <= 65535:
        raise ServeError(f"port must be between 0 and 65535, got {port}")
    app = create_app(
        models_dir,
        upload_limit=upload_limit,
        allow_hosts=tuple(allow_hosts),
        cache_size=cache_size,
        runtime=runtime,
        teach=TeachConfig(projects_dir=projects_dir),
    )
    sock = _listen(host, port)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    if on_ready is not None:
        on_ready(f"http://{shown_host}:{bound_port}/")
    config = uvicorn_config(app, host=host, port=bound_port, log_level=log_level)
    uvicorn.Server(config).run(sockets=[sock])


def uvicorn_config(
    app: FastAPI,
    *,
    host: str,
    port: int,
    log_level: str = "info",
    header_timeout: float = HEADER_TIMEOUT,
) -> uvicorn.Config:
    """uvicorn's settings for ``app``: HTTP/1.1 by h11, with a deadline for request headers.

    Args:
        app: the application (``create_app``).
        host, port: where uvicorn will say it listens.
        log_level: uvicorn's.
        header_timeout: seconds a connection has to send a request's headers.
    """
    if header_timeout <= 0:
        raise ValueError(f"header_timeout must be above 0, got {header_timeout}")

    class Protocol(_HeaderDeadline):
        timeout = header_timeout

    return uvicorn.Config(app, host=host, port=port, log_level=log_level, http=Protocol)


class _HeaderDeadline(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request headers are too slow.

    The clock runs while the client owes the headers of a request: from the
    connection, and again from each response on a kept-alive connection.
    """

    timeout = HEADER_TIMEOUT
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_header_clock()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the headers are in
            self._stop_header_clock()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._start_header_clock()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_header_clock()
        super().connection_lost(exc)

    def _start_header_clock(self) -> None:
        self._stop_header_clock()
        self._header_timer = self.loop.call_later(self.timeout, self._headers_too_slow)

    def _stop_header_clock(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def _listen(host: str, port: int) -> socket.socket:
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as err:
        raise ServeError(f"cannot listen on {host}:{port} ({err})") from err
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as err:
        sock.close()
        raise ServeError(f"cannot listen on {host}:{port} ({err})") from err
    return sock
