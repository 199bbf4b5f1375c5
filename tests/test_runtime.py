"""``imgrec.deploy.runtime``: ONNX Runtime or Keras, the export cache, and batch prediction.

What users rely on: the ONNX runtime answers as Keras does; ``auto`` exports a model
once and then reuses the export; a model file that changes gets a new export; a
cached file that was altered is not used; a model that cannot be exported still
runs, on Keras; a folder is classified in batches with the same answers.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import keras
import numpy as np
import pytest

import imgrec
import imgrec.deploy.export_cache
from imgrec.cli import main
from imgrec.core.errors import ModelError
from imgrec.core.samples import sample_path
from imgrec.datasets import load_dataset
from imgrec.deploy.export_cache import cache_dir, load_runtime
from imgrec.deploy.exporter import export
from imgrec.deploy.runtime import KerasRuntime, OnnxRuntime, predict_probabilities
from imgrec.deploy.sidecar import sidecar_path
from imgrec.models.chapter import build_chapter_network
from imgrec.models.loading import save_model
from imgrec.models.metadata import ModelInfo, attach_info
from imgrec.models.preprocessing import Preprocessing
from imgrec.prediction import predict_many

# Trains, exports or runs subprocesses for seconds a test: left out of `make check`.
pytestmark = pytest.mark.slow

CLASSES = ("a", "b", "c")


def tiny_model(seed: int) -> keras.Model:
    """A small cifar-cnn with random weights (``seed``) and imgrec metadata."""
    keras.utils.set_random_seed(seed)
    model = build_chapter_network("cifar-cnn", (16, 16, 3), len(CLASSES))
    return attach_info(model, ModelInfo("tiny", CLASSES, Preprocessing(size=(16, 16)), "random"))


def random_batch(count: int = 6) -> np.ndarray:
    return np.random.default_rng(3).uniform(0, 255, (count, 16, 16, 3)).astype(np.float32)


def forbid_export(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any export fail loudly: what follows must be served from the cache."""

    def refuse(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(imgrec.deploy.export_cache, "export", refuse)


def predict_json(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[list[dict], str]:
    capsys.readouterr()
    assert main(["predict", *(str(a) for a in args), "--json"]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


@pytest.fixture
def model_file(tmp_path) -> Path:
    path = tmp_path / "tiny.keras"
    save_model(tiny_model(0), path)
    return path


def test_onnx_runtime_gives_keras_top5_on_chelsea(capsys, mobilenet, chelsea_path):
    """``predict --runtime onnx``: the same five classes, the same probabilities."""
    (keras_record,), _ = predict_json(capsys, chelsea_path, "--runtime", "keras")
    (onnx_record,), _ = predict_json(capsys, chelsea_path, "--runtime", "onnx")
    assert keras_record["runtime"] == "keras"
    assert onnx_record["runtime"] == "onnx"
    assert onnx_record["top"][0]["class"] == "Egyptian cat"
    assert [c["index"] for c in onnx_record["top"]] == [c["index"] for c in keras_record["top"]]
    np.testing.assert_allclose(
        [c["probability"] for c in onnx_record["top"]],
        [c["probability"] for c in keras_record["top"]],
        atol=1e-4,
    )


def test_auto_exports_once_then_uses_the_cache(model_file, capsys, monkeypatch):
    first = load_runtime(model_file)
    assert isinstance(first, OnnxRuntime)
    assert f"exporting {model_file} to ONNX" in capsys.readouterr().err
    assert first.path.parent == cache_dir()
    written = first.path.stat().st_mtime_ns

    forbid_export(monkeypatch)
    second = load_runtime(model_file, "auto")
    assert second.path == first.path
    assert second.path.stat().st_mtime_ns == written
    assert capsys.readouterr().err == ""
    model = imgrec.load_model(model_file)
    np.testing.assert_allclose(
        second.predict(random_batch()), KerasRuntime(model).predict(random_batch()), atol=1e-5
    )


def test_a_changed_model_file_is_exported_again(model_file, capsys):
    # Weights of this test's own: exports are keyed by content, and another test's
    # file saved in the same second (Keras records the time) has the same bytes.
    save_model(tiny_model(5), model_file)
    old = load_runtime(model_file)
    save_model(tiny_model(1), model_file)  # trained again: same file, new weights
    capsys.readouterr()
    new = load_runtime(model_file)
    assert f"exporting {model_file}" in capsys.readouterr().err
    assert new.path != old.path
    assert not old.path.exists()  # the stale export of this file is removed
    assert not sidecar_path(old.path).exists()
    keras_now = KerasRuntime(imgrec.load_model(model_file))
    np.testing.assert_allclose(
        new.predict(random_batch()), keras_now.predict(random_batch()), atol=1e-5
    )


@pytest.mark.parametrize("damage", ["garbage", "another model"])
def test_an_altered_cache_file_is_not_trusted(damage, model_file, tmp_path, capsys):
    """Random bytes, or a valid ONNX file of a different model put in its place."""
    cached = load_runtime(model_file).path
    if damage == "garbage":
        cached.write_bytes(np.random.default_rng(0).bytes(2048))
    else:
        hostile = tmp_path / "hostile.onnx"
        export(tiny_model(7), hostile)
        cached.write_bytes(hostile.read_bytes())
    capsys.readouterr()
    runtime = load_runtime(model_file, "onnx")
    err = capsys.readouterr().err
    assert "not using the cached export" in err
    assert f"exporting {model_file}" in err
    keras_model = KerasRuntime(imgrec.load_model(model_file))
    np.testing.assert_allclose(
        runtime.predict(random_batch()), keras_model.predict(random_batch()), atol=1e-5
    )


def test_an_exported_onnx_file_is_a_model_on_its_own(tmp_path, chelsea_path):
    """``--model file.onnx`` needs only the file and its sidecar; a changed file is refused."""
    model = tiny_model(0)
    path = tmp_path / "tiny.onnx"
    export(model, path)
    (record,) = imgrec.predict(chelsea_path, path, top=3)
    assert record["runtime"] == "onnx"
    (expected,) = imgrec.predict(chelsea_path, model, top=3, runtime="keras")
    assert [c["class"] for c in record["top"]] == [c["class"] for c in expected["top"]]

    path.write_bytes(path.read_bytes() + b"\0")
    with pytest.raises(ModelError, match="changed after it was exported"):
        load_runtime(path)
    sidecar_path(path).unlink()
    with pytest.raises(ModelError, match=r"no tiny\.onnx\.json beside it"):
        load_runtime(path)


def test_a_model_that_cannot_be_exported_runs_on_keras(capsys, monkeypatch):
    """``auto`` says why and uses Keras, and does not try again; ``onnx`` raises."""

    class AlwaysNoisy(keras.layers.Layer):
        def call(self, x):
            return x + 0 * keras.random.uniform(keras.ops.shape(x), seed=1)

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(
        keras.layers.Flatten()(AlwaysNoisy()(inputs))
    )
    model = attach_info(
        keras.Model(inputs, outputs),
        ModelInfo("noisy", ("x", "y"), Preprocessing(size=(8, 8)), "test"),
    )
    runtime = load_runtime(model, "auto")
    assert isinstance(runtime, KerasRuntime)
    assert "running Keras: noisy: cannot" in capsys.readouterr().err

    forbid_export(monkeypatch)
    assert isinstance(load_runtime(model, "auto"), KerasRuntime)
    assert "could not be exported before" in capsys.readouterr().err
    monkeypatch.undo()
    with pytest.raises(ModelError, match="noisy"):
        load_runtime(model, "onnx")


def test_evaluate_on_either_runtime_gives_the_same_report():
    digits = load_dataset("digits", val_split=0.1, seed=0, progress=False)
    keras.utils.set_random_seed(4)
    model = build_chapter_network("cifar-cnn", (8, 8, 1), 10)
    info = ModelInfo("digits", digits.class_names, Preprocessing(size=(8, 8)), "random")
    attach_info(model, info)
    on_keras = imgrec.evaluate(model, digits, runtime="keras")
    on_onnx = imgrec.evaluate(model, digits, runtime="onnx")
    assert on_onnx["images"] == len(digits.test) == on_keras["images"]
    assert on_onnx["confusion_matrix"] == on_keras["confusion_matrix"]
    np.testing.assert_allclose(
        predict_probabilities(load_runtime(model, "onnx"), digits.test.images, 64),
        predict_probabilities(model, digits.test.images, 64),
        atol=1e-5,
    )


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    """The four sample photos twice over, and one broken file among them."""
    folder = tmp_path_factory.mktemp("batch")
    for copy in range(2):
        for name in ("chelsea", "coffee", "astronaut", "rocket"):
            source = sample_path(name)
            (folder / f"{copy}-{name}{source.suffix}").write_bytes(source.read_bytes())
    (folder / "1-broken.jpg").write_text("not a photo")
    return folder


def test_batches_give_the_answers_of_single_images(mobilenet, photo_folder):
    one = predict_many(photo_folder, mobilenet, batch_size=1, top=3)
    batched = predict_many(photo_folder, mobilenet, batch_size=4, threads=2, top=3)
    assert batched["runtime"] == "onnx"
    assert batched["images"] == 9
    assert batched["classified"] == 8
    assert batched["images_per_second"] > 0
    for single, many in zip(one["results"], batched["results"], strict=True):
        assert single["image"] == many["image"]
        if "error" in single:
            assert many["error"] == single["error"]
            assert "not an image" in many["error"]
            continue
        assert [c["index"] for c in many["top"]] == [c["index"] for c in single["top"]]
        np.testing.assert_allclose(
            [c["probability"] for c in many["top"]],
            [c["probability"] for c in single["top"]],
            atol=1e-4,
        )


def test_cli_folder_in_batches_writes_csv_and_throughput(capsys, photo_folder, tmp_path):
    out_csv = tmp_path / "out.csv"
    capsys.readouterr()
    code = main(["predict", str(photo_folder), "--batch-size", "32", "--csv", str(out_csv)])
    captured = capsys.readouterr()
    assert code == 1  # one broken file
    assert "8 of 9 images in" in captured.out
    assert "images/s (onnx runtime, batch size 32" in captured.out
    with out_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9
    cats = [r for r in rows if "chelsea" in r["image"]]
    assert [r["class_1"] for r in cats] == ["Egyptian cat", "Egyptian cat"]
    assert [r["error"] != "" for r in rows].count(True) == 1
