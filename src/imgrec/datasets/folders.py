"""Labelled photos in a folder, or in a ``.zip`` of such a folder.

Two layouts are read, in a folder or a zip alike:

- one subfolder per class (``cats/001.jpg``, ``dogs/002.jpg``; images deeper inside
  a class folder belong to it), as Keras's ``image_dataset_from_directory`` reads;
- labels in the file names, as in Kaggle's dogs-vs-cats (``cat.123.jpg``) or the
  Oxford pets (``Abyssinian_12.jpg``): the label is the name before its number.

Optional ``train/``, ``val/`` (or ``valid/``, ``validation/``) and ``test/`` folders
hold the splits, each in one of the layouts; other folders beside them are ignored.
Wrapper folders are looked through: Microsoft's ``PetImages/Cat/1.jpg`` zip and
Kaggle's ``train/cat.0.jpg`` zip both read as they are.

Every image is decoded with :func:`imgrec.core.images.load_image` (format sniffed from the
content, size checked before decoding, EXIF orientation applied), converted to RGB or
grey and resized once into the decode cache (:mod:`imgrec.datasets.cache`). A file
that cannot be decoded is skipped with its reason; the load goes on. So is a name of an
image that is no file to read: a broken symbolic link or a loop of links, a FIFO, a
socket, a device, a file without read permission (:func:`imgrec.core.images.scan_images`);
these are never opened, and a file is read only after checking, on the opened file,
that it still is a regular one (:func:`imgrec.core.images.read_image_file`).

Zip members are read straight from the archive, never extracted: a member whose
declared size exceeds :data:`MAX_MEMBER_BYTES` (a zip bomb, or no image), whose name
tries to leave the folder (absolute, ``..``), that is a link, or that the archive marks
as a FIFO, a socket or a device is skipped unread.
"""

from __future__ import annotations

import re
import stat
import threading
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from imgrec.core.errors import DatasetError, ImageError
from imgrec.core.images import (
    is_image_file,
    load_image,
    read_image_file,
    scan_images,
    special_file_kind,
)
from imgrec.datasets import cache
from imgrec.datasets.base import (
    DEFAULT_IMAGE_SIZE,
    RawData,
    SkippedFile,
    Split,
    file_entry,
    make_key,
    resize,
)

#: The largest image file read from a zip (its declared, uncompressed size).
MAX_MEMBER_BYTES = 64 * 1024 * 1024

_SPLITS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
_SPLIT_ORDER = ("train", "val", "test")
_NO_CLASS = "no class: not in a class folder, nor named like cat.1.jpg"

# "cat.123.jpg", "dog_7.png", "american_bulldog-10.jpg": the label, then a number.
_LABELLED_NAME = re.compile(r"^(?P<label>[^.]+?)[._-]\d+\.[^.]+$")


@dataclass(frozen=True)
class _Image:
    ref: str  # the path relative to the folder, or the zip member's name
    split: str
    class_name: str


def read_folder(
    folder: Path, *, image_size: tuple[int, int] | None, channels: int | None, progress: bool
) -> RawData:
    """Read a folder of labelled images (see the module's docstring)."""
    scan = scan_images(folder)
    paths = [p for p in scan.images if "__MACOSX" not in p.parts]
    unread = [SkippedFile(str(p), why) for p, why in scan.rejected if "__MACOSX" not in p.parts]
    refs = [p.relative_to(folder).as_posix() for p in paths]
    key = make_key("folder", [file_entry(p, ref) for p, ref in zip(paths, refs, strict=True)])

    def open_ref(ref: str) -> bytes:
        return read_image_file(folder / ref)

    return _read(
        folder, refs, unread, key, open_ref, size=image_size, channels=channels, progress=progress
    )


