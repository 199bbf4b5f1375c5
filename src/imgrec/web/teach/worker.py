"""The child process that trains one Teach run: ``python -m imgrec.web.teach.worker``.

Started by ``imgrec.web.teach.runs.RunManager`` ahead of need (it imports TensorFlow
and loads the project's backbone while nobody waits), it then reads one job from
its standard input, one JSON line ``{"project": DIR, "run": ID, "resume": bool}``,
runs it and exits. Progress goes to the run's ``run.json``, rewritten atomically at
each step (features computed, each epoch, the end), so the server (or a server
started after this one died) always reads a whole state.

It exits when its parent goes: at the end of its standard input (the server's end
of the pipe closes when the server exits, however it dies) or when its parent
process changes. A killed worker leaves its run "active" on disk; the server that
finds it so with no worker of its own reports it interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ACTIVE_STATES = ("queued", "features", "training")


def _exit_with_parent(parent: int) -> None:
    def read_to_end() -> None:
        try:
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        os._exit(3)

    def watch_parent() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=read_to_end, daemon=True).start()
    threading.Thread(target=watch_parent, daemon=True).start()


class _RunFile:
    """The run's ``run.json``: held in memory, written whole on each change."""

    def __init__(self, path: Path) -> None:
        from imgrec.web.teach.store import read_json

        self.path = path
        self.data: dict[str, Any] = read_json(path) or {}
        self._last = 0.0

    def update(self, force: bool = True, **changes: Any) -> None:
        from imgrec.web.teach.store import write_json

        self.data.update(changes)
        now = time.monotonic()
        if force or now - self._last > 0.25:
            write_json(self.path, self.data)
            self._last = now


def run_job(project_dir: Path, run_id: str, backbone: Any, resume: bool) -> int:
    """Train run ``run_id`` of the project in ``project_dir``; 0 when it is done."""
    from imgrec.training.teach import (
        FeatureBackbone,
        FeatureStore,
        Sample,
        TeachOptions,
        TeachRun,
        ensure_features,
        features_dir,
        save_taught_model,
    )
    from imgrec.web.teach.store import Project, ProjectStore, utc_now, write_json

    project = Project(ProjectStore(project_dir.parent, sweep=False), project_dir)
    run_dir = project.run_dir(run_id)
    run = _RunFile(run_dir / "run.json")
    start = time.perf_counter()
    try:
        options = TeachOptions.from_json(run.data.get("options", {})).check()
        stored = project.samples()
        class_names = sorted({s.class_name for s in stored})
        labels = {name: index for index, name in enumerate(class_names)}
        samples = [Sample(s.id, s.path, labels[s.class_name]) for s in stored]
        run.update(state="features", progress={"stage": "features", "done": 0, "total": 0})
        if backbone is None or (backbone.name, backbone.size) != (
            options.backbone,
            options.image_size,
        ):
            backbone = FeatureBackbone(options.backbone, options.image_size)
        store = FeatureStore(features_dir(project.features_dir, backbone.name, backbone.size))

        def on_progress(done: int, total: int) -> None:
            progress = {"stage": "features", "done": done, "total": total}
            run.update(force=done == total, progress=progress)

        features = ensure_features(backbone, store, samples, options.views, on_progress)
        epochs = options.epochs
        run.update(state="training", progress={"stage": "training", "done": 0, "total": epochs})

        def on_epoch(entry: dict[str, Any]) -> None:
            history = [*run.data.get("history", []), entry]
            progress = {"stage": "training", "done": entry["epoch"], "total": epochs}
            run.update(
                force=entry["epoch"] == epochs,
                history=history,
                epoch=entry["epoch"],
                progress=progress,
            )

        teach = TeachRun(
            backbone,
            class_names,
            samples,
            features,
            options,
            on_epoch=on_epoch,
            checkpoint=run_dir / "checkpoint.npz",
            model_name=project.meta()["name"],
        )
        result = teach.train(resume=run.data.get("history", []) if resume else None)
        run.update(progress={"stage": "saving", "done": 0, "total": 1})
        save_taught_model(result.model, run_dir / "model.keras")
        write_json(
            project.meta_dir / "model.json",
            {"run": run_id, "classes": class_names, "finished": utc_now()},
        )
        run.update(
            state="done",
            progress={"stage": None, "done": 1, "total": 1},
            history=result.history,
            epoch=result.epochs_done,
            metrics=result.metrics,
            finished=utc_now(),
            seconds=round(time.perf_counter() - start, 3),
            resumable=False,
        )
        return 0
    except Exception as err:
        (run_dir / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
        run.update(
            state="failed",
            error=str(err) or type(err).__name__,
            finished=utc_now(),
            seconds=round(time.perf_counter() - start, 3),
            resumable=False,
        )
        return 1


def main(argv: list[str] | None = None) -> int:
    """Prepare (TensorFlow, a backbone), wait for one job, run it."""
    parser = argparse.ArgumentParser(prog="imgrec.web.teach.worker")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--size", type=int, default=None)
    args = parser.parse_args(argv)
    if os.getppid() != args.parent:
        return 3
    line_holder: list[bytes] = []
    ready = threading.Event()

    def read_job() -> None:
        line_holder.append(sys.stdin.buffer.readline())
        ready.set()

    threading.Thread(target=read_job, daemon=True).start()
    backbone = None
    if args.backbone:
        try:
            from imgrec.training.teach import FeatureBackbone

            backbone = FeatureBackbone(args.backbone, args.size)
        except Exception:
            backbone = None
    while not ready.wait(0.5):
        if os.getppid() != args.parent:
            return 3
    line = line_holder[0]
    if not line.strip():
        return 0
    _exit_with_parent(args.parent)
    job = json.loads(line)
    return run_job(Path(job["project"]), job["run"], backbone, bool(job.get("resume")))


if __name__ == "__main__":
    sys.exit(main())
