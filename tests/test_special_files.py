"""Names of images that are no file to read: broken links, link loops, FIFOs, sockets,
devices, files without read permission, and a file replaced by a FIFO after the listing.

Each is listed with its reason wherever imgrec lists image files (training folders and
zips, ``imgrec predict FOLDER``), and none is opened: opening a FIFO waits for a writer,
so a reader that did would hang. Every FIFO made here is opened for writing every
``GUARD_S`` seconds, which releases a reader stuck in ``open``: a regression then fails
on its time and reason instead of hanging the test run.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import imgrec.core.images
from imgrec.core.errors import DatasetError, ImageError
from imgrec.core.images import find_images, load_image, read_image_file, scan_images
from imgrec.datasets import load_dataset

RED, BLUE = (255, 0, 0), (0, 0, 255)
GUARD_S = 10.0
# What each kind of entry must be listed with.
REASONS = {
    "dangling.jpg": "a broken symbolic link: what it points to does not exist; not read",
    "loop.jpg": "a loop of symbolic links; not read",
    "pipe.jpg": "a FIFO (named pipe), not a regular file; not opened",
    "socket.jpg": "a socket, not a regular file; not opened",
    "null.jpg": "a character device, not a regular file; not opened",
}
# What special_entries makes: REASONS, and the second link of the loop.
LISTED = {**REASONS, "loop2.jpg": REASONS["loop.jpg"]}


def image_bytes(colour: tuple[int, int, int], fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def make_fifo() -> Iterator[Callable[[Path], Path]]:
    """Makes FIFOs; every GUARD_S seconds, a writer releases any reader waiting on one."""
    fifos: list[Path] = []
    stop = threading.Event()

    def release() -> None:
        while not stop.wait(GUARD_S):
            for path in fifos:
                with contextlib.suppress(OSError):  # ENXIO: nobody waits to read it, good
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))

    def make(path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        os.mkfifo(path)
        fifos.append(path)
        return path

    guard = threading.Thread(target=release, daemon=True)
    guard.start()
    yield make
    stop.set()
    guard.join()


def make_socket(path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Unix socket at ``path`` (bound from its folder: socket paths are short)."""
    with monkeypatch.context() as m:
        m.chdir(path.parent)
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(path.name)
    return path