def read_zip(
    path: Path, *, image_size: tuple[int, int] | None, channels: int | None, progress: bool
) -> RawData:
    """Read a ``.zip`` of a folder of labelled images, without extracting it."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise DatasetError(f"{path}: not a readable zip archive ({e})") from e
    with archive:
        refs: list[str] = []
        unread: list[SkippedFile] = []
        entries = []
        infos = {}
        nested = []
        for info in archive.infolist():
            name = info.filename
            if info.is_dir():
                continue
            if name.lower().endswith(".zip"):
                nested.append(name)
            if not is_image_file(name):
                continue
            reason = _unsafe_member(info)
            if reason:
                unread.append(SkippedFile(f"{path}:{name}", reason))
                continue
            if _hidden(name) or name in infos:  # a name twice in a zip: the first wins
                continue
            refs.append(name)
            infos[name] = info
            entries.append([name, info.file_size, info.CRC])
        if not refs and nested:
            raise DatasetError(
                f"{path}: no images, but other archives inside ({', '.join(nested[:3])}): "
                "extract it and pass the archive of labelled images"
            )
        key = make_key("zip", entries)
        lock = threading.Lock()

        def open_ref(ref: str) -> bytes:
            try:
                with lock:  # one reader at a time on the shared file; decoding runs in parallel
                    return archive.read(infos[ref])
            except Exception as e:  # BadZipFile, zlib.error, EOFError...: a damaged member
                raise ImageError(f"{path}:{ref}: cannot read it from the archive ({e})") from e

        return _read(
            path, refs, unread, key, open_ref, size=image_size, channels=channels, progress=progress
        )


def _unsafe_member(info: zipfile.ZipInfo) -> str | None:
    name = info.filename.replace("\\", "/")
    parts = PurePosixPath(name).parts
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        return "unsafe name in the archive (absolute, or leaving its folder with '..'); not read"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "a link in the archive; not read"
    kind = special_file_kind(info.external_attr >> 16)
    if kind is not None:
        return f"{kind} in the archive, not a file; not read"
    if info.flag_bits & 0x1:
        return "encrypted in the archive; not read"
    if info.file_size > MAX_MEMBER_BYTES:
        return (
            f"declares {info.file_size:,} bytes, more than the {MAX_MEMBER_BYTES:,} "
            "an image file may have here; not read"
        )
    return None


def _hidden(name: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in PurePosixPath(name).parts)


def _read(
    source: Path,
    refs: Sequence[str],
    unread: list[SkippedFile],
    key: str,
    open_ref: Callable[[str], bytes],
    *,
    size: tuple[int, int] | None,
    channels: int | None,
    progress: bool,
) -> RawData:
    """Plan the layout, then decode through the cache (or read the cache)."""
    size = size or DEFAULT_IMAGE_SIZE
    channels = channels or 3
    images, unlabelled = _plan(refs)
    name_of = _namer(source)
    skipped = [*unread, *(SkippedFile(name_of(ref), reason) for ref, reason in unlabelled)]
    class_names = _class_names(source, refs, images)
    entry_key = make_key("decoded", key, size, channels)
    entry = cache.load(entry_key)
    if entry is None:
        read = _reader(open_ref, name_of, size, channels)

        def fill(out: np.ndarray) -> tuple[int, dict]:
            return _decode(out, source, images, class_names, read, name_of, progress)

        entry = cache.store(entry_key, (len(images), *size, channels), fill)
    skipped += [SkippedFile(name_of(ref), reason) for ref, reason in entry.meta["broken"]]
    return RawData(
        name=source.stem if source.is_file() else source.resolve().name,
        source=str(source),
        class_names=class_names,
        parts=_parts(source, entry),
        key=key,
        skipped=skipped,
    )


def _class_names(source: Path, refs: Sequence[str], images: list[_Image]) -> tuple[str, ...]:
    """The classes of ``images``, sorted; DatasetError unless there are at least two."""
    if not images:
        found = f"{len(refs):,} image files, none usable" if refs else "no image files"
        raise DatasetError(
            f"{source}: {found}; expected one subfolder per class, or file names like "
            "cat.123.jpg (optionally inside train/, val/ and test/)"
        )
    class_names = tuple(sorted({image.class_name for image in images}))
    if len(class_names) < 2:
        raise DatasetError(
            f"{source}: found one class only ({class_names[0]!r}); a classifier needs "
            "at least two: one subfolder per class, or file names like cat.123.jpg"
        )
    return class_names


def _reader(
    open_ref: Callable[[str], bytes],
    name_of: Callable[[str], str],
    size: tuple[int, int],
    channels: int,
) -> Callable[[_Image], np.ndarray]:
    """Reads one image as the cache holds it: decoded, converted and resized."""
    mode = "L" if channels == 1 else "RGB"

    def read(image: _Image) -> np.ndarray:
        data = open_ref(image.ref)
        return resize(load_image(data, mode=mode, name=name_of(image.ref)), size)

    return read


def _decode(
    out: np.ndarray,
    source: Path,
    images: list[_Image],
    class_names: tuple[str, ...],
    read: Callable[[_Image], np.ndarray],
    name_of: Callable[[str], str],
    progress: bool,
) -> tuple[int, dict]:
    """Decode ``images`` into ``out``: how many were kept, and the cache entry's meta.

    Raises:
        DatasetError: none of the images could be read.
    """
    results = cache.decode(
        images, read, out, progress=progress, description=f"Decoding {source.name}"
    )
    kept = [image for image, r in zip(images, results, strict=True) if isinstance(r, int)]
    broken = [
        [image.ref, _reason(r, name_of(image.ref))]
        for image, r in zip(images, results, strict=True)
        if isinstance(r, str)
    ]
    if not kept:
        raise DatasetError(
            f"{source}: none of the {len(images):,} images could be read; for "
            f"example {name_of(broken[0][0])}: {broken[0][1]}"
        )
    index = {name: i for i, name in enumerate(class_names)}
    meta = {
        "class_names": list(class_names),
        "labels": [index[image.class_name] for image in kept],
        "splits": [image.split for image in kept],
        "broken": broken,
    }
    return len(kept), meta


def _parts(source: Path, entry: cache.Cached) -> dict[str, Split]:
    """The cache entry's images, split (the cache holds the splits one after the other).

    Raises:
        DatasetError: no training images.
    """
    labels = np.asarray(entry.meta["labels"], dtype=np.int64)
    splits = np.asarray(entry.meta["splits"])
    parts = {}
    start = 0
    for split in _SPLIT_ORDER:
        stop = start + int(np.count_nonzero(splits == split))
        if stop > start:
            parts[split] = Split(entry.images[start:stop], labels[start:stop])
        start = stop
    if "train" not in parts:
        raise DatasetError(f"{source}: no readable training images (a train/ folder)")
    return parts


def _namer(source: Path) -> Callable[[str], str]:
    """How messages name a file: its path, or ``archive.zip:member``."""
    if source.is_dir():
        return lambda ref: str(source / ref)
    return lambda ref: f"{source}:{ref}"


def _reason(message: str, name: str) -> str:
    """An ImageError's message without the file name it starts with."""
    prefix = f"{name}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def _plan(refs: Sequence[str]) -> tuple[list[_Image], list[tuple[str, str]]]:
    """Assign each file its split and class from its path; list those that have none.

    Returns the images in cache order (train, val, test; each sorted by path) and the
    files without a class, each with why.
    """
    entries = [(ref, PurePosixPath(ref.replace("\\", "/")).parts) for ref in refs]
    # Look through wrapper folders: "PetImages/Cat/1.jpg", "archive/data/train/...",
    # but not into the one class folder of "cats/1.jpg" (which is one class, not none).
    while entries and all(len(parts) > 1 for _, parts in entries):
        tops = {parts[0] for _, parts in entries}
        if len(tops) != 1 or tops.pop().lower() in _SPLITS:
            break
        inner = [(ref, parts[1:]) for ref, parts in entries]
        if all(len(p) == 1 and not _LABELLED_NAME.match(p[0]) for _, p in inner):
            break
        entries = inner
    by_split: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    if any(len(parts) > 1 and parts[0].lower() in _SPLITS for _, parts in entries):
        for ref, parts in entries:
            if len(parts) > 1 and parts[0].lower() in _SPLITS:
                by_split.setdefault(_SPLITS[parts[0].lower()], []).append((ref, parts[1:]))
    else:
        by_split["train"] = entries
    images, unlabelled = [], []
    for split in _SPLIT_ORDER:
        group = sorted(by_split.get(split, ()))
        in_folders = any(len(parts) > 1 for _, parts in group)
        for ref, parts in group:
            if in_folders:
                if len(parts) > 1:
                    images.append(_Image(ref, split, parts[0]))
                else:
                    unlabelled.append((ref, "not inside a class folder"))
                continue
            match = _LABELLED_NAME.match(parts[-1])
            if match:
                images.append(_Image(ref, split, match["label"]))
            else:
                unlabelled.append((ref, _NO_CLASS))
    return images, unlabelled
