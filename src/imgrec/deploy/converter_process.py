"""Run a converter in a child process, so that its crash is an error, not the end of imgrec.

TensorFlow's graph optimiser, tf2onnx and the TFLite converter are native code: a
model they do not expect can make them crash (a segmentation fault) instead of
raising. In the process of ``imgrec predict`` or ``imgrec serve`` that would end
the command, or the server, with nothing said. So a model that a user supplied is
converted in a child Python process (``python -m imgrec.deploy.converter_process``,
not ``multiprocessing``, which would import the caller's main module again):

- the parent writes a request (a ``.keras`` file, the format, the path to write,
  the int8 calibration images as a ``.npy`` file) into a temporary folder;
- the child loads the ``.keras`` file as imgrec loads any model file (its config
  checked before Keras reads it), converts it, and writes a JSON result;
- a child that ends by a signal, or without a result, becomes a ``ModelError`` in
  the parent (``the onnx export crashed (signal 11, SIGSEGV)``); an ``ImgrecError``
  in the child is raised again in the parent, with its type and message.

Nothing crosses the boundary but JSON and a ``.npy`` array read without pickle.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import keras
import numpy as np

from imgrec.core import errors
from imgrec.core.errors import ImgrecError, ModelError
from imgrec.core.storage import write_bytes_atomic
from imgrec.deploy.converters import FORMATS, converting
from imgrec.models.loading import load_model

# For tests only: the child kills itself with this signal number once the model is
# loaded, where a converter would crash, so that the parent's handling of a real
# crash can be tested without a model that crashes TensorFlow.
CRASH_HOOK = "IMGREC_TEST_CONVERTER_SIGNAL"


def convert_in_child(
    model_file: str | os.PathLike,
    format: str,
    out: str | os.PathLike,
    quantize: str | None = None,
    calibration: np.ndarray | None = None,
    *,
    name: str,
) -> None:
    """Convert the ``.keras`` file ``model_file`` to ``format`` at ``out``, in a child process.

    Args:
        model_file: the model, as a ``.keras`` file.
        format: an export format (``imgrec.deploy.converters.FORMATS``).
        out: the path the converter writes (a file, or the SavedModel folder).
        quantize: ``None``, ``"fp16"`` or ``"int8"``.
        calibration: for int8, the preprocessed calibration images.
        name: the model's name, for messages.

    Raises:
        ModelError: the conversion failed, or the child crashed (a signal) or ended
            without a result; nothing is left at ``out`` in that case.
        ImgrecError: another error of the child (the file cannot be loaded), as raised
            there.
    """
    with tempfile.TemporaryDirectory(prefix="imgrec-convert-") as folder:
        folder = Path(folder)
        request = {
            "model": str(Path(model_file).resolve()),
            "format": format,
            "out": str(Path(out).resolve()),
            "quantize": quantize,
            "name": name,
            "calibration": None,
            "result": str(folder / "result.json"),
        }
        if calibration is not None:
            request["calibration"] = str(folder / "calibration.npy")
            np.save(request["calibration"], np.asarray(calibration, np.float32))
        (folder / "request.json").write_text(json.dumps(request))
        done = subprocess.run(
            [*_child_command(), str(folder / "request.json")],
            env=_child_environment(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=False,
        )
        result_file = folder / "result.json"
        result = json.loads(result_file.read_text()) if result_file.is_file() else None
    if result is None or "error" in result:
        _remove(Path(out))  # what a failed or crashed converter may have half written
    if result is None:
        raise ModelError(_failure(name, format, done.returncode, done.stderr))
    if "error" in result:
        raise _error_type(result["error"])(result["message"])


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _child_command() -> list[str]:
    """The command that runs this module in a child: this Python, ``-m``.

    (The test suite swaps it for a launcher that forks an interpreter which imported
    TensorFlow once: tests/warm_imgrec.py.)
    """
    return [sys.executable, "-m", __name__]


def _child_environment() -> dict[str, str]:
    """The parent's environment, with this copy of imgrec first on the path and its backend."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the folder that holds imgrec
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["KERAS_BACKEND"] = keras.backend.backend()
    return env


def _failure(name: str, format: str, returncode: int, stderr: bytes) -> str:
    """What to say about a child that ended without a result."""
    if returncode < 0:
        try:
            signal_name = f", {signal.Signals(-returncode).name}"
        except ValueError:
            signal_name = ""
        return (
            f"{name}: the {format} export crashed (signal {-returncode}{signal_name}); "
            "nothing was written"
        )
    lines = [line for line in stderr.decode(errors="replace").splitlines() if line.strip()]
    last = lines[-1].strip() if lines else "no message"
    return f"{name}: the {format} converter process failed (exit code {returncode}: {last})"


def _error_type(name: str) -> type[ImgrecError]:
    found = getattr(errors, name, None)
    if isinstance(found, type) and issubclass(found, ImgrecError):
        return found
    return ModelError


def _convert(request: dict) -> None:
    """The child's work: load the model file, convert it, write the output."""
    model = load_model(request["model"])
    crash = os.environ.get(CRASH_HOOK)
    if crash:
        os.kill(os.getpid(), int(crash))
    calibration = None
    if request["calibration"] is not None:
        calibration = np.load(request["calibration"], allow_pickle=False)
    export_format = FORMATS[request["format"]]
    converting(
        request["name"],
        export_format.name,
        lambda: export_format.convert(
            model, Path(request["out"]), request["quantize"], calibration
        ),
    )


def _main(argv: list[str]) -> int:
    request = json.loads(Path(argv[0]).read_text())
    try:
        _convert(request)
    except ImgrecError as err:
        result = {"error": type(err).__name__, "message": str(err)}
    else:
        result = {"ok": True}
    write_bytes_atomic(request["result"], json.dumps(result).encode())
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
