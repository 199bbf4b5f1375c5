"""Safe image loading: every image imgrec reads goes through ``load_image``.

The same function serves the command line, training on folders of user photos and a
web server that receives hostile uploads, so it has to be strict and predictable:

- the format is sniffed from the content, never from the extension, and only a short
  allow-list of common formats is accepted, which keeps Pillow's rarer decoders (and
  their bugs) out of reach of uploads;
- the pixel count in the header is checked against a cap before any pixel is decoded,
  so a small file claiming a huge canvas (a decompression bomb) costs nothing;
- every way of failing (missing, empty, not an image, truncated, corrupt, too large)
  raises one :class:`~imgrec.core.errors.ImageError` whose message starts with the file's
  name and chains Pillow's own exception;
- the result is always a uint8 array in a fixed layout: the first frame of an animated
  image, turned upright from its EXIF orientation, with transparency composited over
  white and 16-bit data scaled (not clipped) to 8 bits.

Pillow's global settings (``Image.MAX_IMAGE_PIXELS``, ``ImageFile.LOAD_TRUNCATED_IMAGES``)
and the process's warning filters are left alone: they belong to the application, and
changing them here would race with other threads decoding at the same time.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, NamedTuple

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

from imgrec.core.errors import ImageError

# A 48-megapixel phone photo (8000 x 6000) fits. At the cap a decoded image takes 150 MB
# as RGB and a few times that while transparency is composited, which a server decoding
# several uploads at once can afford. Pillow only warns at 89 MP. Cameras above 50 MP
# need an explicit ``max_pixels``.
DEFAULT_MAX_PIXELS = 50_000_000

# Pillow's names. "PPM" covers PBM, PGM and PPM; "JPEG" also opens MPO photos (cameras
# that store a second picture), of which the first frame is the main photo.
_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP", "PPM")

_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)

_OUTPUT_MODES = ("RGB", "L")

# How image files are opened for reading: never blocking (a FIFO put in a file's place
# would wait for a writer), never becoming the controlling terminal, not inherited.
_READ_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
    | getattr(os, "O_BINARY", 0)
)

_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}


def load_image(
    source: str | os.PathLike | bytes | bytearray,
    *,
    mode: str = "RGB",
    max_pixels: int | None = None,
    name: str | None = None,
    min_side: int | None = None,
) -> np.ndarray:
    """Read an image file or an upload's bytes into a uint8 array.

    Transparent and partly transparent pixels are composited over a white background:
    most pictures with an alpha channel are logos or cut-out objects drawn for a light
    page, and black would turn dark outlines into a silhouette.

    Args:
        source: A path, or the raw bytes of an image (an upload). The format is read
            from the content; the file's extension is ignored.
        mode: ``"RGB"`` for an H x W x 3 array, or ``"L"`` for an H x W x 1 array of
            Pillow's luminance of the RGB result.
        max_pixels: The largest width x height accepted, checked before decoding.
            Defaults to ``DEFAULT_MAX_PIXELS``. Pillow's own hard limit, twice
            ``Image.MAX_IMAGE_PIXELS``, still applies.
        name: How error messages name the input. Defaults to the path, or to
            ``"<bytes>"`` for bytes; pass the upload's filename.
        min_side: The size the caller will resize the image to (the larger side of a
            network's input, or its short-side target), to shrink while decoding: a
            JPEG is decoded at 1/2, 1/4 or 1/8 of its size (Pillow's ``draft``), other
            formats are reduced by a whole factor (``Image.reduce``, box averages),
            as long as both sides stay at least twice ``min_side``, the margin Pillow's
            ``thumbnail`` keeps before its final resampling. A 49-megapixel photo then
            never exists at full size after decoding. ``None`` (the default) keeps
            every pixel.

    Returns:
        A new uint8 array, H x W x 3 or H x W x 1, of the image's first frame turned
        upright from its EXIF orientation (smaller than the file when ``min_side``
        shrank it).

    Raises:
        ValueError: ``mode`` is not ``"RGB"`` or ``"L"``, or ``max_pixels`` or
            ``min_side`` is below 1.
        ImageError: The file is missing or unreadable, empty, not an image in a
            supported format, truncated or corrupt, or larger than ``max_pixels``. The
            message starts with the input's name; the cause is chained.
    """
    if mode not in _OUTPUT_MODES:
        raise ValueError(f"mode must be one of {_OUTPUT_MODES}, got {mode!r}")
    limit = _pixel_limit(max_pixels)
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be at least 1, got {min_side}")
    with _opened(source, name) as (fp, label):
        rgb = _decode_rgb(fp, label, limit, min_side)
    return _to_array(rgb, mode)


def decode_cost(
    source: str | os.PathLike | bytes | bytearray,
    *,
    max_pixels: int | None = None,
    name: str | None = None,
    min_side: int | None = None,
) -> int:
    """About how many bytes ``load_image`` needs at its peak for ``source``, from its header.

    Only the header is read: a server can admit work by memory before decoding it.
    The estimate covers Pillow's decoded image (4 bytes a pixel for colour, as Pillow
    stores it; 1 for grey and palette; 2 for 16-bit grey), the converted copies that
    the mode needs and, without a reduction, the full-size copies of the result.

    Args:
        source, max_pixels, name, min_side: as for ``load_image``.

    Returns:
        The estimate in bytes.

    Raises:
        ValueError: ``max_pixels`` or ``min_side`` below 1.
        ImageError: as ``load_image`` raises it for a missing, empty, unrecognised or
            too large image (its pixels are not decoded, so corrupt data passes here).
    """
    limit = _pixel_limit(max_pixels)
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be at least 1, got {min_side}")
    with _opened(source, name) as (fp, label), _header_checked(fp, label, limit) as im:
        return _estimate(im, min_side)


def _pixel_limit(max_pixels: int | None) -> int:
    limit = DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels
    if limit < 1:
        raise ValueError(f"max_pixels must be at least 1, got {limit}")
    return limit


@contextmanager
def _opened(
    source: str | os.PathLike | bytes | bytearray, name: str | None
) -> Iterator[tuple[IO[bytes], str]]:
    """The source as a binary file, and its name for messages."""
    if isinstance(source, bytes | bytearray):
        yield io.BytesIO(source), name or "<bytes>"
        return
    label = name or os.fsdecode(source)
    fp = _open_checked(source, label)
    try:
        yield fp, label
    except OSError as e:  # only the file system's: decoding raises ImageError
        raise ImageError(f"{label}: cannot read it ({e.strerror or e})") from e
    finally:
        fp.close()


def image_from_array(array: np.ndarray, *, mode: str = "RGB", name: str = "array") -> np.ndarray:
    """Bring an in-memory uint8 image to the layout ``load_image`` returns.

    Args:
        array: uint8, H x W (grey), or H x W x C with C = 1, 3 (RGB) or 4 (RGBA,
            composited over white like files).
        mode: ``"RGB"`` or ``"L"``, as for ``load_image``.
        name: how error messages name the array.

    Raises:
        ValueError: ``mode`` is not ``"RGB"`` or ``"L"``.
        ImageError: not uint8, or not one of the shapes above.
    """
    if mode not in _OUTPUT_MODES:
        raise ValueError(f"mode must be one of {_OUTPUT_MODES}, got {mode!r}")
    array = np.asarray(array)
    if array.dtype != np.uint8:
        raise ImageError(f"{name}: expected uint8 pixels (0-255), got {array.dtype}")
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if not (array.ndim == 2 or (array.ndim == 3 and array.shape[-1] in (3, 4))):
        raise ImageError(f"{name}: expected H x W, H x W x 1, 3 or 4, got shape {array.shape}")
    return _to_array(_to_rgb(Image.fromarray(array)), mode)


def _to_array(rgb: Image.Image, mode: str) -> np.ndarray:
    if mode == "L":
        return np.array(rgb.convert("L"), dtype=np.uint8)[..., np.newaxis]
    return np.array(rgb, dtype=np.uint8)


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether a folder scan should pick up ``path``, judged by its extension only.

    This is the cheap filter used when listing folders; ``load_image`` still sniffs
    the content. Hidden files are skipped: they are editor backups and macOS's
    ``._photo.jpg`` resource forks, which carry an image extension but no image.

    Args:
        path: A file name or path; the file is not opened.

    Returns:
        True for a non-hidden name ending in an image extension (case-insensitive).
    """
    path = Path(path)
    return not path.name.startswith(".") and path.suffix.lower() in _EXTENSIONS


def find_images(folder: str | os.PathLike) -> list[Path]:
    """Every image file under ``folder`` (recursively), sorted, hidden files skipped.

    Only files that can be read are listed: ``scan_images`` also says which entries
    named like images are not (broken links, FIFOs, sockets, devices...) and why.

    Raises:
        ImageError: ``folder`` is not a folder.
    """
    return scan_images(folder).images


class ImageScan(NamedTuple):
    """What ``scan_images`` found in a folder.

    Attributes:
        images: the image files, sorted: regular files, or links to regular files
            (wherever those are), that this process may read.
        rejected: the entries that have an image's name but are no file to read, each
            with why, sorted: a broken symbolic link or a loop of links, a FIFO, a
            socket, a device, a file it may not read. None of them was opened.
    """

    images: list[Path]
    rejected: list[tuple[Path, str]]


def scan_images(folder: str | os.PathLike) -> ImageScan:
    """The image files under ``folder`` (recursively), and the image names that are not.

    A name counts as an image's by ``is_image_file``; hidden files and folders are
    skipped, as are folders named like images (their content is scanned). Entries are
    examined with ``stat``, never opened: a FIFO named ``photo.jpg`` cannot block the
    scan. Links to folders are not followed.

    Args:
        folder: the folder to scan.

    Returns:
        An :class:`ImageScan`.

    Raises:
        ImageError: ``folder`` is not a folder.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ImageError(f"{folder}: not a folder")
    images, rejected = [], []
    for path in sorted(folder.rglob("*")):
        if not is_image_file(path) or _hidden(path.relative_to(folder)):
            continue
        reason = _problem(path)
        if reason is None:
            images.append(path)
        elif not path.is_dir():  # a folder named like an image: rglob lists what is inside
            rejected.append((path, reason))
    return ImageScan(images, rejected)


def read_image_file(path: str | os.PathLike, *, name: str | None = None) -> bytes:
    """The bytes of an image file, refusing anything but a regular file, without blocking.

    What ``path`` is gets checked before it is opened (a FIFO, a socket or a device is
    never opened), and again on the opened file, which is opened non-blocking: a file
    replaced by a FIFO in between cannot hang the reader.

    Args:
        path: the file; links are followed.
        name: how error messages name it (default: the path).

    Raises:
        ImageError: no such file, a broken link or a loop of links, not a regular
            file, or not readable; the message starts with the name.
    """
    label = name or os.fsdecode(path)
    with _open_checked(path, label) as file:
        try:
            return file.read()
        except OSError as err:
            raise ImageError(f"{label}: cannot read it ({err.strerror or err})") from err


def _open_checked(path: str | os.PathLike, label: str) -> IO[bytes]:
    """``path`` opened for reading once it is known to be a readable regular file.

    Checked with ``stat`` before it is opened and with ``fstat`` after, opened
    non-blocking: a FIFO, socket or device is never read, even one swapped in between.
    """
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        raise ImageError(f"{label}: {_os_failure(path, err)}") from err
    if stat.S_ISDIR(mode):
        raise ImageError(f"{label}: cannot read it (a folder, not a file)")
    reason = _not_a_file(mode) or _permission_problem(path)
    if reason is not None:
        raise ImageError(f"{label}: {reason}")
    try:
        fd = os.open(path, _READ_FLAGS)
    except OSError as err:
        raise ImageError(f"{label}: {_os_failure(path, err)}") from err
    file = os.fdopen(fd, "rb")
    reason = _not_a_file(os.fstat(fd).st_mode)  # replaced since it was examined?
    if reason is not None:
        file.close()
        raise ImageError(f"{label}: {reason}")
    return file


def special_file_kind(mode: int) -> str | None:
    """What a ``st_mode`` says a file is, when it is no regular file, folder or link.

    Returns:
        ``"a FIFO (named pipe)"``, ``"a socket"``, ``"a character device"``, ``"a block
        device"``, ``"a special file"`` for other kinds, or None.
    """
    kind = stat.S_IFMT(mode)
    if kind in (0, stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
        return None
    return _KINDS.get(kind, "a special file")


def _problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is no file to read, judged by ``stat`` without opening it; None if none."""
    try:
        mode = os.stat(path).st_mode
    except OSError as err:
        return _os_failure(path, err)
    return _not_a_file(mode) or _permission_problem(path)


def _not_a_file(mode: int) -> str | None:
    """Why a file of ``mode`` is not read: not a regular file. None for a regular file."""
    if stat.S_ISREG(mode):
        return None
    kind = "a folder" if stat.S_ISDIR(mode) else special_file_kind(mode) or "a special file"
    return f"{kind}, not a regular file; not opened"


def _permission_problem(path: str | os.PathLike) -> str | None:
    """Why this process may not read the file at ``path`` (its permissions), or None."""
    if os.access(path, os.R_OK):
        return None
    return f"cannot read it ({os.strerror(errno.EACCES)})"


def _os_failure(path: str | os.PathLike, err: OSError) -> str:
    """Why ``path`` could not be examined or opened, in ``load_image``'s words."""
    if err.errno == errno.ELOOP:
        return "a loop of symbolic links; not read"
    if isinstance(err, FileNotFoundError):
        if os.path.islink(path):
            return "a broken symbolic link: what it points to does not exist; not read"
        return f"no such file ({err.strerror or err})"
    return f"cannot read it ({err.strerror or err})"


def _hidden(relative: Path) -> bool:
    return any(part.startswith(".") for part in relative.parts)


@contextmanager
def _header_checked(fp: IO[bytes], label: str, limit: int) -> Iterator[Image.Image]:
    """The image opened lazily (header only), its format allowed and its size under the cap.

    Every failure, here or in the block (decoding), becomes an ``ImageError``.
    """
    if not fp.read(1):
        raise ImageError(f"{label}: the file is empty")
    fp.seek(0)
    try:
        with Image.open(fp, formats=_FORMATS) as im:
            width, height = im.size
            if width * height > limit:
                raise ImageError(
                    f"{label}: the image is too large ({width} x {height} = "
                    f"{width * height:,} pixels, the limit is {limit:,})"
                )
            yield im
    except (ImageError, MemoryError):
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # The warning arrives as an exception only where the application made it one.
        raise ImageError(f"{label}: the image is too large ({e})") from e
    except UnidentifiedImageError as e:
        raise ImageError(
            f"{label}: not an image, or not in a supported format ({', '.join(_FORMATS)})"
        ) from e
    except Exception as e:
        # Pillow's decoders fail on hostile data with OSError, SyntaxError, ValueError,
        # EOFError and more (its own fuzzers catch Exception); for the caller all of them
        # mean the same thing.
        raise ImageError(f"{label}: cannot decode it, truncated or corrupt data ({e})") from e


def _decode_rgb(fp: IO[bytes], label: str, limit: int, min_side: int | None) -> Image.Image:
    """Decode the first frame of ``fp`` into an upright, opaque RGB image."""
    with _header_checked(fp, label, limit) as im:
        im.seek(0)  # animated GIF/PNG/WEBP, multi-page TIFF: the first frame
        if min_side is not None and im.format in _DRAFTABLE:
            im.draft(None, (_REDUCING_GAP * min_side,) * 2)  # JPEG: decode at 1/2 to 1/8
        # Pillow decodes lazily: load here, so that truncated data fails in this block.
        im.load()
        orientation = im.getexif().get(ExifTags.Base.Orientation, 1)
        shrunk = _reduced(im, min_side)
        upright = _upright(shrunk, orientation)
        return _to_rgb(upright)


# Pillow's thumbnail() keeps twice the target size before its final resampling: box
# averages down to that, then a proper filter, look like the filter alone.
_REDUCING_GAP = 2
_DRAFTABLE = frozenset({"JPEG", "MPO"})
# Modes whose pixels Image.reduce averages as they are; RGBA and LA it premultiplies itself.
_REDUCIBLE = frozenset({"L", "LA", "RGB", "RGBA", "I", "F"})
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _reduce_factor(width: int, height: int, min_side: int | None) -> int:
    if min_side is None:
        return 1
    return max(1, min(width, height) // (_REDUCING_GAP * min_side))


def _reduced(im: Image.Image, min_side: int | None) -> Image.Image:
    """``im`` shrunk by a whole factor while both sides stay twice ``min_side``; or ``im``."""
    factor = _reduce_factor(im.width, im.height, min_side)
    if factor == 1:
        return im
    if im.mode not in _REDUCIBLE:
        im = _reducible(im)
    return im.reduce(factor)


def _reducible(im: Image.Image) -> Image.Image:
    """``im`` in a mode whose pixels can be averaged: palettes and bits become colours."""
    if im.mode == "I" or im.mode.startswith("I;16"):
        return im.convert("I")
    if im.mode == "1":
        return im.convert("L")
    return im.convert("RGBA" if im.has_transparency_data else "RGB")


def _upright(im: Image.Image, orientation: int) -> Image.Image:
    """``im`` turned as its EXIF orientation says (what ``ImageOps.exif_transpose`` does)."""
    method = _TRANSPOSE.get(orientation)
    return im if method is None else im.transpose(method)


def _estimate(im: Image.Image, min_side: int | None) -> int:
    """``decode_cost`` of an image opened lazily: bytes a pixel times its pixels."""
    if min_side is not None and im.format in _DRAFTABLE:
        im.draft(None, (_REDUCING_GAP * min_side,) * 2)  # sets the size it will decode at
    width, height = im.size
    stored = 1 if im.mode in ("1", "L", "P") else 2 if im.mode.startswith("I;16") else 4
    transparent = "A" in im.mode or "transparency" in im.info
    factor = _reduce_factor(width, height, min_side)
    if factor == 1:
        # RGB or RGBA copies, the alpha composite over white, the array itself.
        per_pixel = stored + 4 + (12 if transparent else 0) + 3
        return width * height * per_pixel
    # A converted or premultiplied copy, then the small result (and its copies).
    converted = 0 if im.mode in ("L", "RGB", "I", "F") else 4
    premultiplied = 4 if transparent else 0
    small = -(-width // factor) * -(-height // factor) * (4 + 12 + 3)
    return width * height * (stored + converted + premultiplied) + small


def _to_rgb(im: Image.Image) -> Image.Image:
    """Convert any of Pillow's modes to 8-bit RGB, compositing transparency over white.

    32-bit float ("F") is read as 0-255 and clipped, Pillow's convention.
    """
    if im.mode == "I" or im.mode.startswith("I;16"):
        # 16-bit greyscale (PNG, TIFF, and PGM, which Pillow opens as 32-bit "I"):
        # Pillow's own conversion clips to 255, turning everything above 255 white.
        grey = np.clip(np.asarray(im, dtype=np.int64), 0, 65535)
        im = Image.fromarray(((grey * 255 + 32767) // 65535).astype(np.uint8))
    if im.has_transparency_data:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")
