"""``imgrec`` and ``python`` for the docs' blocks without a TensorFlow start per command.

Every ``imgrec`` a docs block runs would import TensorFlow and Keras again (5 to 10 s of
CPU each, dozens of times), and so would every Python block or ``python`` command that
imports imgrec. Here one process imports them once and waits; each command is a
``fork`` of it that runs ``imgrec.cli.main`` (or, for ``python``, the ``-c`` code, the
``-m`` module or the script) on the command's arguments, in its folder, with its
environment and its stdin, stdout and stderr. What runs is the same code as the console
script or the interpreter would run, in a fresh process of its own; only the imports
happened earlier.

- :class:`WarmImgrec` launches the waiting process (one per test process) and writes
  small ``imgrec`` and ``python`` launchers into a folder to put first on PATH.
- A launcher sends its arguments, folder, environment and its three file descriptors
  over a Unix socket, and exits with the command's exit code. It runs the real program
  instead (``exec``) when the waiting process is gone or when the command's environment
  differs in anything read at import time (any variable the waiting process did not
  start with, KERAS_BACKEND=jax for one); the ``python`` launcher also when the command
  line is not ``python -c CODE ...``, ``python -m MODULE ...`` or ``python SCRIPT ...``
  (an interpreter option, or a program read from stdin).
- A command that ends by a signal ends its launcher by the same signal; a command whose
  launcher dies (a block's end kills its process group, a timeout) is
  ended with its own process group.

The fork happens before TensorFlow has run anything (it has started no thread of its
own then); numpy's threads are what ``multiprocessing``'s fork start method copes with.
"""

from __future__ import annotations

import atexit
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

# Variables the launcher may change without falling back to a fresh process: none of them
# is read when imgrec, Keras or TensorFlow is imported. PYTEST_CURRENT_TEST names the test
# that runs: without it here, every test after the one that started the waiting process
# (every docs page but the first) would fall back to fresh processes.
FREE_VARIABLES = ("PWD", "OLDPWD", "SHLVL", "_", "PATH", "PYTEST_CURRENT_TEST")

_LAUNCHER = r"""#!{python} -IS
import json, os, socket, struct, sys
SOCKET, REAL, BASE, PROGRAM = {socket!r}, {real!r}, {base!r}, {program!r}
FREE = {free!r}
def fallback():
    os.execv(REAL, [REAL, *sys.argv[1:]])
env = dict(os.environ)
if {{k: v for k, v in env.items() if k not in FREE}} != BASE:
    fallback()
if PROGRAM == "python":
    args = sys.argv[1:]
    if not args or args[0] == "-" or (args[0] in ("-c", "-m") and len(args) < 2):
        fallback()
    if args[0].startswith("-") and args[0] not in ("-c", "-m"):
        fallback()
    if not args[0].startswith("-") and not os.path.isfile(args[0]):
        fallback()  # a folder or zip to run, or no such file: the interpreter's own words
try:
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(SOCKET)
except OSError:
    fallback()
payload = json.dumps(
    {{"program": PROGRAM, "argv": sys.argv[1:], "cwd": os.getcwd(), "env": env}}
).encode()
socket.send_fds(conn, [struct.pack("!Q", len(payload))], [0, 1, 2])
conn.sendall(payload)
reply = b""
while len(reply) < 4:
    chunk = conn.recv(4 - len(reply))
    if not chunk:
        print("imgrec (warm): the command's process ended without an exit code", file=sys.stderr)
        os._exit(1)
    reply += chunk
code = struct.unpack("!i", reply)[0]
if code < 0:  # the command ended by a signal: end by the same one, as the program would
    import signal
    signal.signal(-code, signal.SIG_DFL)
    os.kill(os.getpid(), -code)
os._exit(code)
"""

