"""What the Teach routes share: the store, the runs, the feature thread, the models.

``TeachService`` is made by ``imgrec.web.app.create_app`` and kept on
``app.state.teach``. The projects folder is created on the first Teach request, not
when the application is built.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imgrec.web.catalog import CatalogEntry
from imgrec.web.teach.features import FeaturePrefetcher
from imgrec.web.teach.runs import RunManager, public_run
from imgrec.web.teach.store import (
    NotFoundError,
    Project,
    ProjectStore,
    Quota,
    default_projects_dir,
)

CATALOG_PREFIX = "teach:"
_MODELS_KEPT = 2


@dataclass(frozen=True)
class TeachConfig:
    """How a server runs the Teach demo (``create_app(teach=...)``).

    Args:
        projects_dir: the projects folder (default ``imgrec_home()/projects``, made on
            the first Teach request).
        quota: what the projects may hold.
        workers: compute a sample's features when it is added, and keep a training
            process started ahead of need; False leaves both to "Train".
        max_runs: runs that may train at once (one more gets a 503).
    """

    projects_dir: str | os.PathLike | None = None
    quota: Quota = field(default_factory=Quota)
    workers: bool = True
    max_runs: int = 1


class TeachService:
    """The Teach demo's state in one server.

    Args:
        config: the settings.
        lock: the server's lock around Keras calls.
    """

    def __init__(self, config: TeachConfig | None = None, lock: threading.Lock | None = None):
        config = config or TeachConfig()
        projects_dir = config.projects_dir
        self.projects_dir = Path(projects_dir).expanduser() if projects_dir else None
        self.quota = config.quota
        self.lock = lock if lock is not None else threading.Lock()
        self.runs = RunManager(max_runs=config.max_runs, prewarm=config.workers)
        self.features = FeaturePrefetcher(self.lock, enabled=config.workers)
        self._store: ProjectStore | None = None
        self._store_lock = threading.Lock()
        self._models: OrderedDict[tuple[str, int, int], Any] = OrderedDict()
        self._models_lock = threading.Lock()
        self._exports_lock = threading.Lock()

    @property
    def store(self) -> ProjectStore:
        with self._store_lock:
            if self._store is None:
                self._store = ProjectStore(self.projects_dir or default_projects_dir(), self.quota)
            return self._store

    def close(self) -> None:
        self.runs.close()
        self.features.close()

    # The network menu -------------------------------------------------------------

    def catalog_entries(self) -> list[CatalogEntry]:
        """Each project's latest model, as ``teach:ID`` (nothing before a first request)."""
        if self._store is None and self.projects_dir is None:
            root = default_projects_dir()
            if not root.is_dir():
                return []
        entries = []
        for project in self.store.projects():
            pointer = project.model_pointer()
            if pointer is None:
                continue
            path = project.runs_dir / pointer["run"] / "model.keras"
            try:
                stat = path.stat()
            except OSError:
                continue
            entries.append(
                CatalogEntry(
                    CATALOG_PREFIX + project.id,
                    f"{project.meta()['name']} (taught)",
                    "teach",
                    str(path),
                    (stat.st_size, stat.st_mtime_ns),
                )
            )
        return entries

    # Projects as the API shows them ----------------------------------------------

    def project_json(self, project: Project) -> dict[str, Any]:
        """A project: classes and counts, its run, its model and their downloads."""
        meta = project.meta()
        samples = project.samples()
        counts: dict[str, int] = dict.fromkeys(project.classes(), 0)
        for sample in samples:
            counts[sample.class_name] = counts.get(sample.class_name, 0) + 1
        base = f"/api/projects/{project.id}"
        classes = [
            {"name": name, "samples": count, "url": f"{base}/classes/{_quote(name)}"}
            for name, count in sorted(counts.items())
        ]
        pointer = project.model_pointer()
        model = None
        if pointer is not None:
            model = {
                "run": pointer["run"],
                "classes": pointer.get("classes", []),
                "catalog_name": CATALOG_PREFIX + project.id,
                "downloads": {
                    "keras": f"{base}/model.keras",
                    "onnx": f"{base}/model.onnx",
                    "onnx_sidecar": f"{base}/model.onnx.json",
                    "tflite": f"{base}/model.tflite",
                },
            }
        quota = self.quota
        return {
            "id": project.id,
            "name": meta["name"],
            "created": meta["created"],
            "backbone": meta["backbone"],
            "image_size": meta["image_size"],
            "classes": classes,
            "samples": len(samples),
            "bytes": sum(s.bytes for s in samples),
            "limits": {
                "max_samples": quota.max_samples,
                "max_bytes": quota.max_bytes,
                "max_classes": quota.max_classes,
            },
            "run": public_run(self.runs.current(project), project),
            "model": model,
            "samples_zip": f"{base}/samples.zip",
        }

    def summary_json(self, project: Project) -> dict[str, Any]:
        """A project in the list: counts and state only."""
        meta = project.meta()
        run = self.runs.current(project)
        return {
            "id": project.id,
            "name": meta["name"],
            "created": meta["created"],
            "classes": len(project.classes()),
            "samples": len(project.samples()),
            "state": run["state"] if run else None,
            "has_model": project.model_pointer() is not None,
        }

    # The taught model ---------------------------------------------------------------

    def model(self, project: Project) -> Any:
        """The project's latest model, loaded (Keras; a few kept), for predictions."""
        from imgrec.models.loading import load_model

        path = project.model_path()
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._models_lock:
            if key in self._models:
                self._models.move_to_end(key)
                return self._models[key]
        with self.lock:
            model = load_model(path)
        with self._models_lock:
            self._models[key] = model
            while len(self._models) > _MODELS_KEPT:
                self._models.popitem(last=False)
        return model

    def export(self, project: Project, format: str) -> Path:
        """The latest model's ``format`` export (``onnx``, ``tflite``), made once per run.

        Raises:
            NotFoundError: no model yet.
            ModelError, ImgrecError: the export failed or its tools are missing.
        """
        from imgrec.deploy.exporter import export

        model = project.model_path()
        out = model.with_suffix("." + format)
        with self._exports_lock:
            if not out.is_file() or not Path(str(out) + ".json").is_file():
                export(model, out, format=format)
        return out


def _quote(name: str) -> str:
    import urllib.parse

    return urllib.parse.quote(name, safe="")


__all__ = ["CATALOG_PREFIX", "NotFoundError", "TeachConfig", "TeachService"]
