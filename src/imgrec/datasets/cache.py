"""Decode once: images decoded, converted and resized a single time, kept as uint8 arrays.

Each cache entry lives under ``imgrec_home() / "datasets"`` as two files named by a
key (SHA-256 of the files read, with their sizes and modification times or CRCs, and
of the target size and channels):

- ``<key>.npy``: the images, N x H x W x C uint8, read back memory-mapped;
- ``<key>.json``: labels, class names, where each split starts, the skipped files.

Both are written atomically, the JSON last, so an entry is complete or absent. A
change to any file gives a new key (the old entry stays until the folder is
cleaned). Splits and ``limit_per_class`` are applied after the cache, so runs with
other seeds reuse the same decode.
"""

from __future__ import annotations

import json
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from imgrec.core.errors import ImageError
from imgrec.core.storage import atomic_path, imgrec_home, write_bytes_atomic

T = TypeVar("T")


def cache_dir() -> Path:
    """Where decoded data sets are kept: ``imgrec_home() / "datasets"``."""
    return imgrec_home() / "datasets"


@dataclass
class Cached:
    """A cache entry: ``images`` is a read-only memory map, ``meta`` what the writer kept."""

    images: np.ndarray
    meta: dict[str, Any]


def load(key: str) -> Cached | None:
    """The entry for ``key``, or None when there is none (or it is unreadable)."""
    base = cache_dir() / key
    try:
        meta = json.loads(base.with_suffix(".json").read_text())
        images = np.load(base.with_suffix(".npy"), mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return None
    rows = meta.get("rows")
    if (
        not isinstance(rows, int)
        or images.dtype != np.uint8
        or images.ndim != 4
        or not 0 < rows <= images.shape[0]
    ):
        return None
    return Cached(images[:rows], meta)


def store(
    key: str,
    shape: tuple[int, int, int, int],
    fill: Callable[[np.ndarray], tuple[int, dict[str, Any]]],
) -> Cached:
    """Create the entry for ``key`` and return it, read back memory-mapped.

    Args:
        key: The entry's key.
        shape: The most images the entry can hold, N x H x W x C.
        fill: Writes images into the (memory-mapped) array it is given, from row 0 on,
            and returns how many rows it used and the metadata to keep. Rows past
            those stay in the file unused (one per skipped image). If it raises,
            nothing is kept.
    """
    base = cache_dir() / key
    with atomic_path(base.with_suffix(".npy")) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        try:
            rows, meta = fill(out)
            out.flush()
        finally:
            del out
    write_bytes_atomic(base.with_suffix(".json"), json.dumps({**meta, "rows": rows}).encode())
    entry = load(key)
    if entry is None:  # pragma: no cover - only if another process removed it meanwhile
        raise OSError(f"{base}.npy: the cache entry just written cannot be read back")
    return entry


def workers() -> int:
    """Decoding threads: one per core (Pillow releases the GIL while it decodes)."""
    return max(1, min(16, os.cpu_count() or 1))


def decode(
    items: Sequence[T],
    read: Callable[[T], np.ndarray],
    out: np.ndarray,
    *,
    progress: bool,
    description: str,
) -> list[int | str]:
    """Decode ``items`` in parallel into consecutive rows of ``out``, in their order.

    Args:
        items: What to decode (paths, archive members...).
        read: Returns one item's final image (the shape of a row of ``out``), or
            raises ``ImageError`` for a broken file.
        out: Where good images go, one row each, from row 0 on, in ``items`` order.
        progress: Show a progress bar on stderr.
        description: The bar's label.

    Returns:
        For each item, its row in ``out``, or why it was skipped (the ``ImageError``
        message).
    """
    from tqdm import tqdm

    results: list[int | str] = []
    row = 0
    window = 8 * workers()  # decoded images waiting to be written stay few
    pool = ThreadPoolExecutor(max_workers=workers(), thread_name_prefix="imgrec-decode")
    bar = tqdm(
        total=len(items), desc=description, unit="img", file=sys.stderr, disable=not progress
    )
    try:
        queue = iter(items)
        pending = deque(pool.submit(_try, read, item) for item in _take(queue, window))
        while pending:
            image = pending.popleft().result()
            pending.extend(pool.submit(_try, read, item) for item in _take(queue, 1))
            if isinstance(image, str):
                results.append(image)
            else:
                out[row] = image
                results.append(row)
                row += 1
            bar.update()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        bar.close()
    return results


def _take(iterator: Iterable[T], count: int) -> list[T]:
    taken = []
    for item in iterator:
        taken.append(item)
        if len(taken) == count:
            break
    return taken


def _try(read: Callable[[T], np.ndarray], item: T) -> np.ndarray | str:
    try:
        return read(item)
    except ImageError as e:
        return str(e)
