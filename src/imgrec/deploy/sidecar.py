"""What travels beside an export: its JSON sidecar, the digests that identify a model, and
the versions of the software that exported it.

The sidecar (``model.onnx`` -> ``model.onnx.json``) holds the class names, the
preprocessing recipe and the input and output layout, so that a consumer of the export
needs nothing else; its ``sha256`` says which exact file it describes.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
from pathlib import Path
from typing import Any

import keras
import numpy as np

from imgrec.core.errors import ModelError
from imgrec.models.metadata import ModelInfo, model_info

SIDECAR_FORMAT = 1


def sidecar_path(path: str | os.PathLike) -> Path:
    """The JSON sidecar of an export: ``model.onnx`` -> ``model.onnx.json``."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def read_sidecar(path: str | os.PathLike) -> dict[str, Any]:
    """The sidecar of the export at ``path``, as written by ``export``.

    Raises:
        ModelError: no sidecar, or one that is not imgrec's.
    """
    sidecar = sidecar_path(path)
    if not sidecar.is_file():
        raise ModelError(
            f"{path}: no {sidecar.name} beside it (class names, preprocessing); "
            "write both with 'imgrec export'"
        )
    try:
        data = json.loads(sidecar.read_text())
        ModelInfo.from_config(data["model"])
    except (ValueError, KeyError, TypeError) as err:
        raise ModelError(f"{sidecar}: not an imgrec export sidecar ({err})") from err
    if data.get("imgrec_export") != SIDECAR_FORMAT:
        raise ModelError(f"{sidecar}: not an imgrec export sidecar of format {SIDECAR_FORMAT}")
    return data


def file_digest(path: str | os.PathLike) -> str:
    """SHA-256 (hex) of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_digest(model: keras.Model) -> str:
    """SHA-256 (hex) of what a model computes: its architecture, weights and ModelInfo."""
    digest = hashlib.sha256()
    digest.update(model.to_json().encode())
    digest.update(json.dumps(model_info(model).to_config(), sort_keys=True).encode())
    for weight in model.get_weights():
        digest.update(str(weight.shape).encode())
        digest.update(np.ascontiguousarray(weight).tobytes())
    return digest.hexdigest()


def exporter_versions() -> dict[str, str | None]:
    """The versions of the software an export depends on (recorded in every sidecar)."""
    from imgrec import __version__

    versions: dict[str, str | None] = {"imgrec": __version__, "keras": keras.__version__}
    for name, distributions in (
        ("tensorflow", ("tensorflow", "tensorflow-cpu")),
        ("tf2onnx", ("tf2onnx",)),
        ("onnx", ("onnx",)),
    ):
        versions[name] = next(
            (v for d in distributions if (v := _distribution_version(d)) is not None), None
        )
    return versions


def _distribution_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None
