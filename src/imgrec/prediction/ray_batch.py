"""``imgrec predict --engine ray``: batch inference on Ray Data, on a laptop or a cluster.

``predict_ray`` lists the images of a source (a folder, a glob, a text file of paths, a
URI that pyarrow's file systems read), skips those the output already holds
(``resume``), and sends the rest through a pool of Ray Data workers, each holding one
runtime loaded once (``imgrec.deploy.batch_worker``: ONNX Runtime by default, from
bytes the driver sends, so a worker imports no TensorFlow). Images are read and
decoded by imgrec's safe loader inside the workers; a broken file becomes a row with
its error. Rows are written as they come back (``imgrec.core.tables.ResultsFile``),
so a killed run keeps them and ``resume`` adds only the missing ones.

Ray is an optional extra (``pip install 'imgrec[ray]'``) and is imported only here,
only when ``predict_ray`` runs. Without an address (or ``RAY_ADDRESS``) a local Ray is
started for the run and stopped after it; a Ray already started in this process is
used as it is.
"""

from __future__ import annotations

import contextlib
import fnmatch
import glob
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from imgrec.core.choices import DEFAULT_MODEL
from imgrec.core.errors import ImgrecError
from imgrec.core.images import is_image_file
from imgrec.core.tables import ResultsFile
from imgrec.deploy.batch_worker import BatchClassifier, worker_model
from imgrec.deploy.export_cache import load_runtime
from imgrec.models.tta import check_tta, resolve_tta
from imgrec.prediction import expand_inputs

# Text files that list images, one path or URI a line.
LIST_SUFFIXES = (".txt", ".lst")
_GLOB_CHARS = "*?["
RAY_MISSING = "--engine ray needs Ray: pip install 'imgrec[ray]'"


