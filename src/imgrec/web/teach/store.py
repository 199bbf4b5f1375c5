"""Teach projects on disk: class folders of photos, and a hidden ``.teach`` folder beside.

A project is a folder under the projects folder (``imgrec_home()/projects`` by
default)::

    p-3f9a0c1d2e4b/
        cat/s-0123456789abcdef.jpg     one folder per class, one file per sample
        coffee/s-...png
        .teach/project.json            name, creation time, backbone and input size
        .teach/features/...            cached features (imgrec.training.teach)
        .teach/thumbs/s-....png        thumbnails
        .teach/runs/r-.../             a training run: run.json, checkpoint, model.keras

so ``imgrec train p-3f9a0c1d2e4b`` trains on it as on any class folder (hidden
folders are skipped). A class folder copied into the projects folder by hand is a
project as well: its folder name is its id, its files are its samples.

Nothing the network sends becomes a path unchecked: project and sample ids are made
here and looked up in a listing of the folder, never joined; class names are
validated (``check_class_name``) before they name a folder. Every file is written
atomically (``imgrec.core.storage``): a sample is first written under a hidden
temporary name and renamed, so a half-written sample is never listed, and a kill
at any moment leaves each file either whole or absent. Projects are created in a
hidden folder and renamed into place, and deleted by renaming them out of sight
first, for the same reason.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import shutil
import threading
import time
import unicodedata
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from imgrec.core.errors import ImgrecError
from imgrec.core.images import is_image_file
from imgrec.core.storage import imgrec_home, write_bytes_atomic

META = ".teach"
MAX_CLASS_NAME = 64
MAX_PROJECT_NAME = 100
THUMBNAIL_SIDE = 96
# Folder names a data set reader takes for splits, not classes (imgrec.datasets.folders).
RESERVED_CLASS_NAMES = frozenset(
    {"train", "training", "val", "valid", "validation", "test", "testing", "__macosx"}
)
_FORBIDDEN_CHARACTERS = set('/\\:*?"<>|')
_SAMPLE_ID = re.compile(r"s-[0-9a-f]{16}")
_RUN_ID = re.compile(r"r-[0-9a-f]{12}")
# What imgrec.core.storage.atomic_path names a sample while it is written.
_SAMPLE_TEMPORARY = re.compile(r"\.s-[0-9a-f]{16}-[a-z0-9_]{8}\.[a-z]+")


class TeachStoreError(ImgrecError):
    """A project, class or sample request the store refuses (422 unless a subclass says)."""


class InvalidNameError(TeachStoreError):
    """A class or project name that cannot be used: 422."""


class NotFoundError(TeachStoreError):
    """No such project, class, sample or model: 404."""


class ConflictError(TeachStoreError):
    """The request clashes with the project's state (a class exists, a run is on): 409."""


class QuotaError(TeachStoreError):
    """A quota would be passed (images, bytes, classes, projects): 413."""


@dataclass(frozen=True)
class Quota:
    """What one server's projects may hold.

    Args:
        max_projects: projects in the projects folder.
        max_samples: images in one project.
        max_bytes: bytes of images in one project.
        max_classes: classes in one project.
    """

    max_projects: int = 100
    max_samples: int = 2000
    max_bytes: int = 500 * 2**20
    max_classes: int = 50

    def to_json(self) -> dict[str, int]:
        return {
            "max_projects": self.max_projects,
            "max_samples": self.max_samples,
            "max_bytes": self.max_bytes,
            "max_classes": self.max_classes,
        }


def default_projects_dir() -> Path:
    """``imgrec_home()/projects``."""
    return imgrec_home() / "projects"


