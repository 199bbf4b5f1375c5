"""Training runs of Teach projects, each in a child process: ``RunManager``.

Why a child process: training imports and runs TensorFlow for seconds to minutes;
in a child the server stays responsive, a crash in native code takes only the run
down, cancelling is a kill, and the run's state is a file (``run.json``, rewritten
atomically by the child at every step) that any server can read, this one or one
started after it died. A kill -9 of the server ends the child too (it watches its
standard input and its parent); the next server finds the run "active" on disk with
no child of its own and reports it ``interrupted``, resumable from its last epoch.

To make "Train" answer in seconds, one child is started ahead of need (``prewarm``):
it imports TensorFlow and loads the backbone, then waits for a job on its standard
input. A run takes it; a new one is started when the run is over.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
import sys
import threading
from dataclasses import dataclass
from typing import Any

from imgrec.web.limits import ServerBusyError
from imgrec.web.teach.store import (
    ConflictError,
    NotFoundError,
    Project,
    TeachStoreError,
    read_json,
    utc_now,
    write_json,
)
from imgrec.web.teach.worker import ACTIVE_STATES

RESUMABLE_STATES = ("interrupted", "cancelled")
_WORKER = "imgrec.web.teach.worker"


@dataclass
class _Child:
    process: subprocess.Popen
    backbone: str | None
    size: int | None
    run: tuple[Project, str] | None = None
    cancelled: bool = False


class RunManager:
    """Starts, follows and cancels training runs.

    Args:
        max_runs: runs that may train at once on this server (one more gets a 503).
        prewarm: keep one child started ahead of need.
    """

    def __init__(self, max_runs: int = 1, prewarm: bool = True) -> None:
        if max_runs < 1:
            raise ValueError(f"max_runs must be at least 1, got {max_runs}")
        self.max_runs = max_runs
        self.prewarm_enabled = prewarm
        self._lock = threading.Lock()
        self._running: dict[str, _Child] = {}  # by project path
        self._spare: _Child | None = None
        self._closed = False

    # Children --------------------------------------------------------------------

    def _spawn(self, backbone: str | None, size: int | None) -> _Child:
        command = [sys.executable, "-m", _WORKER, "--parent", str(os.getpid())]
        if backbone:
            command += ["--backbone", backbone, "--size", str(size)]
        env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            close_fds=True,
        )
        return _Child(process, backbone, size)

    def prewarm(self, backbone: str, size: int) -> None:
        """Have a child ready for ``backbone`` at ``size`` (if prewarming is on)."""
        if not self.prewarm_enabled:
            return
        with self._lock:
            if self._closed:
                return
            spare = self._spare
            if spare is not None and spare.process.poll() is None:
                if (spare.backbone, spare.size) == (backbone, size) or self._running:
                    return
                _close_stdin(spare.process)
            self._spare = self._spawn(backbone, size)

    def close(self) -> None:
        """Let the spare child go (its input ends); running children end with the server."""
        with self._lock:
            self._closed = True
            if self._spare is not None:
                _close_stdin(self._spare.process)
                self._spare = None

    # Runs ------------------------------------------------------------------------

    def start(self, project: Project, options: dict[str, Any], resume: bool = False) -> dict:
        """Start a run of ``project`` with ``options`` (checked: ``TeachOptions``).

        Raises:
            ConflictError: a run of this project is active; nothing to resume.
            TeachError: bad options, or fewer than two classes with samples.
            ServerBusyError: ``max_runs`` runs are training.
        """
        from imgrec.training.teach import TeachError, TeachOptions

        with self._lock:
            current = self._reconcile(project)
            if current is not None and current["state"] in ACTIVE_STATES:
                raise ConflictError(
                    f"project {project.id}: run {current['id']} is {current['state']}; "
                    "cancel it first"
                )
            if resume:
                if current is None or current["state"] not in RESUMABLE_STATES:
                    raise ConflictError(
                        f"project {project.id}: no interrupted or cancelled run to resume"
                    )
                run = current | {"state": "queued", "error": None, "finished": None}
                run["resumed"] = run.get("resumed", 0) + 1
                checked = TeachOptions.from_json(run["options"]).check()
            else:
                checked = TeachOptions.from_json(options).check()
                counts = [len(project.samples(c)) for c in project.classes()]
                if sum(1 for count in counts if count) < 2:
                    raise TeachError(
                        f"project {project.id}: a classifier needs samples in at least two classes"
                    )
                run = _new_run(checked.to_json())
            if len(self._running) >= self.max_runs:
                raise ServerBusyError(
                    f"the server trains {self.max_runs} run(s) at once; try again when one ends"
                )
            run_dir = project.run_dir(run["id"])
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_dir / "run.json", run)
            write_json(project.meta_dir / "latest_run.json", {"run": run["id"]})
            child = self._take_spare(checked.backbone, checked.image_size)
            child.run = (project, run["id"])
            self._running[str(project.path)] = child
            job = {"project": str(project.path), "run": run["id"], "resume": resume}
            try:
                child.process.stdin.write(json.dumps(job).encode() + b"\n")
                child.process.stdin.flush()
            except OSError:
                pass  # it died already: the watcher reports the run interrupted
        threading.Thread(target=self._watch, args=(child,), daemon=True).start()
        return run

    def _take_spare(self, backbone: str, size: int) -> _Child:
        spare, self._spare = self._spare, None
        if spare is not None and spare.process.poll() is None:
            if (spare.backbone, spare.size) == (backbone, size):
                return spare
            _close_stdin(spare.process)
        # With none ready, the child loads the backbone as its job's first step.
        return self._spawn(None, None)

    def _watch(self, child: _Child) -> None:
        child.process.wait()
        assert child.run is not None
        project, _ = child.run
        with self._lock:
            self._reconcile(project, exit_code=child.process.returncode, ended=child)
            if self._running.get(str(project.path)) is child:
                del self._running[str(project.path)]
        if child.run is not None:
            meta = project.meta()
            with contextlib.suppress(OSError):
                self.prewarm(meta["backbone"], meta["image_size"])

    def cancel(self, project: Project) -> dict:
        """Stop the project's active run (its last finished epoch is kept: resumable).

        Raises:
            ConflictError: no run is active.
        """
        with self._lock:
            child = self._running.get(str(project.path))
            current = self._reconcile(project)
            if child is None or current is None or current["state"] not in ACTIVE_STATES:
                raise ConflictError(f"project {project.id}: no run is active")
            child.cancelled = True
            child.process.kill()
        child.process.wait()
        with self._lock:
            run = self.current(project, locked=True)
            if run is not None and run["state"] in ACTIVE_STATES:
                run = _end(run, "cancelled", "cancelled by a request")
                write_json(project.run_dir(run["id"]) / "run.json", run)
            return run

    def current(self, project: Project, *, locked: bool = False) -> dict | None:
        """The project's latest run, as it stands (an orphaned active run: interrupted)."""
        if locked:
            return self._reconcile(project)
        with self._lock:
            return self._reconcile(project)

    def active(self, project: Project) -> bool:
        with self._lock:
            child = self._running.get(str(project.path))
            return child is not None and child.process.poll() is None

    def _reconcile(
        self, project: Project, exit_code: int | None = None, ended: _Child | None = None
    ) -> dict | None:
        run_id = project.latest_run_id()
        if run_id is None:
            return None
        path = project.run_dir(run_id) / "run.json"
        run = read_json(path)
        if run is None:
            return None
        child = ended or self._running.get(str(project.path))
        alive = child is not None and child.process.poll() is None
        if run.get("state") in ACTIVE_STATES and not alive:
            if child is not None and child.cancelled:
                run = _end(run, "cancelled", "cancelled by a request")
            else:
                why = (
                    f"the training process ended (exit code {exit_code})"
                    if exit_code is not None
                    else "the server stopped during the run"
                )
                run = _end(run, "interrupted", why)
            write_json(path, run)
        return run

    def forget(self, project: Project) -> None:
        """Kill the project's run, if any (before the project is deleted)."""
        with self._lock:
            child = self._running.get(str(project.path))
            if child is not None:
                child.cancelled = True
                child.process.kill()
        if child is not None:
            child.process.wait()


