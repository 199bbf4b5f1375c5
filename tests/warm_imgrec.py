"""``imgrec`` for the docs' blocks without a TensorFlow start per command.

Every ``imgrec`` a docs block runs would import TensorFlow and Keras again (5 to 10 s of
CPU each, dozens of times). Here one process imports them once and waits; each command
is a ``fork`` of it that runs ``imgrec.cli.main`` on the command's arguments, in its
folder, with its environment and its stdin, stdout and stderr. What runs is the same
code as the console script, in a fresh process of its own; only the imports happened
earlier.

- :func:`start` launches the waiting process (one per test process) and writes a small
  ``imgrec`` launcher into a folder to put first on PATH.
- The launcher sends its arguments, folder, environment and its three file descriptors
  over a Unix socket, and exits with the command's exit code. It runs the real ``imgrec``
  instead (``exec``) when the waiting process is gone or when the command's environment
  differs in anything read at import time (any variable the waiting process did not
  start with, KERAS_BACKEND=jax for one).
- A command whose launcher dies (a block's end kills its process group, a timeout) is
  ended with its own process group.

The fork happens before TensorFlow has run anything (it has started no thread of its
own then); numpy's threads are what ``multiprocessing``'s fork start method copes with.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

# Variables the launcher may change without falling back to a fresh process: none of them
# is read when imgrec, Keras or TensorFlow is imported.
FREE_VARIABLES = ("PWD", "OLDPWD", "SHLVL", "_", "PATH")

_LAUNCHER = r"""#!{python} -IS
import json, os, socket, struct, sys
SOCKET, REAL, BASE = {socket!r}, {real!r}, {base!r}
FREE = {free!r}
def fallback():
    os.execv(REAL, [REAL, *sys.argv[1:]])
env = dict(os.environ)
if {{k: v for k, v in env.items() if k not in FREE}} != BASE:
    fallback()
try:
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(SOCKET)
except OSError:
    fallback()
payload = json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(), "env": env}}).encode()
socket.send_fds(conn, [struct.pack("!Q", len(payload))], [0, 1, 2])
conn.sendall(payload)
reply = b""
while len(reply) < 4:
    chunk = conn.recv(4 - len(reply))
    if not chunk:
        print("imgrec (warm): the command's process ended without an exit code", file=sys.stderr)
        os._exit(1)
    reply += chunk
os._exit(struct.unpack("!i", reply)[0])
"""

_SERVER = r"""
import atexit, json, os, selectors, signal, socket, struct, sys, traceback
import imgrec.cli
import keras
import tensorflow

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

def run(request, fds):
    os.setpgid(0, 0)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    sys.argv = ["imgrec", *request["argv"]]
    try:
        code = imgrec.cli.main(request["argv"])
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
        code = 1
    try:
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

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.bin = folder / "bin"
        self.bin.mkdir(exist_ok=True)
        socket_path = folder / "imgrec.sock"
        self.log = (folder / "server.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(socket_path)],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the warm imgrec did not start: see {folder / 'server.log'}")
        real = str(Path(sys.executable).parent / "imgrec")
        base = {k: v for k, v in env.items() if k not in FREE_VARIABLES}
        launcher = self.bin / "imgrec"
        launcher.write_text(
            _LAUNCHER.format(
                python=sys.executable,
                socket=str(socket_path),
                real=real,
                base=base,
                free=FREE_VARIABLES,
            )
        )
        launcher.chmod(0o755)

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