def check_class_name(name: object) -> str:
    """``name`` as a class name (NFC-normalised), if it can name a class folder.

    Allowed: 1 to 64 characters, Unicode letters and most punctuation. Refused: path
    separators and ``:*?"<>|``, control characters (NUL included), a leading dot
    (``.``, ``..``, hidden folders), leading or trailing spaces, and the names a data
    set reader takes for splits (``train``, ``val``, ``test``...).

    Raises:
        InvalidNameError: why the name cannot be used.
    """
    if not isinstance(name, str):
        raise InvalidNameError(f"a class name must be text, got {type(name).__name__}")
    shown = repr(name[:80])
    name = unicodedata.normalize("NFC", name)
    if not name:
        raise InvalidNameError("a class name cannot be empty")
    if len(name) > MAX_CLASS_NAME:
        raise InvalidNameError(
            f"class name {shown}: longer than {MAX_CLASS_NAME} characters ({len(name)})"
        )
    bad = sorted({c for c in name if c in _FORBIDDEN_CHARACTERS or _is_control(c)})
    if bad:
        listed = " ".join(repr(c) for c in bad)
        raise InvalidNameError(f"class name {shown}: may not contain {listed}")
    if name.startswith("."):
        raise InvalidNameError(f"class name {shown}: may not start with a dot")
    if name != name.strip():
        raise InvalidNameError(f"class name {shown}: may not start or end with a space")
    if name.lower() in RESERVED_CLASS_NAMES:
        raise InvalidNameError(
            f"class name {shown}: reserved (a data set reader takes it for a split)"
        )
    return name


def check_project_name(name: object) -> str:
    """``name`` as a project's display name: 1-100 characters, no control characters.

    Raises:
        InvalidNameError: why not.
    """
    if not isinstance(name, str) or not name.strip():
        raise InvalidNameError("a project needs a name (1 to 100 characters)")
    name = unicodedata.normalize("NFC", name.strip())
    if len(name) > MAX_PROJECT_NAME:
        raise InvalidNameError(f"a project name has at most {MAX_PROJECT_NAME} characters")
    if any(_is_control(c) for c in name):
        raise InvalidNameError("a project name may not contain control characters")
    return name


def _is_control(character: str) -> bool:
    return unicodedata.category(character) in ("Cc", "Cf", "Cs", "Co", "Zl", "Zp")


