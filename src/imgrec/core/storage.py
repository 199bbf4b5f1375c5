"""Where imgrec keeps its files, and how it writes them without leaving half a file."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path


def imgrec_home() -> Path:
    """The cache folder: ``$IMGREC_HOME`` if set, else ``~/.cache/imgrec``."""
    home = os.environ.get("IMGREC_HOME")
    return Path(home).expanduser() if home else Path.home() / ".cache" / "imgrec"


def keras_models_dir() -> Path:
    """Keras's own weights cache, ``$KERAS_HOME/models`` or ``~/.keras/models``."""
    keras_home = os.environ.get("KERAS_HOME")
    base = Path(keras_home).expanduser() if keras_home else Path.home() / ".keras"
    return base / "models"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    The temporary name keeps the target's suffixes, because some writers (Keras's
    ``save_weights``) insist on them. A failure or a kill leaves ``target`` as it was.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.stem}-", suffix=suffix, dir=target.parent)
    os.close(fd)
    os.unlink(tmp)  # writers such as h5py want to create the file themselves
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, target)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_bytes_atomic(target: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``target`` atomically."""
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)


def remove_stale_temporaries(target: str | os.PathLike) -> list[Path]:
    """Delete what a killed ``atomic_path`` left beside ``target``; return what went.

    Only names of the exact form ``atomic_path`` makes for ``target`` are touched
    (``.<stem>-`` and 8 random characters, then the target's suffixes). Call it only
    where no other process is writing ``target``.
    """
    target = Path(target)
    suffix = "".join(target.suffixes)
    pattern = re.compile(rf"\.{re.escape(target.stem)}-[a-z0-9_]{{8}}{re.escape(suffix)}")
    removed = []
    if target.parent.is_dir():
        for path in target.parent.iterdir():
            if pattern.fullmatch(path.name) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
