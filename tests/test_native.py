"""``import imgrec`` asks TensorFlow for oneDNN's CPU kernels, unless the user chose."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

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


# ----------------------------------------------------------------------------- bfloat16


def _cpuinfo(tmp_path, flags: str):
    path = tmp_path / "cpuinfo"
    path.write_text(f"processor\t: 0\nmodel name\t: a CPU\nflags\t\t: fpu sse2 {flags}\n\n")
    return path


def test_native_bfloat16_is_read_from_the_cpus_flags(tmp_path):
    from imgrec.core.native import cpu_has_bfloat16

    assert cpu_has_bfloat16(_cpuinfo(tmp_path, "avx2 avx512f amx_bf16 amx_tile"))
    assert cpu_has_bfloat16(_cpuinfo(tmp_path, "avx512f avx512_bf16"))
    # AVX2 alone (the AMD EPYC Zen 3 cores), or a flag that only contains the name: no
    assert not cpu_has_bfloat16(_cpuinfo(tmp_path, "avx2 fma no_amx_bf16x"))
    assert not cpu_has_bfloat16(tmp_path / "missing")


def test_a_recipe_gets_bfloat16_only_where_it_is_native_and_not_turned_off(monkeypatch):
    from imgrec.core import native

    monkeypatch.delenv(native.BFLOAT16_ENV, raising=False)
    here = "bfloat16" if native.cpu_has_bfloat16() else "float32"
    assert native.training_precision("bfloat16") == here
    assert native.training_precision("float32") == "float32"
    monkeypatch.setenv(native.BFLOAT16_ENV, "0")
    assert native.training_precision("bfloat16") == "float32"


def _amp_option() -> bool:
    """Whether TensorFlow's oneDNN bfloat16 rewrite is on."""
    import tensorflow as tf

    from imgrec.core.native import _ONEDNN_AMP

    return bool(tf.config.optimizer.get_experimental_options().get(_ONEDNN_AMP, False))


def test_compute_precision_turns_the_rewrite_on_inside_and_back_off_after_an_error():
    from imgrec.core.native import compute_precision

    assert not _amp_option()
    with compute_precision("float32"):
        assert not _amp_option()
    try:
        with compute_precision("bfloat16"):
            assert _amp_option()
            raise KeyError("stops the fit")
    except KeyError:
        pass
    assert not _amp_option()


def test_bfloat16_changes_the_arithmetic_where_the_cpu_has_it():
    import numpy as np
    import tensorflow as tf

    from imgrec.core.native import compute_precision, cpu_has_bfloat16

    if not cpu_has_bfloat16():
        pytest.skip("this CPU has no native bfloat16 (AMX, AVX-512 BF16): training stays float32")
    rng = np.random.default_rng(0)
    images = tf.constant(rng.normal(size=(8, 16, 16, 8)).astype("float32"))
    kernel = tf.constant(rng.normal(size=(3, 3, 8, 16)).astype("float32"))

    def convolve():
        return tf.function(lambda: tf.nn.relu(tf.nn.conv2d(images, kernel, 1, "SAME")))()

    exact = convolve().numpy()
    with compute_precision("bfloat16"):
        rounded = convolve().numpy()
    assert rounded.dtype == np.float32  # the graph's outputs keep their type
    error = np.abs(rounded - exact).max() / np.abs(exact).max()
    assert 1e-4 < error < 3e-2  # bfloat16's 8 bits of mantissa, not float32's 24
    np.testing.assert_array_equal(convolve().numpy(), exact)  # a new graph after: float32