def predict_ray(
    source: str | os.PathLike | Sequence[str | os.PathLike],
    model: Any = DEFAULT_MODEL,
    *,
    out: str | os.PathLike,
    top: int = 5,
    weights: str | os.PathLike | None = None,
    runtime: str = "auto",
    workers: int | None = None,
    batch_size: int = 32,
    address: str | None = None,
    resume: bool = False,
    verbose: bool = True,
    tta: str | None = None,
) -> dict[str, Any]:
    """Classify every image of ``source`` on Ray Data and write one row per image to ``out``.

    Args:
        source: a folder (every image in it), a glob (``photos/**/*.jpg``), a ``.txt``
            or ``.lst`` file of paths or URIs (one a line; relative paths are taken
            from the list's folder), an image, a URI pyarrow reads (``s3://bucket/dir``,
            ``gs://...``, ``file:///...``), or a list of those.
        model, top, weights, runtime, tta: as for ``imgrec.predict`` (the workers
            average the views of ``tta`` on whichever runtime they run).
        out: the results table, ``.parquet``, ``.csv`` or ``.jsonl``: the columns of
            ``imgrec predict --csv`` (``imgrec.core.tables``).
        workers: worker processes, each holding the model once (default: one per CPU
            that Ray has).
        batch_size: images per forward pass in a worker.
        address: a Ray cluster (``ray://host:10001``, ``host:6379`` or ``auto``);
            default ``RAY_ADDRESS``, else a local Ray for this run.
        resume: keep the rows ``out`` holds (also those a killed run left) and
            classify only the images it lacks; without it an existing ``out`` is
            refused.
        verbose: a progress bar on stderr, and what the run did.

    Returns:
        ``out``, ``images`` (in the source), ``skipped`` (already in ``out``),
        ``classified``, ``failed`` (rows with an error), ``workers``, ``batch_size``,
        ``runtime``, ``tta`` (when a model ran), ``ray_start_seconds`` (starting or
        joining Ray), ``first_rows_seconds`` (from the job's start to its first rows:
        the workers start and load the model), ``seconds`` (from the job's start to its last
        row), ``images_per_second`` (rows / ``seconds``) and
        ``steady_images_per_second`` (rows after the first ones, per second after
        them).

    Raises:
        ImgrecError: Ray is not installed; ``out`` exists without ``resume``, or has
            other columns; no images in ``source``.
        ValueError: ``top``, ``batch_size`` or ``workers`` below 1.
        ModelError, WeightsError: the model cannot be had; nothing is classified.
        SpecError: an unknown ``tta``.
    """
    check_tta(tta or "none")  # a bad value fails before Ray or the model start
    for name, value in (("top", top), ("batch_size", batch_size), ("workers", workers or 1)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    ray = _import_ray()
    table = ResultsFile(out, top, resume=resume)
    images = list_images(source)
    if not images:
        raise ImgrecError(f"no images found in {_describe(source)}")
    todo = table.missing(images)
    summary = _summary(out, images, todo, batch_size)
    if not todo:  # nothing to do: no model, no Ray
        table.close()
        return summary | {"workers": workers or 0, "runtime": None}
    engine = load_runtime(model, runtime, weights=weights, verbose=verbose)
    spec = worker_model(engine, model, weights, tta=resolve_tta(tta, engine.info.tta))
    summary["runtime"] = spec.runtime
    summary["tta"] = spec.tta
    start = time.perf_counter()
    with _ray_session(ray, address, workers) as cpus:
        summary["ray_start_seconds"] = time.perf_counter() - start
        summary["workers"] = workers = workers or max(1, int(cpus))
        try:
            _run(ray, todo, spec, table, summary, verbose=verbose)
        finally:
            table.close()
    return summary


def _summary(out: Any, images: list[str], todo: list[str], batch_size: int) -> dict[str, Any]:
    """``predict_ray``'s answer before the job: counts, and zeros for what it measures."""
    timings = ["ray_start_seconds", "first_rows_seconds", "seconds"]
    rates = ["images_per_second", "steady_images_per_second"]
    return {
        "out": os.fspath(out),
        "images": len(images),
        "skipped": len(images) - len(todo),
        "classified": 0,
        "failed": 0,
        "batch_size": batch_size,
        **dict.fromkeys(timings + rates, 0.0),
    }


def _run(
    ray: Any, todo: list[str], spec: Any, table: ResultsFile, summary: dict, *, verbose: bool
) -> None:
    """Send ``todo`` through the workers, writing rows as they come; fill ``summary``."""
    from tqdm import tqdm

    workers, batch_size = summary["workers"], summary["batch_size"]
    start = time.perf_counter()
    first_at, first_rows, rows = None, 0, 0
    with tqdm(total=len(todo), unit="img", file=sys.stderr, disable=not verbose, delay=1.0) as bar:
        items = [{"image": image, "path": reading_path(image)} for image in todo]
        # Blocks of a few batches: every worker gets work, and rows come back steadily.
        blocks = max(min(len(items), workers), min(len(items) // batch_size, 64 * workers))
        dataset = ray.data.from_items(items, override_num_blocks=blocks).map_batches(
            BatchClassifier,
            # The model goes by reference: the driver keeps it in Ray's object store
            # while the job runs, for workers that Ray restarts too.
            fn_constructor_kwargs={"model": [ray.put(spec)], "top": table.top},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=_cpus_per_worker(ray, workers),
        )
        try:
            for batch in dataset.iter_batches(batch_size=None, batch_format="pyarrow"):
                results = batch.to_pylist()
                table.write(results)
                rows += len(results)
                summary["failed"] += sum(r["error"] is not None for r in results)
                if first_at is None:
                    first_at, first_rows = time.perf_counter() - start, rows
                bar.update(len(results))
        except ray.exceptions.RayError as err:
            raise ImgrecError(
                f"the Ray job stopped after {rows} rows ({type(err).__name__}: {err}); "
                f"the rows are in {table.path}: run again with --resume for the rest"
            ) from err
    seconds = time.perf_counter() - start
    summary["classified"] = rows - summary["failed"]
    summary["seconds"] = seconds
    summary["first_rows_seconds"] = first_at or 0.0
    summary["images_per_second"] = rows / seconds if rows else 0.0
    later = seconds - (first_at or 0.0)
    summary["steady_images_per_second"] = (rows - first_rows) / later if later > 0 else 0.0


def reading_path(image: str) -> str:
    """Where a worker reads ``image``: a URI as it is, a local path made absolute
    (workers do not run in the driver's folder)."""
    return image if "://" in image else os.path.abspath(image)


def list_images(source: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """The images of ``source`` (see :func:`predict_ray`), each once, in a stable order.

    Entries of a folder named like images that are no regular file (a FIFO, a broken
    link) are listed too: each gets its row with its error.

    Raises:
        ImgrecError: a list file or a remote folder cannot be read.
    """
    if not isinstance(source, str | os.PathLike):
        found = [image for item in source for image in list_images(item)]
        return list(dict.fromkeys(found))
    text = os.fspath(source)
    if "://" in text:
        return _list_remote(text)
    path = Path(text)
    if not path.exists() and any(c in text for c in _GLOB_CHARS):
        return [str(item) for item in expand_inputs(sorted(glob.glob(text, recursive=True)))]
    if path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
        return _list_file(path)
    return [str(item) for item in expand_inputs(text)]


def _list_file(path: Path) -> list[str]:
    """The paths or URIs of a list file, one a line; blank lines and ``#`` comments skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise ImgrecError(f"{path}: cannot read the list of images ({err})") from err
    entries = [line.strip() for line in lines]
    base = path.parent
    return list(
        dict.fromkeys(
            entry if "://" in entry or os.path.isabs(entry) else os.path.join(base, entry)
            for entry in entries
            if entry and not entry.startswith("#")
        )
    )


def _list_remote(uri: str) -> list[str]:
    """The images under a URI (a folder, recursively), one file, or a glob's matches."""
    import pyarrow.fs

    scheme, rest = uri.split("://", 1)
    cut = min((rest.index(c) for c in _GLOB_CHARS if c in rest), default=None)
    pattern = None
    if cut is not None:
        pattern, rest = rest, rest[:cut].rsplit("/", 1)[0]
    try:
        fs, root = pyarrow.fs.FileSystem.from_uri(f"{scheme}://{rest}")
        info = fs.get_file_info(root)
        if info.type == pyarrow.fs.FileType.File and pattern is None:
            return [uri]
        if info.type != pyarrow.fs.FileType.Directory:
            raise ImgrecError(f"{uri}: no such file or folder")
        found = fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True))
    except (OSError, ValueError) as err:
        raise ImgrecError(f"{uri}: cannot list it ({err})") from err
    uris = sorted(
        f"{scheme}://{f.path}"
        for f in found
        if f.type == pyarrow.fs.FileType.File and is_image_file(f.path)
    )
    if pattern is not None:
        uris = [u for u in uris if fnmatch.fnmatchcase(u.split("://", 1)[1], pattern)]
    return uris


def _describe(source: Any) -> str:
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    return " ".join(os.fspath(s) for s in source)


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise ImgrecError(RAY_MISSING) from None
    return ray


@contextlib.contextmanager
def _ray_session(ray: Any, address: str | None, workers: int | None) -> Iterator[float]:
    """Ray for one run: the one this process started already, a cluster, or a local one
    (stopped afterwards). Yields how many CPUs it has."""
    started = False
    with _quiet(ray):
        try:
            if not ray.is_initialized():
                options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
                if not (address or os.environ.get("RAY_ADDRESS")):
                    options["num_cpus"] = os.cpu_count() or 1
                try:
                    ray.init(address=address, logging_level=logging.ERROR, **options)
                except ConnectionError as err:
                    raise ImgrecError(f"cannot reach Ray at {address}: {err}") from err
                started = True
            yield float(ray.cluster_resources().get("CPU", 1))
        finally:
            if started:
                ray.shutdown()


@contextlib.contextmanager
def _quiet(ray: Any) -> Iterator[None]:
    """Only what a user needs on the terminal while Ray runs, and everything as it was after.

    Ray's start-up notices (token authentication is on, ...) and its core's note that
    Ray Data keeps a worker's arguments in the object store (ray-project/ray#53727)
    are no news for a user (the core says once which log level it took instead);
    Ray's failures still reach them as exceptions, and every Ray process keeps its
    log in Ray's session folder. Ray Data's progress bars give way to imgrec's, which
    counts images.
    """
    context = ray.data.DataContext.get_current()
    settings = {"enable_progress_bars": False, "print_on_execution_start": False}
    before = {name: getattr(context, name) for name in settings}
    loggers = [logging.getLogger(name) for name in ("ray", "ray.data")]
    levels = [logger.level for logger in loggers]
    backend = os.environ.get("RAY_BACKEND_LOG_LEVEL")
    try:
        for name, value in settings.items():
            setattr(context, name, value)
        for logger in loggers:
            logger.setLevel(logging.ERROR)  # "progress bars disabled", and the like
        if backend is None:  # read when Ray starts this process's core
            os.environ["RAY_BACKEND_LOG_LEVEL"] = "fatal"
        yield
    finally:
        for name, value in before.items():
            setattr(context, name, value)
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
        if backend is None:
            os.environ.pop("RAY_BACKEND_LOG_LEVEL", None)


def _cpus_per_worker(ray: Any, workers: int) -> float:
    """One CPU a worker, or an equal share where more workers than CPUs are asked for
    (they would wait for a free CPU forever)."""
    cpus = float(ray.cluster_resources().get("CPU", 1))
    return min(1.0, cpus / workers)
