"""The chapter's programs in examples/ run end to end on tiny data in the real formats.

Each script runs as a user would run it, in a subprocess, which inherits the session's
isolated environment (IMGREC_OFFLINE=1, an empty KERAS_HOME: no ResNet50 weights).
"""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from warm_imgrec import shared

# Trains, exports or runs subprocesses for seconds a test: left out of `make check`.
pytestmark = pytest.mark.slow

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CIFAR10_CLASSES = [
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
]  # fmt: skip


def run_example(name: str, *args: str, cwd: Path) -> str:
    """Run examples/``name``; on failure show its output. Returns stdout and stderr.

    ``python SCRIPT`` as tests/warm_imgrec.py's launcher runs it: the script in a process
    of its own, forked from one that imported TensorFlow already (8 s less each).
    """
    python = shared("examples", dict(os.environ)).bin / "python"
    proc = subprocess.run(
        [str(python), str(EXAMPLES / name), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{name} exited with {proc.returncode}:\n{output[-4000:]}"
    return output


def write_cifar10_tarball(path: Path, per_class: int, test_per_class: int) -> Path:
    """CIFAR-10's "python version": pickled batches of planar rows, in a .tar.gz."""
    rng = np.random.default_rng(0)
    members = {}
    batches = (("data_batch_1", per_class // 2), ("data_batch_2", per_class - per_class // 2))
    for name, count in (*batches, ("test_batch", test_per_class)):
        labels = [i % 10 for i in range(10 * count)]
        images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
        rows = images.transpose(0, 3, 1, 2).reshape(len(labels), 3072)  # R, G, B planes
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": rows}
        members[name] = pickle.dumps(batch, protocol=2)
    meta = {b"label_names": [n.encode() for n in CIFAR10_CLASSES]}
    members["batches.meta"] = pickle.dumps(meta, protocol=2)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_cifar10_cnn(tmp_path):
    tarball = write_cifar10_tarball(tmp_path / "cifar-10-python.tar.gz", 20, 2)
    out = tmp_path / "cnn.keras"
    args = ("--epochs", "1", "--limit-per-class", "10", "--out", str(out))
    output = run_example("cifar10_cnn.py", str(tarball), *args, cwd=tmp_path)
    assert "Total params: 453,786" in output  # the chapter's count
    assert "90 images (9 per class)" in output  # --limit-per-class 10, less 10 % val
    assert "test accuracy" in output
    assert out.is_file()
    predictions = [line for line in output.splitlines() if "predicted" in line]
    assert len(predictions) == 5
    assert all(line.split()[1] in CIFAR10_CLASSES for line in predictions)


def test_dogs_vs_cats(tmp_path):
    """Kaggle's layout, train/cat.N.jpg and train/dog.N.jpg, with one broken JPEG."""
    folder = tmp_path / "dogs-vs-cats" / "train"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for label, colour in (("cat", (200, 60, 40)), ("dog", (40, 60, 200))):
        for i in range(12):
            noise = rng.integers(-30, 30, (40, 40, 3))
            pixels = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{label}.{i}.jpg", quality=90)
    (folder / "cat.666.jpg").write_bytes(b"")  # Microsoft's zip has an empty one too
    out = tmp_path / "dogs.keras"
    args = ("--epochs", "1", "--image-size", "32", "--out", str(out))
    output = run_example("dogs_vs_cats.py", str(tmp_path / "dogs-vs-cats"), *args, cwd=tmp_path)
    assert "Total params: 1,200,065" in output  # 29,511,617 at 128 x 128
    assert "skipped 1 file" in output
    assert "skipped " + str(folder / "cat.666.jpg") in output
    assert "validation accuracy" in output
    assert out.is_file()


def test_resnet50_dog_falls_back_to_mobilenet_v2(tmp_path):
    output = run_example("resnet50_dog.py", cwd=tmp_path)
    assert "a cat (the chapter's photo is a dog)" in output
    assert "ResNet50's ImageNet weights are absent" in output
    assert "resnet50_weights_tf_dim_ordering_tf_kernels.h5" in output  # what to get
    assert str(Path(os.environ["KERAS_HOME"]) / "models") in output  # and where to put it
    assert "MobileNetV2" in output
    assert "1. Egyptian cat" in output
    assert "inference:" in output and " ms " in output


def test_mobilenet_transfer_on_digits(tmp_path):
    output = run_example(
        "mobilenet_transfer.py", "digits", "--epochs", "2", "--image-size", "48",
        "--limit-per-class", "20", cwd=tmp_path,
    )  # fmt: skip
    assert "offline package" in output
    assert "Keras, backbone in the loop:" in output
    assert "imgrec, cached features:" in output
    assert (tmp_path / "mobilenet_transfer.keras").is_file()
