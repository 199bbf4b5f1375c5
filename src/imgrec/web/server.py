"""Run the web application on a socket with uvicorn: ``serve``, behind ``imgrec serve``."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable

import uvicorn

from imgrec.core.errors import ImgrecError
from imgrec.web.app import DEFAULT_UPLOAD_LIMIT, create_app


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
    )
    sock = _listen(host, port)
    bound_port = sock.getsockname()[1]
    shown_host = f"[{host}]" if ":" in host else host
    if on_ready is not None:
        on_ready(f"http://{shown_host}:{bound_port}/")
    config = uvicorn.Config(app, host=host, port=bound_port, log_level=log_level)
    uvicorn.Server(config).run(sockets=[sock])


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
