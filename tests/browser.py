"""What every browser test shares: a real ``imgrec serve`` and Debian's Chromium.

The server is an ``imgrec serve`` process on loopback with a free port; the browser is
the system's Chromium (``apt-get install chromium``, which ``.ci/run`` does), not one that
Playwright downloads, driven by Playwright. A :class:`Visit` records what the page asked
of other hosts (it must load nothing from outside the server) and the script errors it
logged, so that each test can assert both are empty.

Use them as module fixtures::

    @pytest.fixture(scope="module")
    def server_url():
        with serving("--runtime", "keras") as url:
            yield url

    @pytest.fixture(scope="module")
    def browser():
        with chromium() as launched:
            yield launched
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"


@contextmanager
def serving(*flags: str, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run ``imgrec serve --port 0 --json FLAGS...`` until the block ends; yield its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", "imgrec", "serve", "--port", "0", "--json", *flags],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"} | (env or {}),
    )
    try:
        line = process.stdout.readline()
        if not line:
            raise RuntimeError(f"imgrec serve {' '.join(flags)} exited with {process.wait()}")
        yield json.loads(line)["url"]
    finally:
        process.terminate()
        process.wait(timeout=30)


@contextmanager
def chromium(*args: str) -> Iterator[Browser]:
    """Debian's Chromium, headless, with extra command-line ``args``."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=list(args)
        )
        try:
            yield launched
        finally:
            launched.close()


@dataclass
class Visit:
    """The page, the requests it made to other hosts, and the script errors it logged."""

    page: Page
    context: BrowserContext
    outside_requests: list[str] = field(default_factory=list)
    script_errors: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.context.close()


def visit(browser: Browser, server_url: str, path: str = "/", **context_options) -> Visit:
    """Open ``server_url + path`` in a new context (``locale=``, ``viewport=``, ...)."""
    context_options.setdefault("viewport", {"width": 1400, "height": 1100})
    context = browser.new_context(**context_options)
    page = context.new_page()
    opened = Visit(page, context)

    def on_request(request) -> None:
        if not request.url.startswith((server_url, "data:", "blob:")):
            opened.outside_requests.append(request.url)

    def on_console(message) -> None:
        if message.type == "error":
            opened.script_errors.append(message.text)

    page.on("request", on_request)
    page.on("console", on_console)
    page.on("pageerror", lambda error: opened.script_errors.append(str(error)))
    page.goto(server_url.rstrip("/") + path)
    return opened