def utc_now() -> str:
    """The time now, ISO 8601 in UTC to the second (``2026-11-30T15:02:11Z``)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def read_json(path: Path) -> dict[str, Any] | None:
    """A JSON object from ``path``, or None when it is missing or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` as JSON, atomically."""
    write_bytes_atomic(path, json.dumps(data, ensure_ascii=False, indent=1).encode("utf-8"))


@dataclass(frozen=True)
class SampleFile:
    """One stored sample."""

    id: str
    class_name: str
    path: Path
    bytes: int
    added: float

    def to_json(self, project_id: str) -> dict[str, Any]:
        url = f"/api/projects/{project_id}/samples/{self.id}"
        return {
            "id": self.id,
            "class": self.class_name,
            "bytes": self.bytes,
            "added": _utc(self.added),
            "url": url,
            "thumbnail": url + "/thumbnail",
        }


def sample_id_of(path: Path) -> str:
    """A sample's id: its file's stem when the server named it, else one made from the name."""
    if _SAMPLE_ID.fullmatch(path.stem):
        return path.stem
    import hashlib

    return "f-" + hashlib.sha256(path.name.encode("utf-8", "surrogateescape")).hexdigest()[:16]


class Project:
    """One project folder (see the module's docstring). Made by ``ProjectStore``."""

    def __init__(self, store: ProjectStore, path: Path) -> None:
        self.store = store
        self.path = path
        self.id = path.name

    @property
    def meta_dir(self) -> Path:
        return self.path / META

    @property
    def runs_dir(self) -> Path:
        return self.meta_dir / "runs"

    @property
    def features_dir(self) -> Path:
        return self.meta_dir / "features"

    def meta(self) -> dict[str, Any]:
        """``project.json``, with defaults for a folder that has none (copied in by hand)."""
        from imgrec.training.teach import DEFAULT_IMAGE_SIZE, TEACH_BACKBONES

        data = read_json(self.meta_dir / "project.json") or {}
        try:
            created = _utc(self.path.stat().st_mtime)
        except OSError:
            created = utc_now()
        return {
            "name": data.get("name") or self.id,
            "created": data.get("created") or created,
            "backbone": data.get("backbone") or TEACH_BACKBONES[0],
            "image_size": int(data.get("image_size") or DEFAULT_IMAGE_SIZE),
            **{k: v for k, v in data.items() if k not in ("name", "created")},
        }

    def update_meta(self, **changes: Any) -> dict[str, Any]:
        data = self.meta() | changes
        write_json(self.meta_dir / "project.json", data)
        return data

    # Classes ---------------------------------------------------------------------

    def classes(self) -> list[str]:
        """The class folders' names, sorted (the order a model's outputs take)."""
        names = []
        with contextlib.suppress(FileNotFoundError), os.scandir(self.path) as listing:
            for item in listing:
                if item.is_dir(follow_symlinks=False) and _valid_class(item.name):
                    names.append(item.name)
        return sorted(names)

    def class_dir(self, name: str) -> Path:
        """The folder of the existing class ``name``.

        Raises:
            InvalidNameError, NotFoundError.
        """
        name = check_class_name(name)
        if name not in self.classes():
            raise NotFoundError(f"project {self.id}: no class {name!r}")
        return self.path / name

    def add_class(self, name: str) -> str:
        """Create the class ``name`` (validated); return its normalised name.

        Raises:
            InvalidNameError, ConflictError (it exists, maybe in another case),
            QuotaError (too many classes).
        """
        name = check_class_name(name)
        existing = self.classes()
        self._check_new_class(name, existing)
        (self.path / name).mkdir()
        return name

    def _check_new_class(self, name: str, existing: list[str], ignore: str | None = None) -> None:
        clash = [c for c in existing if c.casefold() == name.casefold() and c != ignore]
        if clash:
            raise ConflictError(f"project {self.id}: there is a class {clash[0]!r} already")
        if ignore is None and len(existing) >= self.store.quota.max_classes:
            raise QuotaError(
                f"project {self.id}: a project holds {self.store.quota.max_classes:,} classes "
                "at most"
            )

    def rename_class(self, old: str, new: str) -> str:
        """Rename a class folder (atomic); return the new name.

        Raises:
            InvalidNameError, NotFoundError, ConflictError.
        """
        source = self.class_dir(old)
        new = check_class_name(new)
        if new == source.name:
            return new
        self._check_new_class(new, self.classes(), ignore=source.name)
        os.rename(source, self.path / new)
        return new

    def delete_class(self, name: str) -> None:
        """Delete a class and its samples (out of the listing at once, then from disk)."""
        folder = self.class_dir(name)
        samples = self.samples(folder.name)
        self._discard(folder)
        for sample in samples:
            self._forget_sample(sample.id)

    # Samples ---------------------------------------------------------------------

    def samples(self, class_name: str | None = None) -> list[SampleFile]:
        """The samples of one class or of all, oldest first (then by id)."""
        classes = [self.class_dir(class_name).name] if class_name is not None else self.classes()
        found = []
        for name in classes:
            with contextlib.suppress(FileNotFoundError), os.scandir(self.path / name) as listing:
                for item in listing:
                    if not is_image_file(item.name) or not item.is_file(follow_symlinks=False):
                        continue
                    stat = item.stat(follow_symlinks=False)
                    path = Path(item.path)
                    found.append(
                        SampleFile(sample_id_of(path), name, path, stat.st_size, stat.st_mtime)
                    )
        return sorted(found, key=lambda s: (s.added, s.id))

    def find_sample(self, sample_id: str) -> SampleFile:
        """The sample called ``sample_id``, looked up in the listing.

        Raises:
            NotFoundError.
        """
        for sample in self.samples():
            if sample.id == sample_id:
                return sample
        raise NotFoundError(f"project {self.id}: no sample {sample_id!r}")

    def usage(self) -> tuple[int, int]:
        """Samples and bytes in the project."""
        samples = self.samples()
        return len(samples), sum(s.bytes for s in samples)

    def add_samples(self, class_name: str, images: list[tuple[bytes, str]]) -> list[SampleFile]:
        """Store images in a class (created if missing); every quota is checked first.

        Args:
            class_name: the class (validated).
            images: (the file's bytes, its extension such as ``.jpg``), already known
                to be images.

        Raises:
            InvalidNameError, QuotaError, ConflictError.
        """
        name = check_class_name(class_name)
        count, size = self.usage()
        quota = self.store.quota
        if count + len(images) > quota.max_samples:
            raise QuotaError(
                f"project {self.id}: a project holds {quota.max_samples:,} images at most "
                f"({count:,} now, {len(images):,} more asked)"
            )
        added_bytes = sum(len(data) for data, _ in images)
        if size + added_bytes > quota.max_bytes:
            raise QuotaError(
                f"project {self.id}: a project holds {quota.max_bytes:,} bytes of images at "
                f"most ({size:,} now, {added_bytes:,} more asked)"
            )
        if name not in self.classes():
            self.add_class(name)
        stored = []
        for data, extension in images:
            sample_id = "s-" + secrets.token_hex(8)
            path = self.path / name / f"{sample_id}{extension}"
            write_bytes_atomic(path, data)
            stat = path.stat()
            stored.append(SampleFile(sample_id, name, path, stat.st_size, stat.st_mtime))
        return stored

    def delete_sample(self, sample_id: str) -> None:
        sample = self.find_sample(sample_id)
        sample.path.unlink(missing_ok=True)
        self._forget_sample(sample.id)

    def _forget_sample(self, sample_id: str) -> None:
        (self.meta_dir / "thumbs" / f"{sample_id}.png").unlink(missing_ok=True)
        if self.features_dir.is_dir():
            for folder in self.features_dir.iterdir():
                for path in folder.glob(f"{sample_id}.*.npy"):
                    path.unlink(missing_ok=True)

    def thumbnail(self, sample: SampleFile) -> bytes:
        """A PNG of the sample, its longest side at most 96 pixels (made once, kept)."""
        path = self.meta_dir / "thumbs" / f"{sample.id}.png"
        with contextlib.suppress(OSError):
            return path.read_bytes()
        from imgrec.core.images import load_image

        pixels = load_image(sample.path, min_side=THUMBNAIL_SIDE)
        image = Image.fromarray(pixels)
        image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        data = buffer.getvalue()
        write_bytes_atomic(path, data)
        return data

    def write_zip(self, out: io.BufferedIOBase | Any) -> None:
        """Every sample into a zip in class-folder layout: ``CLASS/FILE``."""
        with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
            for sample in self.samples():
                with contextlib.suppress(OSError):
                    archive.write(sample.path, f"{sample.class_name}/{sample.path.name}")

    def _discard(self, path: Path) -> None:
        """Take ``path`` out of every listing at once (a rename), then delete it."""
        trash = self.store.root / f".trash-{secrets.token_hex(6)}"
        os.rename(path, trash)
        shutil.rmtree(trash, ignore_errors=True)

    # Runs ------------------------------------------------------------------------

    def run_dir(self, run_id: str) -> Path:
        if not _RUN_ID.fullmatch(run_id):
            raise NotFoundError(f"project {self.id}: no run {run_id!r}")
        return self.runs_dir / run_id

    def latest_run_id(self) -> str | None:
        data = read_json(self.meta_dir / "latest_run.json")
        run_id = data.get("run") if data else None
        return run_id if isinstance(run_id, str) and _RUN_ID.fullmatch(run_id) else None

    def model_pointer(self) -> dict[str, Any] | None:
        """``model.json``: the run whose model is the project's, and its classes."""
        data = read_json(self.meta_dir / "model.json")
        if not data or not _RUN_ID.fullmatch(str(data.get("run", ""))):
            return None
        if not (self.runs_dir / data["run"] / "model.keras").is_file():
            return None
        return data

    def model_path(self) -> Path:
        """The project's latest trained model.

        Raises:
            NotFoundError: the project has no model yet.
        """
        pointer = self.model_pointer()
        if pointer is None:
            raise NotFoundError(f"project {self.id}: no trained model yet; train it first")
        return self.runs_dir / pointer["run"] / "model.keras"


def _valid_class(name: str) -> bool:
    try:
        return check_class_name(name) == name
    except InvalidNameError:
        return False


class ProjectStore:
    """The projects folder.

    Args:
        root: the folder (created when missing).
        quota: what the projects may hold.
        sweep: delete what a killed server left half made or half deleted (only the
            server does; a training process must not).
    """

    def __init__(
        self, root: str | os.PathLike, quota: Quota | None = None, *, sweep: bool = True
    ) -> None:
        self.root = Path(root).expanduser()
        self.root.mkdir(parents=True, exist_ok=True)
        self.quota = quota or Quota()
        self._locks: dict[str, threading.RLock] = {}
        self._guard = threading.Lock()
        if sweep:
            self._sweep()

    def _sweep(self) -> None:
        """Remove what a kill left: half-made or half-deleted projects, half-written samples.

        Only names this module's writers make are touched.
        """
        for item in self.root.iterdir():
            if item.name.startswith((".trash-", ".new-")) and item.is_dir():
                shutil.rmtree(item, ignore_errors=True)
        for project in self.projects():
            for name in project.classes():
                for path in (project.path / name).iterdir():
                    if _SAMPLE_TEMPORARY.fullmatch(path.name) and path.is_file():
                        path.unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self, project_id: str) -> Iterator[None]:
        """Serialise changes to one project within this server."""
        with self._guard:
            lock = self._locks.setdefault(project_id, threading.RLock())
        with lock:
            yield

    def projects(self) -> list[Project]:
        """Every project, newest first."""
        found = []
        with os.scandir(self.root) as listing:
            for item in listing:
                if not item.name.startswith(".") and item.is_dir(follow_symlinks=False):
                    found.append(Project(self, Path(item.path)))
        return sorted(found, key=lambda p: (p.meta()["created"], p.id), reverse=True)

    def get(self, project_id: str) -> Project:
        """The project called ``project_id``, looked up in the listing.

        Raises:
            NotFoundError.
        """
        for project in self.projects():
            if project.id == project_id:
                return project
        raise NotFoundError(f"no project {project_id!r}")

    def create(
        self,
        name: str,
        *,
        backbone: str | None = None,
        image_size: int | None = None,
        classes: list[str] | tuple[str, ...] = (),
    ) -> Project:
        """A new project with a server-made id (``p-`` and 12 hex digits).

        Raises:
            InvalidNameError, QuotaError, TeachError (an unknown backbone or size).
        """
        from imgrec.training.teach import DEFAULT_IMAGE_SIZE, TEACH_BACKBONES, TeachOptions

        name = check_project_name(name)
        names = [check_class_name(c) for c in classes]
        if len({n.casefold() for n in names}) != len(names):
            raise ConflictError("the same class is named twice")
        if len(names) > self.quota.max_classes:
            raise QuotaError(f"a project holds {self.quota.max_classes:,} classes at most")
        backbone = backbone or TEACH_BACKBONES[0]
        image_size = image_size or DEFAULT_IMAGE_SIZE
        TeachOptions(backbone=backbone, image_size=image_size).check()
        with self._guard:
            if len(self.projects()) >= self.quota.max_projects:
                raise QuotaError(
                    f"the server holds {self.quota.max_projects:,} projects at most; "
                    "delete one first"
                )
            project_id = "p-" + secrets.token_hex(6)
            staging = self.root / f".new-{project_id}"
            (staging / META).mkdir(parents=True)
            for class_name in names:
                (staging / class_name).mkdir()
            meta = {
                "name": name,
                "created": utc_now(),
                "backbone": backbone,
                "image_size": image_size,
            }
            write_json(staging / META / "project.json", meta)
            os.rename(staging, self.root / project_id)
        return Project(self, self.root / project_id)

    def delete(self, project_id: str) -> None:
        project = self.get(project_id)
        project._discard(project.path)
