"""Quiet by default: no library start-up noise, the user's settings win, `imgrec` alone tours.

The real stderr of ``imgrec predict`` is checked in test_predict_cli.py
(``test_console_script_predicts``); here, the parts: the tour, ``--verbose``, the user's own
``TF_CPP_MIN_LOG_LEVEL``, hiding native writes to stderr, and the libraries' Python warnings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from imgrec.cli import COMMANDS, main
from imgrec.core import quiet

TIMEOUT_S = 120
# The environment of a user who set nothing.
CLEAN_ENV = {k: v for k, v in os.environ.items() if k not in (quiet.TF_LOG_ENV, quiet.VERBOSE_ENV)}


def python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=TIMEOUT_S
    )


def tour_commands() -> list[list[str]]:
    """The commands the tour shows, each as argv (without the leading ``imgrec``)."""
    from imgrec.cli import TOUR

    lines = [line.split("  ")[1] for line in TOUR.splitlines() if line.startswith("  imgrec ")]
    return [line.split()[1:] for line in lines]


def test_imgrec_alone_prints_the_tour_and_every_verb(capsys):
    assert main([]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("imgrec: image recognition with Keras")
    assert "imgrec predict photo.jpg" in out
    listed = [line.split()[0] for line in out.split("verbs:\n", 1)[1].splitlines()]
    assert listed == [command.name for command in COMMANDS]


def test_the_tour_commands_parse():
    """Every command the tour shows is one the parser takes (the tour cannot rot)."""
    from imgrec.cli import build_parser

    commands = tour_commands()
    assert len(commands) >= 3
    for argv in commands:
        build_parser().parse_args(argv)


STATE = (
    "import json, os\n"
    "from imgrec.cli import main\n"
    "main({argv})\n"
    "print(json.dumps([os.environ.get('TF_CPP_MIN_LOG_LEVEL'), "
    "os.environ.get('IMGREC_VERBOSE')]))\n"
)


@pytest.mark.parametrize(
    ("user_level", "argv", "expected"),
    [
        (None, ["datasets", "--json"], ["3", None]),  # quiet by default
        (None, ["datasets", "--json", "--verbose"], [None, "1"]),  # TensorFlow's own default
        ("0", ["datasets", "--json"], ["0", None]),  # the user's setting wins
        ("1", ["datasets", "--json", "--verbose"], ["1", "1"]),
    ],
)
def test_tensorflow_log_level_follows_the_user(user_level, argv, expected):
    """What TensorFlow will read when it loads (children inherit it: the export process)."""
    env = CLEAN_ENV | ({quiet.TF_LOG_ENV: user_level} if user_level else {})
    result = python(STATE.format(argv=argv), env)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == expected


def test_imgrec_verbose_env_is_the_same_as_the_flag():
    result = python(STATE.format(argv=["datasets", "--json"]), CLEAN_ENV | {quiet.VERBOSE_ENV: "1"})
    assert json.loads(result.stdout.splitlines()[-1]) == [None, "1"]


def test_native_writes_to_stderr_are_hidden(capfd, monkeypatch):
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    with quiet.native_stderr_quiet():
        os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"


def test_native_writes_come_back_when_the_block_fails(capfd, monkeypatch):
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    with pytest.raises(RuntimeError), quiet.native_stderr_quiet():
        os.write(2, b"the reason it failed\n")
        raise RuntimeError("failed")
    assert "the reason it failed" in capfd.readouterr().err


def test_verbose_hides_nothing(capfd, monkeypatch):
    monkeypatch.setenv(quiet.VERBOSE_ENV, "1")
    with quiet.native_stderr_quiet():
        os.write(2, b"native line\n")
    assert capfd.readouterr().err == "native line\n"


@pytest.mark.parametrize(
    ("verbose", "shown"), [(None, ["imgrec says"]), ("1", ["lib", "imgrec says"])]
)
def test_library_warnings_off_imgrec_warnings_on(monkeypatch, verbose, shown):
    monkeypatch.delenv(quiet.VERBOSE_ENV, raising=False)
    if verbose:
        monkeypatch.setenv(quiet.VERBOSE_ENV, verbose)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet.quiet_python_logs()
        warnings.warn_explicit("lib", UserWarning, "layer.py", 1, module="keras.src.layers")
        warnings.warn_explicit("imgrec says", UserWarning, "x.py", 1, module="imgrec.training")
    assert [str(w.message) for w in caught] == shown