def _new_run(options: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": "r-" + secrets.token_hex(6),
        "state": "queued",
        "options": options,
        "started": utc_now(),
        "finished": None,
        "progress": {"stage": None, "done": 0, "total": 0},
        "epoch": 0,
        "epochs": options["epochs"],
        "history": [],
        "error": None,
        "seconds": None,
        "metrics": None,
        "resumable": False,
    }


def _end(run: dict[str, Any], state: str, why: str) -> dict[str, Any]:
    return run | {
        "state": state,
        "error": why,
        "finished": utc_now(),
        "resumable": True,
        "progress": run.get("progress") or {"stage": None, "done": 0, "total": 0},
    }


def _close_stdin(process: subprocess.Popen) -> None:
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.close()


def public_run(run: dict[str, Any] | None, project: Project) -> dict[str, Any] | None:
    """A run as the API shows it: ``active`` added, mistakes with their thumbnails."""
    if run is None:
        return None
    out = dict(run)
    out["active"] = run.get("state") in ACTIVE_STATES
    out["resumable"] = bool(run.get("resumable")) and run.get("state") in RESUMABLE_STATES
    metrics = run.get("metrics")
    if metrics:
        metrics = dict(metrics)
        base = f"/api/projects/{project.id}/samples/"
        metrics["mistakes"] = [
            m | {"thumbnail": f"{base}{m['sample']}/thumbnail"} for m in metrics.get("mistakes", [])
        ]
        out["metrics"] = metrics
    return out


__all__ = ["NotFoundError", "RunManager", "TeachStoreError", "public_run"]
