"""Quiet by default: the libraries' own start-up and log lines stay off unless asked for.

TensorFlow's C++ runtime (through absl) prints start-up notices on stderr (CPU features,
oneDNN, "All log messages before absl::InitializeLog()"), TFLite announces its XNNPACK
delegate, and Keras, TensorFlow and tf2onnx log and warn in their own words. To a learner
that reads like an error. imgrec keeps them off, and says what matters itself, in lines
that start with ``imgrec:``.

The user's word wins:

- an environment variable the user set (``TF_CPP_MIN_LOG_LEVEL``) is never overridden;
- ``IMGREC_VERBOSE=1``, or ``--verbose`` on any verb (which sets it, so that the child
  processes imgrec starts inherit it), lets every library speak as it would without imgrec.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import logging
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator

VERBOSE_ENV = "IMGREC_VERBOSE"
TF_LOG_ENV = "TF_CPP_MIN_LOG_LEVEL"
# 3: TensorFlow's C++ logs only fatal errors; a failure still reaches the user as a Python
# exception, which imgrec turns into one "imgrec: error: ..." line naming the input.
QUIET_TF_LOG_LEVEL = "3"
# The Python loggers and warning sources of the libraries imgrec runs on.
LIBRARY_LOGGERS = ("tensorflow", "absl", "tf2onnx", "keras", "h5py", "onnxruntime")
LIBRARY_WARNINGS = r"(tensorflow|keras|tf2onnx|onnx|onnxruntime|absl|h5py|google)(\.|$)"

# What the user's environment said before imgrec set anything (None: not set).
_USER_TF_LOG_LEVEL = os.environ.get(TF_LOG_ENV)


def is_verbose() -> bool:
    """Whether the user asked to see the libraries' own messages (``IMGREC_VERBOSE=1``)."""
    return os.environ.get(VERBOSE_ENV, "").lower() in ("1", "true", "yes")


def quiet_native_logs() -> None:
    """Silence TensorFlow's C++ start-up lines, unless the user set the level or is verbose.

    Called by ``import imgrec``, before anything imports TensorFlow: the level is read once,
    when TensorFlow's runtime loads.
    """
    if _USER_TF_LOG_LEVEL is None and not is_verbose():
        os.environ[TF_LOG_ENV] = QUIET_TF_LOG_LEVEL
        if "tensorflow" not in sys.modules:
            sys.meta_path.insert(0, _QuietTensorFlowImport())


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """Imports TensorFlow, the first time, inside ``native_stderr_quiet``.

    Some of TensorFlow's start-up lines are written before its logging reads
    ``TF_CPP_MIN_LOG_LEVEL`` ("oneDNN custom operations are on", and absl's "All log
    messages before absl::InitializeLog() is called ..."), so the level cannot hide them.
    """

    def find_spec(
        self, name: str, path: object, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            load = spec.loader.exec_module

            def exec_module(module: object) -> None:
                with native_stderr_quiet():
                    load(module)

            spec.loader.exec_module = exec_module
        return spec


def set_verbose(verbose: bool) -> None:
    """``--verbose``: let every library log as it would (and the processes imgrec starts).

    With ``verbose`` False this changes nothing: quiet is the default.
    """
    if not verbose:
        return
    os.environ[VERBOSE_ENV] = "1"
    if _USER_TF_LOG_LEVEL is None:
        os.environ.pop(TF_LOG_ENV, None)
    else:
        os.environ[TF_LOG_ENV] = _USER_TF_LOG_LEVEL


def quiet_python_logs() -> None:
    """Keep the libraries' Python loggers to errors and their warnings off (unless verbose).

    imgrec's own warnings, and warnings raised from the user's code, still show.
    """
    if is_verbose():
        return
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=LIBRARY_WARNINGS)


@contextlib.contextmanager
def native_stderr_quiet() -> Iterator[None]:
    """Hide what native code writes straight to file descriptor 2 inside the block.

    For C++ libraries that print without a log level to turn down (TFLite's "Created
    TensorFlow Lite XNNPACK delegate"). What was written is replayed on stderr when the
    block raises, so a real failure keeps its words; with ``IMGREC_VERBOSE=1`` nothing
    is hidden.
    """
    if is_verbose():
        yield
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except BaseException:
            _restore(saved)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        else:
            _restore(saved)


def _restore(saved: int) -> None:
    """Point file descriptor 2 back at the stderr ``saved`` holds."""
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