def special_entries(folder: Path, make_fifo, monkeypatch) -> None:
    """The entries of LISTED in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dangling.jpg").symlink_to(folder / "gone.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop2.jpg")
    (folder / "loop2.jpg").symlink_to(folder / "loop.jpg")
    make_fifo(folder / "pipe.jpg")
    make_socket(folder / "socket.jpg", monkeypatch)
    (folder / "null.jpg").symlink_to(os.devnull)


@pytest.fixture
def pets(tmp_path, make_fifo, monkeypatch) -> Path:
    """cats/ (3 JPEGs, a link to a JPEG outside the folder, the special entries), dogs/."""
    root = tmp_path / "pets"
    for i in range(3):
        write(root / "cats" / f"cat{i}.jpg", image_bytes(RED))
        write(root / "dogs" / f"dog{i}.png", image_bytes(BLUE, "PNG"))
    outside = write(tmp_path / "elsewhere" / "stray.jpg", image_bytes(RED))
    (root / "cats" / "linked.jpg").symlink_to(outside)
    special_entries(root / "cats", make_fifo, monkeypatch)
    return root


def assert_listed(skipped: dict[str, str], folder: Path) -> None:
    """``skipped``: path -> reason. Each special entry of ``folder`` is there, rightly."""
    assert skipped == {str(folder / name): reason for name, reason in LISTED.items()}


# --- the folder scan ---------------------------------------------------------------------


def test_scan_lists_each_special_entry_with_its_reason(pets):
    scan = scan_images(pets)
    cats = pets / "cats"
    assert scan.images == [
        *(cats / f"cat{i}.jpg" for i in range(3)),
        cats / "linked.jpg",  # a link to an image elsewhere is followed, as before
        *(pets / "dogs" / f"dog{i}.png" for i in range(3)),
    ]
    assert [path for path, _ in scan.rejected] == sorted(path for path, _ in scan.rejected)
    assert_listed({str(path): reason for path, reason in scan.rejected}, cats)
    assert find_images(pets) == scan.images


def test_a_folder_named_like_an_image_is_scanned_not_listed(tmp_path):
    write(tmp_path / "album.jpg" / "inside.png", image_bytes(BLUE, "PNG"))
    assert scan_images(tmp_path) == ([tmp_path / "album.jpg" / "inside.png"], [])


def test_a_file_without_read_permission_is_listed(tmp_path, monkeypatch):
    """As root every file is readable: the permission check is simulated there."""
    locked = write(tmp_path / "locked.jpg", image_bytes(RED))
    if os.geteuid() == 0:
        real_access = os.access
        monkeypatch.setattr(
            imgrec.core.images.os,
            "access",
            lambda path, mode, **kw: os.fspath(path) != str(locked) and real_access(path, mode),
        )
    else:
        locked.chmod(0)
    scan = scan_images(tmp_path)
    assert scan.images == []
    assert scan.rejected == [(locked, "cannot read it (Permission denied)")]
    with pytest.raises(ImageError, match=rf"^{locked}: cannot read it \(Permission denied\)$"):
        read_image_file(locked)


# --- reading one file --------------------------------------------------------------------


@pytest.mark.parametrize("reader", [read_image_file, load_image], ids=lambda f: f.__name__)
def test_special_entries_are_refused_unopened(tmp_path, make_fifo, monkeypatch, reader):
    """``read_image_file`` and ``load_image(path)`` itself never open (so never wait on) a
    FIFO, a socket, a device or a broken link."""
    special_entries(tmp_path, make_fifo, monkeypatch)
    opened = []
    real_open = os.open
    monkeypatch.setattr(
        imgrec.core.images.os, "open", lambda path, *a: opened.append(path) or real_open(path, *a)
    )
    for name, reason in REASONS.items():
        with pytest.raises(ImageError) as info:
            reader(tmp_path / name)
        assert str(info.value).startswith(f"{tmp_path / name}: {reason}")
    assert opened == []
    good = write(tmp_path / "good.jpg", image_bytes(RED))
    assert reader(good) is not None
    assert read_image_file(good) == good.read_bytes()


def test_a_file_replaced_by_a_fifo_after_the_check_is_not_read(tmp_path, make_fifo, monkeypatch):
    """The check on the opened file catches the swap, and opening it does not block."""
    photo = write(tmp_path / "photo.jpg", image_bytes(RED))
    swap_into_fifo(photo, make_fifo, monkeypatch)
    start = time.monotonic()
    with pytest.raises(ImageError, match=rf"^{photo}: a FIFO \(named pipe\), not a regular file"):
        read_image_file(photo)
    assert time.monotonic() - start < GUARD_S / 2


def test_load_image_of_a_file_replaced_by_a_fifo_is_refused(tmp_path, make_fifo, monkeypatch):
    photo = write(tmp_path / "photo.jpg", image_bytes(RED))
    assert load_image(photo).shape[-1] == 3
    swap_into_fifo(photo, make_fifo, monkeypatch)
    with pytest.raises(ImageError, match=rf"^{photo}: a FIFO \(named pipe\), not a regular file"):
        load_image(photo)


def swap_into_fifo(target: Path, make_fifo, monkeypatch) -> None:
    """Turn ``target`` into a FIFO the moment it is opened: after every check before it."""
    real_open = os.open

    def swapping_open(path, flags, *args):
        if os.fspath(path) == str(target) and stat.S_ISREG(os.stat(target).st_mode):
            target.unlink()
            make_fifo(target)
        return real_open(path, flags, *args)

    monkeypatch.setattr(imgrec.core.images.os, "open", swapping_open)


# --- data sets ---------------------------------------------------------------------------


def test_a_folder_data_set_lists_special_entries_and_loads_in_seconds(pets):
    """In a process of its own, with a time limit: a hang fails instead of waiting."""
    script = (
        "import json, sys\n"
        "from imgrec.datasets import load_dataset\n"
        "data = load_dataset(sys.argv[1], image_size=(8, 8), val_split=0, progress=False)\n"
        "print(json.dumps({'labels': data.train.labels.tolist(),\n"
        "                  'skipped': {s.path: s.reason for s in data.skipped}}))\n"
    )
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script, str(pets)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - start < GUARD_S
    result = json.loads(done.stdout)
    assert np.bincount(result["labels"]).tolist() == [4, 3]  # the linked cat counts
    assert_listed(result["skipped"], pets / "cats")


def test_a_data_set_file_replaced_by_a_fifo_while_loading(pets, make_fifo, monkeypatch):
    victim = pets / "cats" / "cat1.jpg"
    swap_into_fifo(victim, make_fifo, monkeypatch)
    start = time.monotonic()
    data = load_dataset(pets, image_size=(8, 8), val_split=0, progress=False)
    assert time.monotonic() - start < GUARD_S / 2
    reasons = {s.path: s.reason for s in data.skipped}
    assert reasons[str(victim)] == "a FIFO (named pipe), not a regular file; not opened"
    assert np.bincount(data.train.labels).tolist() == [3, 3]


def test_a_data_set_path_that_is_a_fifo_is_refused(tmp_path, make_fifo):
    fifo = make_fifo(tmp_path / "pets.zip")
    start = time.monotonic()
    with pytest.raises(DatasetError, match=r"pets\.zip: a FIFO \(named pipe\), not a file"):
        load_dataset(fifo)
    assert time.monotonic() - start < GUARD_S / 2


def test_special_members_of_a_zip_are_skipped_unread(tmp_path):
    path = tmp_path / "pets.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(2):
            archive.writestr(f"cats/{i}.jpg", image_bytes(RED))
            archive.writestr(f"dogs/{i}.png", image_bytes(BLUE, "PNG"))
        for name, kind in (("pipe", stat.S_IFIFO), ("tty", stat.S_IFCHR), ("disk", stat.S_IFBLK)):
            info = zipfile.ZipInfo(f"cats/{name}.jpg")
            info.create_system = 3  # Unix: the high 16 bits are st_mode
            info.external_attr = (kind | 0o644) << 16
            archive.writestr(info, image_bytes(RED))
    data = load_dataset(path, image_size=(8, 8), val_split=0)
    assert np.bincount(data.train.labels).tolist() == [2, 2]
    assert {s.path: s.reason for s in data.skipped} == {
        f"{path}:cats/pipe.jpg": "a FIFO (named pipe) in the archive, not a file; not read",
        f"{path}:cats/tty.jpg": "a character device in the archive, not a file; not read",
        f"{path}:cats/disk.jpg": "a block device in the archive, not a file; not read",
    }


# --- imgrec predict FOLDER ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model_path(tmp_path_factory) -> Path:
    """``tiny_model``, saved as imgrec saves models."""
    import imgrec

    path = tmp_path_factory.mktemp("tiny") / "tiny.keras"
    imgrec.save_model(tiny_model(), path)
    return path


def test_predict_folder_reports_each_special_entry(
    tmp_path, make_fifo, monkeypatch, capsys, tiny_model_path
):
    """An error for each, the photos classified, exit code 1, and no wait."""
    from imgrec.cli import main

    folder = tmp_path / "photos"
    write(folder / "red.jpg", image_bytes(RED))
    write(folder / "blue.png", image_bytes(BLUE, "PNG"))
    special_entries(folder, make_fifo, monkeypatch)
    capsys.readouterr()
    start = time.monotonic()
    code = main(["predict", str(folder), "--model", str(tiny_model_path), "--runtime", "keras"])
    elapsed = time.monotonic() - start
    out, err = capsys.readouterr()
    assert code == 1
    assert elapsed < GUARD_S
    assert f"{len(LISTED)} of {len(LISTED) + 2} images could not be classified" in err
    blocks = {block.split("\n")[0]: block for block in out.split("\n\n") if block.strip()}
    for name in ("red.jpg", "blue.png"):
        assert "error" not in blocks[str(folder / name)]
        assert "red" in blocks[str(folder / name)] and "blue" in blocks[str(folder / name)]
    for name, reason in LISTED.items():
        assert f"error: {folder / name}: {reason}" in blocks[str(folder / name)]


def test_predict_api_gives_error_records_in_folder_order(tmp_path, make_fifo, monkeypatch):
    import imgrec

    folder = tmp_path / "photos"
    write(folder / "a.jpg", image_bytes(RED))
    make_fifo(folder / "b.jpg")
    write(folder / "c.jpg", image_bytes(BLUE))
    fifo = folder / "b.jpg"
    inputs = [folder, fifo]  # the folder, then the FIFO named on its own
    results = imgrec.predict(inputs, tiny_model(), top=1, runtime="keras", verbose=False)
    assert [Path(r["image"]).name for r in results] == ["a.jpg", "b.jpg", "c.jpg", "b.jpg"]
    assert "error" not in results[0] and "error" not in results[2]
    error = {
        "image": str(fifo),
        "error": f"{fifo}: a FIFO (named pipe), not a regular file; not opened",
    }
    assert results[1] == results[3] == error


def tiny_model():
    """A small untrained classifier of 8 x 8 RGB images into "red" and "blue"."""
    import keras

    from imgrec.models.metadata import ModelInfo, attach_info
    from imgrec.models.preprocessing import Preprocessing

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    attach_info(model, ModelInfo("tiny", ("red", "blue"), Preprocessing(size=(8, 8)), "test"))
    return model


def test_oserror_wording_matches_load_image(tmp_path, monkeypatch):
    """An open that fails for another reason says so as load_image does."""
    photo = write(tmp_path / "photo.jpg", image_bytes(RED))

    def failing_open(path, flags, *args):
        raise OSError(errno.EIO, os.strerror(errno.EIO), os.fspath(path))

    monkeypatch.setattr(imgrec.core.images.os, "open", failing_open)
    with pytest.raises(ImageError, match=rf"^{photo}: cannot read it \(Input/output error\)$"):
        read_image_file(photo)
