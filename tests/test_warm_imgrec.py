"""The docs' ``imgrec`` (tests/warm_imgrec.py) behaves as the console script does.

The docs' blocks run ``imgrec`` through a launcher that forks a process which imported
TensorFlow already: the output, the files, the exit codes and the end of a command
whose launcher is killed must be those of the real command.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from test_docs import page_environment, warm_imgrec

from imgrec.core.samples import sample_path


def _bash(
    script: str, cwd: Path, *, warm: bool = True, timeout: float = 300
) -> subprocess.CompletedProcess:
    env = page_environment()
    if warm:
        env["PATH"] = str(warm_imgrec().bin) + os.pathsep + env["PATH"]
    return subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    shutil.copy(sample_path("chelsea"), tmp_path / "chelsea.png")
    return tmp_path


def test_the_launcher_is_the_one_on_path(folder):
    assert _bash("command -v imgrec", folder).stdout.strip() == str(warm_imgrec().bin / "imgrec")
    assert _bash("command -v imgrec", folder, warm=False).stdout.strip() == str(
        Path(sys.executable).parent / "imgrec"
    )


def test_output_files_and_exit_codes_are_the_real_commands(folder):
    command = "imgrec detect chelsea.png --detector cat-face --json --out boxes.png"
    warm = _bash(command, folder)
    assert warm.returncode == 0, warm.stderr
    warm_png = (folder / "boxes.png").read_bytes()  # written in the block's folder
    (folder / "boxes.png").unlink()
    cold = _bash(command, folder, warm=False)
    assert _untimed(warm.stdout) == _untimed(cold.stdout)
    assert warm_png == (folder / "boxes.png").read_bytes()

    missing = _bash("imgrec detect missing.png", folder)
    assert missing.returncode == 1
    assert missing.stderr.startswith("imgrec: error: ") and "missing.png" in missing.stderr
    usage = _bash("imgrec detect", folder)
    assert usage.returncode == 2 and "usage: imgrec detect" in usage.stderr
    # stdin reaches the command; a variable the warm process did not start with makes the
    # launcher run the real imgrec, which gives the same answer.
    again = _bash(f"echo | EXTRA=1 {command}", folder).stdout
    assert _untimed(again) == _untimed(warm.stdout)


def _untimed(output: str) -> dict:
    """The command's JSON answer without its time, which differs from run to run."""
    answer = json.loads(output)
    return {key: value for key, value in answer.items() if "seconds" not in key}


def _answers(url: str) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=1):
            return True
    except OSError:
        return False


def test_killing_the_launcher_ends_its_command(folder):
    script = (
        "imgrec serve --port 0 --json > server.json 2> server.log & launcher=$!\n"
        "until [ -s server.json ]; do kill -0 $launcher; sleep 0.2; done\n"
        "kill $launcher\n"
    )
    done = _bash(script, folder)
    assert done.returncode == 0, done.stderr
    url = json.loads((folder / "server.json").read_text())["url"]
    deadline = time.monotonic() + 30
    while _answers(url) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _answers(url), f"{url} still answers after its launcher was killed"


def test_python_runs_code_modules_and_scripts_as_the_interpreter_does(folder):
    (folder / "script.py").write_text(
        "import sys\n"
        "print(sys.argv, sys.path[0] == __import__('os').path.dirname(__file__))\n"
        "print(sys.stdin.read().strip())\n"
        "sys.exit(int(sys.argv[1]))\n"
    )
    (folder / "pkg").mkdir()
    (folder / "pkg" / "__init__.py").write_text("")
    (folder / "pkg" / "tool.py").write_text(
        "import sys\nif __name__ == '__main__':\n    print('tool', sys.argv[1:])\n"
    )
    script = (
        "command -v python\n"
        "python -c 'import sys; print(sys.argv, \"tensorflow\" in sys.modules)' a b\n"
        "echo piped | python script.py 0 x || true\n"
        "echo piped | python script.py 3 x || echo exit $?\n"
        "python -m pkg.tool --flag\n"
        "python -c 'raise ValueError(\"broken\")' || echo exit $?\n"
        "python -u -c 'print(\"unbuffered\")'\n"
        "python missing.py || echo exit $?\n"
    )
    warm, cold = _bash(script, folder), _bash(script, folder, warm=False)
    assert warm.returncode == 0 and cold.returncode == 0, warm.stderr + cold.stderr
    warm_lines, cold_lines = warm.stdout.splitlines(), cold.stdout.splitlines()
    assert warm_lines[0] == str(warm_imgrec().bin / "python")
    assert cold_lines[0] == str(Path(sys.executable).parent / "python")
    # the same output but for one thing: the warm process imported TensorFlow already
    assert warm_lines[1] == "['-c', 'a', 'b'] True"
    assert cold_lines[1] == "['-c', 'a', 'b'] False"
    assert (
        warm_lines[2:]
        == cold_lines[2:]
        == [
            "['script.py', '0', 'x'] True",
            "piped",
            "['script.py', '3', 'x'] True",
            "piped",
            "exit 3",
            "tool ['--flag']",
            "exit 1",
            "unbuffered",
            "exit 2",
        ]
    )
    assert "ValueError: broken" in warm.stderr and "ValueError: broken" in cold.stderr


def test_a_command_that_ran_worker_processes_ends_with_them(folder):
    # joblib's workers (imgrec classic) stop at the interpreter's end, in the threading
    # module's exit hooks; a warm command that skipped them waited for the workers' idle
    # timeout, 300 s, before it ended.
    script = (
        "python -c 'from joblib import Parallel, delayed; "
        "print(sum(Parallel(n_jobs=2)(delayed(abs)(i) for i in range(-4, 4))))'\n"
    )
    done = _bash(script, folder, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "16\n"


def test_a_changed_environment_gets_a_warm_process_that_matches_it(folder, monkeypatch):
    """An earlier test file may leave os.environ changed: the pages still run warm."""
    first = warm_imgrec()
    monkeypatch.setenv("IMGREC_TEST_DRIFT", "1")
    second = warm_imgrec()
    assert second is not first and second.serves(page_environment())
    assert first.process.poll() is not None  # the old one ended
    found = _bash("python -c 'import sys; print(\"tensorflow\" in sys.modules)'", folder)
    assert found.stdout.strip() == "True", found.stderr
