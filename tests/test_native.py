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


def _probe(**env: str) -> list:
    base = {k: v for k, v in os.environ.items() if k != "TF_ENABLE_ONEDNN_OPTS"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=base | env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_import_imgrec_turns_onednn_on():
    assert _probe() == ["1", True]


def test_the_users_choice_wins():
    assert _probe(TF_ENABLE_ONEDNN_OPTS="0") == ["0", False]
