"""A real HTTP server on loopback for the URL-fetching tests: images, redirects, slow answers.

It listens on 127.0.0.1 only and records every request path, so a test can show that a
refused URL was never requested at all.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

TRICKLE_SECONDS = 8.0
TRICKLE_INTERVAL = 0.1


class ImageServer(ThreadingHTTPServer):
    """Serves ``files`` by path, plus a few routes that misbehave on purpose.

    Routes besides the files:
        /redirect?to=URL   302 to URL (relative or absolute)
        /loop              302 to itself
        /slow              waits 3 s before answering
        /host              echoes the Host header it received
        /stream?size=N     N bytes without a Content-Length (the end is the close)
        /sized?size=N      N bytes with their Content-Length
        /trickle/KIND      a response sent one byte every 0.1 s, for ``TRICKLE_SECONDS``
                           at most: KIND is ``status`` (the status line), ``headers``
                           (header lines), ``continue`` (endless ``100 Continue``
                           answers) or ``chunks`` (endless one-byte chunks)
    """

    daemon_threads = True

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files
        self.paths: list[str] = []

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that hung up first (the timeout and byte-cap tests) is what those
        # tests want; anything else is a bug in the handler and is printed.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server: ImageServer

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        self.server.paths.append(self.path)
        parts = urlsplit(self.path)
        query = {key: values[0] for key, values in parse_qs(parts.query).items()}
        if parts.path in self.server.files:
            self._send(200, self.server.files[parts.path])
        elif parts.path == "/redirect":
            self._redirect(query["to"])
        elif parts.path == "/loop":
            self._redirect("/loop")
        elif parts.path == "/slow":
            time.sleep(3)
            self._send(200, b"late")
        elif parts.path == "/host":
            self._send(200, self.headers["Host"].encode())
        elif parts.path == "/sized":
            self._send(200, b"\0" * int(query["size"]))
        elif parts.path.startswith("/trickle/"):
            self._trickle(parts.path.removeprefix("/trickle/"))
        elif parts.path == "/stream":
            self.protocol_version = "HTTP/1.0"
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"\0" * int(query["size"]))
        else:
            self._send(404, b"not here")

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _trickle(self, kind: str) -> None:
        """Send a response whose every part arrives one byte at a time (see the class)."""
        self.close_connection = True
        head = b"HTTP/1.1 200 OK\r\n"
        endless = {
            "status": head + b"Content-Length: 4\r\n\r\nlate",
            "headers": b"X-Slow: " + b"a" * 1000 + b"\r\n",
            "continue": b"HTTP/1.1 100 Continue\r\n\r\n",
            "chunks": b"1\r\nx\r\n",
        }[kind]
        if kind == "headers":
            self.wfile.write(head)
        elif kind == "chunks":
            self.wfile.write(head + b"Transfer-Encoding: chunked\r\n\r\n")
        stop = time.monotonic() + TRICKLE_SECONDS
        while time.monotonic() < stop:
            for byte in endless:
                self.wfile.write(bytes([byte]))
                time.sleep(TRICKLE_INTERVAL)
                if time.monotonic() >= stop:
                    return

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()


@contextmanager
def image_server(files: dict[str, bytes]) -> Iterator[ImageServer]:
    """Run an ``ImageServer`` in a thread for the duration of the block."""
    server = ImageServer(files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
