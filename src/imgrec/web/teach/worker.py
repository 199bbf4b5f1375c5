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


def _watch_parent(parent: int) -> None:
    """Exit at once when the parent process is gone (checked twice a second)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(3)

    threading.Thread(target=watch, daemon=True).start()


def _read_job() -> tuple[threading.Event, list[bytes]]:
    """Read the job line in the background; then exit when the input ends (the server
    is gone, however it died). An input that ends before a job: exit at once."""
    got = threading.Event()
    box: list[bytes] = []

    def read() -> None:
        try:
            line = sys.stdin.buffer.readline()
            if not line.strip():
                os._exit(0)
            box.append(line)
            got.set()
            while sys.stdin.buffer.read(4096):
                pass
        except (OSError, ValueError):
            pass
        os._exit(3)

    threading.Thread(target=read, daemon=True).start()
    return got, box


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
    from imgrec.web.teach.store import Project, ProjectStore, utc_now

    project = Project(ProjectStore(project_dir.parent, sweep=False), project_dir)
    run_dir = project.run_dir(run_id)
    run = _RunFile(run_dir / "run.json")
    start = time.perf_counter()
    try:
        _train(project, run, backbone, resume)
    except Exception as err:  # every failure is the run's, reported in it
        (run_dir / "error.txt").write_text(traceback.format_exc(), encoding="utf-8")
        run.update(
            state="failed",
            error=str(err) or type(err).__name__,
            finished=utc_now(),
            seconds=round(time.perf_counter() - start, 3),
            resumable=False,
        )
        return 1
    run.update(state="done", seconds=round(time.perf_counter() - start, 3))
    return 0


def _features(project: Any, run: _RunFile, backbone: Any, options: Any, samples: list) -> tuple:
    """The backbone (loaded unless the warm one fits) and every sample's features."""
    from imgrec.training.teach import FeatureBackbone, FeatureStore, ensure_features, features_dir

    run.update(state="features", progress={"stage": "features", "done": 0, "total": 0})
    wanted = (options.backbone, options.image_size)
    if backbone is None or (backbone.name, backbone.size) != wanted:
        backbone = FeatureBackbone(*wanted)
    store = FeatureStore(features_dir(project.features_dir, *wanted))

    def on_progress(done: int, total: int) -> None:
        progress = {"stage": "features", "done": done, "total": total}
        run.update(force=done == total, progress=progress)

    return backbone, ensure_features(backbone, store, samples, options.views, on_progress)


def _train(project: Any, run: _RunFile, backbone: Any, resume: bool) -> None:
    """Features, the new layer, the saved model; progress into ``run`` at each step."""
    from imgrec.training.teach import Sample, TeachOptions, TeachRun, save_taught_model
    from imgrec.web.teach.store import utc_now, write_json

    options = TeachOptions.from_json(run.data.get("options", {})).check()
    stored = project.samples()
    class_names = sorted({s.class_name for s in stored})
    labels = {name: index for index, name in enumerate(class_names)}
    samples = [Sample(s.id, s.path, labels[s.class_name]) for s in stored]
    backbone, features = _features(project, run, backbone, options, samples)
    epochs = options.epochs
    run.update(state="training", progress={"stage": "training", "done": 0, "total": epochs})

    def on_epoch(entry: dict[str, Any]) -> None:
        progress = {"stage": "training", "done": entry["epoch"], "total": epochs}
        run.update(
            force=entry["epoch"] == epochs,
            history=list(teach.history),  # entry is in it; after a resume, from the checkpoint
            epoch=entry["epoch"],
            progress=progress,
        )

    run_dir = run.path.parent
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
    run_id = run_dir.name
    pointer = {"run": run_id, "classes": class_names, "finished": utc_now()}
    write_json(project.meta_dir / "model.json", pointer)
    run.update(
        force=False,
        progress={"stage": None, "done": 1, "total": 1},
        history=result.history,
        epoch=result.epochs_done,
        metrics=result.metrics,
        finished=pointer["finished"],
        resumable=False,
    )


def main(argv: list[str] | None = None) -> int:
    """Prepare (TensorFlow, a backbone), wait for one job, run it."""
    parser = argparse.ArgumentParser(prog="imgrec.web.teach.worker")
    parser.add_argument("--parent", type=int, required=True)
    parser.add_argument("--backbone", default=None)
    parser.add_argument("--size", type=int, default=None)
    args = parser.parse_args(argv)
    if os.getppid() != args.parent:
        return 3
    _watch_parent(args.parent)
    got, box = _read_job()
    backbone = None
    if args.backbone:
        try:
            from imgrec.training.teach import FeatureBackbone

            backbone = FeatureBackbone(args.backbone, args.size)
        except Exception:  # the job loads it again, and reports why not
            backbone = None
    got.wait()
    line = box[0]
    job = json.loads(line)
    return run_job(Path(job["project"]), job["run"], backbone, bool(job.get("resume")))


if __name__ == "__main__":
    sys.exit(main())