_SERVER = r"""
import atexit, json, os, runpy, selectors, signal, socket, struct, sys, threading
import traceback, types
import importlib
import imgrec.cli
import keras
import tensorflow
for module in sys.argv[2:]:  # what the commands will import too (WarmImgrec's preload)
    importlib.import_module(module)

def receive(conn):
    header, fds, _, _ = socket.recv_fds(conn, 8, 3)
    (size,) = struct.unpack("!Q", header)
    payload = b""
    while len(payload) < size:
        chunk = conn.recv(size - len(payload))
        if not chunk:
            raise EOFError
        payload += chunk
    return json.loads(payload), fds

def run_python(argv):
    # What ``python -c CODE``, ``python -m MODULE`` and ``python SCRIPT`` do, with their
    # sys.argv and sys.path[0]; the launcher sent no other form.
    if argv[0] == "-c":
        sys.argv = ["-c", *argv[2:]]
        sys.path[0] = ""
        main = types.ModuleType("__main__")
        sys.modules["__main__"] = main
        exec(compile(argv[1], "<string>", "exec"), main.__dict__)
    elif argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        sys.path[0] = os.getcwd()
        runpy._run_module_as_main(argv[1], alter_argv=True)
    else:  # a script: argv[0] as typed, __file__ absolute, sys.path[0] its folder
        path = os.path.abspath(argv[0])
        sys.argv = list(argv)
        sys.path[0] = os.path.dirname(os.path.realpath(path))
        main = types.ModuleType("__main__")
        main.__file__ = path
        sys.modules["__main__"] = main
        with open(path, "rb") as source:
            code = compile(source.read(), path, "exec")
        exec(code, main.__dict__)
    return 0

def run(request, fds):
    os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    try:
        if request["program"] == "python":
            code = run_python(request["argv"])
        else:
            sys.argv = ["imgrec", *request["argv"]]
            code = imgrec.cli.main(request["argv"])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
        # What the interpreter does at its end, in its order: the threading module's exit
        # hooks (a concurrent.futures or joblib executor stops its workers there) and the
        # wait for non-daemon threads, then atexit's functions. Without the first, an
        # imgrec that ran joblib's workers waits for their idle timeout (300 s).
        threading._shutdown()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
    os._exit(code if isinstance(code, int) else 1)

listener = socket.socket(socket.AF_UNIX)
listener.bind(sys.argv[1])
listener.listen(16)
selector = selectors.DefaultSelector()
selector.register(listener, selectors.EVENT_READ)
children = {}  # pid -> connection to its launcher
print("ready", flush=True)
while True:
    for key, _ in selector.select(timeout=0.1):
        if key.fileobj is listener:
            conn, _ = listener.accept()
            try:
                request, fds = receive(conn)
            except (OSError, EOFError, ValueError):
                conn.close()
                continue
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
            if pid == 0:
                listener.close()
                conn.close()
                run(request, fds)
            for fd in fds:
                os.close(fd)
            children[pid] = conn
            selector.register(conn, selectors.EVENT_READ, pid)
        else:  # a launcher went away before its command ended: end the command
            try:
                os.killpg(key.data, signal.SIGTERM)
            except ProcessLookupError:
                pass
            selector.unregister(key.fileobj)
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        conn = children.pop(pid)
        try:
            selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        try:
            conn.sendall(struct.pack("!i", os.waitstatus_to_exitcode(status)))
        except OSError:
            pass
        conn.close()
"""


class WarmImgrec:
    """The waiting process and the launcher folder; :meth:`close` ends the process."""

    def __init__(
        self,
        folder: Path,
        env: dict[str, str],
        free: tuple[str, ...] = (),
        preload: tuple[str, ...] = (),
    ) -> None:
        """Start the waiting process with ``env``.

        ``free``: more variables (besides ``FREE_VARIABLES``) that a command may set or
        change and still run warm: ones that imgrec reads only while it runs.
        ``preload``: modules to import before waiting (besides imgrec's CLI, Keras and
        TensorFlow), ones the commands would import first thing.
        """
        self.free = (*FREE_VARIABLES, *free)
        folder.mkdir(parents=True, exist_ok=True)
        self.bin = folder / "bin"
        self.bin.mkdir(exist_ok=True)
        socket_path = folder / "imgrec.sock"
        self.log = (folder / "server.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(socket_path), *preload],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the warm imgrec did not start: see {folder / 'server.log'}")
        base = self.base = _fixed(env, self.free)
        programs = {"imgrec": str(Path(sys.executable).parent / "imgrec"), "python": sys.executable}
        for program, real in programs.items():
            launcher = self.bin / program
            launcher.write_text(
                _LAUNCHER.format(
                    python=sys.executable,
                    socket=str(socket_path),
                    real=real,
                    base=base,
                    program=program,
                    free=self.free,
                )
            )
            launcher.chmod(0o755)

    def serves(self, env: dict[str, str]) -> bool:
        """Whether commands run with ``env`` go to the waiting process (else they fall back)."""
        return _fixed(env, self.free) == self.base and self.process.poll() is None

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()


_SHARED: dict[str, WarmImgrec] = {}


def shared(
    name: str, env: dict[str, str], free: tuple[str, ...] = (), preload: tuple[str, ...] = ()
) -> WarmImgrec:
    """The test process's waiting process called ``name``, started on first use with ``env``.

    A test file that ran before in the same process may have changed ``os.environ`` for
    good (a library setting a variable on import): when ``env`` no longer matches the one
    it started with (or it is gone), a new one starts in its place. All end when the test
    process exits.
    """
    warm = _SHARED.get(name)
    if warm is not None and warm.serves(env):
        return warm
    if warm is not None:
        _end(warm)
    elif not _SHARED:
        atexit.register(lambda: [_end(_SHARED.pop(key)) for key in list(_SHARED)])
    folder = Path(tempfile.mkdtemp(prefix=f"warm-{name}-"))
    _SHARED[name] = WarmImgrec(folder, env, free, preload)
    return _SHARED[name]


def _end(warm: WarmImgrec) -> None:
    """End a shared waiting process and remove the temporary folder made for it."""
    warm.close()
    shutil.rmtree(warm.bin.parent, ignore_errors=True)


def _fixed(env: dict[str, str], free: tuple[str, ...]) -> dict[str, str]:
    """``env`` without the variables a launcher may see changed (``free``)."""
    return {k: v for k, v in env.items() if k not in free}
