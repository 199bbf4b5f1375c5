"""``import imgrec`` asks TensorFlow for oneDNN's CPU kernels, unless the user chose."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = (
    "import os, json, imgrec, tensorflow as tf; "
    "from tensorflow.python.util import _pywrap_util_port as port; "
    "print(json.dumps([os.environ.get('TF_ENABLE_ONEDNN_OPTS'), port.IsMklEnabled()]))"
)


def _run(code: str, **env: str) -> subprocess.CompletedProcess:
    """``python -c code`` with no TF_* or IMGREC_* variable but those of ``env``."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TF_", "IMGREC_"))}
    command = [sys.executable, "-c", code]
    done = subprocess.run(command, env=base | env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def test_import_imgrec_turns_onednn_on():
    assert json.loads(_run(PROBE).stdout.splitlines()[-1]) == ["1", True]


def test_the_users_choice_wins():
    done = _run(PROBE, TF_ENABLE_ONEDNN_OPTS="0")
    assert json.loads(done.stdout.splitlines()[-1]) == ["0", False]


def test_its_start_up_line_stays_off_stderr():
    # "oneDNN custom operations are on" is written before TF_CPP_MIN_LOG_LEVEL is read:
    # imgrec imports TensorFlow with the native stderr hidden (unless verbose).
    code = "import imgrec, keras, tensorflow"
    assert _run(code).stderr == ""
    assert "oneDNN custom operations are on" in _run(code, IMGREC_VERBOSE="1").stderr
