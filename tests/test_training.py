"""`imgrec train` and `imgrec evaluate` on a folder of real JPEGs the test draws.

The photos are two kinds of shapes on noisy backgrounds, in class subfolders, with
a few broken files among them, the way a user's folder looks.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import keras as keras
import numpy as np
import pytest
from PIL import Image, ImageDraw

import imgrec
from imgrec.cli import main
from imgrec.core.errors import ImgrecError
from imgrec.core.native import training_precision
from imgrec.datasets import load_dataset
from imgrec.models.loading import load_keras_file
from imgrec.models.metadata import model_info
from imgrec.training import companion_path, train

# Trains, exports or runs subprocesses for seconds a test: left out of `make check`.
pytestmark = pytest.mark.slow

CLASSES = ("blue", "red")  # sorted, as the folder scan names them
PER_CLASS = 40


def _draw(kind: str, rng: np.random.Generator) -> Image.Image:
    """A red or a blue ball, of any size and place, on a dark noisy background."""
    background = rng.integers(0, 90, (48, 48, 3), dtype=np.uint8)
    image = Image.fromarray(background)
    draw = ImageDraw.Draw(image)
    x, y = rng.integers(2, 24, 2)
    size = int(rng.integers(12, 22))
    strong, weak = int(rng.integers(170, 256)), int(rng.integers(0, 80))
    colour = (strong, weak, weak) if kind == "red" else (weak, weak, strong)
    draw.ellipse((x, y, x + size, y + size), fill=colour)
    return image


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> Path:
    """A class-subfolder data set of JPEGs, plus three broken files."""
    root = tmp_path_factory.mktemp("shapes")
    rng = np.random.default_rng(0)
    for kind in CLASSES:
        (root / kind).mkdir()
        for i in range(PER_CLASS):
            _draw(kind, rng).save(root / kind / f"{i:03d}.jpg", quality=92)
    (root / "red" / "empty.jpg").write_bytes(b"")
    (root / "blue" / "notes.jpg").write_text("not a photo")
    good = (root / "blue" / "000.jpg").read_bytes()
    (root / "blue" / "truncated.jpg").write_bytes(good[: len(good) // 3])
    return root


@pytest.fixture(scope="module")
def trained(shapes, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("run") / "shapes.keras"
    return train(
        shapes,
        "cifar-cnn",
        out=out,
        epochs=6,
        batch_size=16,
        lr=1e-3,
        image_size=(32, 32),
        augment="flip,rotate=10",
        val_split=0.25,
        seed=1,
        verbose=0,
    )


def test_training_learns_and_writes_everything(trained):
    assert trained["epochs_done"] >= 3
    assert trained["best_val_accuracy"] >= 0.85
    assert trained["precision"] == "float32"  # only fast-cnn's recipe asks for bfloat16
    for key in ("model", "last", "history", "curves"):
        assert Path(trained[key]).is_file(), key
    history = json.loads(Path(trained["history"]).read_text())
    assert len(history["loss"]) == trained["epochs_done"]
    assert {"val_loss", "val_accuracy", "accuracy"} <= set(history)
    with Image.open(trained["curves"]) as curves:
        assert curves.format == "PNG"


def test_broken_files_are_skipped_and_listed(trained):
    skipped = {Path(s["path"]).name: s["reason"] for s in trained["skipped"]}
    assert set(skipped) == {"empty.jpg", "notes.jpg", "truncated.jpg"}
    listed = json.loads(companion_path(trained["model"], ".skipped.json").read_text())
    assert {Path(s["path"]).name for s in listed} == set(skipped)


def test_saved_model_predicts_with_the_users_class_names(trained, shapes):
    model = load_keras_file(trained["model"])
    info = model_info(model)
    assert info.class_names == CLASSES
    assert info.training["dataset"]["fingerprint"]
    assert info.training["augment"] == "flip,rotate=10"
    results = imgrec.predict([shapes / "red" / "001.jpg"], trained["model"], top=2)
    assert {c["class"] for c in results[0]["top"]} == set(CLASSES)
    assert "error" not in results[0]


def test_saved_file_is_a_plain_keras_model_with_optimizer_state(trained):
    """Architecture, weights, compile information and optimizer state in one file."""
    import keras

    model = keras.saving.load_model(trained["last"], safe_mode=True)
    assert model.optimizer is not None
    assert int(model.optimizer.iterations) > 0
    assert model.loss == "sparse_categorical_crossentropy"
    with zipfile.ZipFile(trained["last"]) as archive:
        assert "imgrec.json" in archive.namelist()


def test_evaluate_reports_numbers_and_pictures(trained, shapes, tmp_path):
    report = tmp_path / "report"
    result = imgrec.evaluate(trained["model"], shapes, report=report, top_k=5)
    assert result["split"] == "val"
    assert result["top_k"] == 2 and result["top_k_accuracy"] == 1.0
    assert 0.8 <= result["accuracy"] <= 1.0
    matrix = np.array(result["confusion_matrix"])
    assert matrix.sum() == result["images"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(result["accuracy"])
    assert set(result["per_class"]) == set(CLASSES)
    saved = json.loads((report / "metrics.json").read_text())
    assert saved["accuracy"] == result["accuracy"]
    with Image.open(report / "confusion_matrix.png") as png:
        assert png.format == "PNG"


def test_evaluate_refuses_data_with_other_classes(trained, tmp_path):
    other = tmp_path / "other"
    for kind in ("cats", "dogs"):
        (other / kind).mkdir(parents=True)
        for i in range(3):
            _draw("red", np.random.default_rng(i)).save(other / kind / f"{i}.jpg")
    with pytest.raises(ImgrecError, match="classes"):
        imgrec.evaluate(trained["model"], other)


def test_evaluate_draws_the_validation_split_the_run_held_out(shapes, tmp_path):
    # With a limit per class the validation images come from the limited ones; an
    # evaluation drawing them from all images would test on training images.
    result = train(
        shapes, "cifar-cnn", out=tmp_path / "limited.keras", epochs=1, batch_size=16,
        image_size=(32, 32), val_split=0.25, limit_per_class=12, seed=3, verbose=0,
    )  # fmt: skip
    held_out = load_dataset(
        shapes, image_size=(32, 32), val_split=0.25, limit_per_class=12, seed=3
    ).val
    evaluated = imgrec.evaluate(result["model"], shapes)
    assert evaluated["split"] == "val"
    assert evaluated["images"] == len(held_out.labels) == 2 * 3


def test_resume_continues_epochs_and_optimizer(trained, shapes):
    last = trained["last"]
    before = load_keras_file(last, compile=True)
    steps_before = int(before.optimizer.iterations)
    done = model_info(before).training["epochs_done"]
    out = Path(trained["model"]).with_name("resumed.keras")
    result = train(shapes, resume=last, out=out, epochs=done + 2, patience=0, verbose=0)
    assert result["epochs_done"] == done + 2
    after = load_keras_file(result["last"], compile=True)
    # Two more epochs at the run's own batch size (16), which the schedule counts on.
    train_images = len(
        load_dataset(shapes, image_size=(32, 32), val_split=0.25, seed=1).train.labels
    )
    assert int(after.optimizer.iterations) == steps_before + 2 * math.ceil(train_images / 16)
    history = json.loads(Path(result["history"]).read_text())
    assert len(history["loss"]) == done + 2  # the earlier epochs are kept


def test_same_seed_same_split_and_result(shapes, tmp_path):
    runs = [
        train(
            shapes,
            "cifar-cnn",
            out=tmp_path / f"run{i}.keras",
            epochs=2,
            batch_size=16,
            image_size=(32, 32),
            seed=7,
            verbose=0,
        )
        for i in range(2)
    ]
    histories = [json.loads(Path(r["history"]).read_text()) for r in runs]
    np.testing.assert_allclose(histories[0]["loss"], histories[1]["loss"], rtol=1e-5)
    np.testing.assert_allclose(histories[0]["val_loss"], histories[1]["val_loss"], rtol=1e-5)


def test_sigint_saves_and_resume_reaches_the_asked_epochs(shapes, tmp_path):
    """Ctrl-C during training: a clean exit with the state saved; --resume finishes."""
    out = tmp_path / "interrupted.keras"
    history = companion_path(out, ".history.json")
    command = [
        sys.executable, "-m", "imgrec", "train", str(shapes), "--arch", "cifar-cnn",
        "--epochs", "40", "--batch-size", "8", "--image-size", "32", "--patience", "0",
        "--out", str(out), "--quiet",
    ]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not history.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert history.exists(), "no epoch finished in time"
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    assert "Traceback" not in stderr
    assert "interrupted after epoch" in stdout
    last = companion_path(out, ".last.keras")
    done = model_info(load_keras_file(last)).training["epochs_done"]
    assert 1 <= done < 40

    code = main([
        "train", str(shapes), "--resume", str(last), "--epochs", str(done + 1),
        "--out", str(out), "--quiet",
    ])  # fmt: skip
    assert code == 0
    assert model_info(load_keras_file(last)).training["epochs_done"] == done + 1


def test_cli_train_summary_and_bad_input(shapes, tmp_path, capsys):
    assert main(["summary", "cifar-cnn"]) == 0
    assert "453,786" in capsys.readouterr().out
    assert main(["summary", "catdog-cnn"]) == 0
    assert "29,511,617" in capsys.readouterr().out
    assert (
        main(["train", str(shapes), "--arch", "no-such-net", "--out", str(tmp_path / "m.keras")])
        == 1
    )
    assert "no-such-net" in capsys.readouterr().err
    assert main(["train", str(tmp_path / "missing"), "--out", str(tmp_path / "m.keras")]) == 1
    assert "missing" in capsys.readouterr().err
    assert (
        main(["train", str(shapes), "--augment", "spin=3", "--out", str(tmp_path / "m.keras")]) == 1
    )
    assert "spin" in capsys.readouterr().err


def test_fast_cnn_trains_with_its_recipe_and_resumes(shapes, tmp_path):
    result = train(shapes, "fast-cnn", out=tmp_path / "fast.keras", epochs=6, batch_size=16,
                   val_split=0.25, seed=2, verbose=0)  # fmt: skip
    assert result["best_val_accuracy"] >= 0.85
    last = load_keras_file(result["last"], compile=True)
    record = model_info(last).training
    assert record["augment"] == "flip"  # the recipe's, as none was asked
    # ... mirrored every other epoch as the batches are cut, not by a layer of the model
    assert record["alternate_flips"] is True
    assert "augmentation" not in [layer.name for layer in last.layers]  # flip was all of it
    assert model_info(last).tta == "flip"  # the recipe's test-time augmentation, recorded
    assert isinstance(last.optimizer, keras.optimizers.SGD) and last.optimizer.nesterov
    assert last.loss.get_config()["label_smoothing"] == 0.2
    kernel = last.get_layer("whiten").get_weights()[0]
    assert kernel.shape == (2, 2, 3, 24) and np.abs(kernel).max() > 1  # set from the photos
    # bfloat16 where this CPU has it natively; the model and its file stay float32
    assert record["precision"] == "bfloat16"
    assert result["precision"] == training_precision("bfloat16")
    assert {layer.dtype_policy.name for layer in last.layers} == {"float32"}
    assert {w.dtype for w in last.get_weights()} == {np.dtype("float32")}
    resumed = train(shapes, resume=result["last"], epochs=7, patience=0, verbose=0)
    assert resumed["epochs_done"] == 7
    assert resumed["precision"] == result["precision"]  # the run's own, on resume
    assert model_info(load_keras_file(resumed["last"])).tta == "flip"


def test_fast_cnn_takes_its_recipes_batch_size_and_no_flip_means_no_flip_tta(shapes, tmp_path):
    result = train(shapes, "fast-cnn", out=tmp_path / "fast.keras", epochs=1,
                   augment="shift=0.07", verbose=0)  # fmt: skip
    info = model_info(load_keras_file(result["last"]))
    assert info.training["batch_size"] == 256
    assert info.tta is None  # trained without mirrored images: no mirrored views either
    assert "alternate_flips" not in info.training  # nothing to alternate
    assert info.training["val_split"] == 0.1  # no test split of its own: 10 % held out
    assert result["validated"]


@pytest.fixture(scope="module")
def shapes_with_test(shapes, tmp_path_factory) -> Path:
    """The shapes in ``train/`` and ``test/`` folders: a data set with a test split."""
    root = tmp_path_factory.mktemp("shapes_with_test")
    for kind in CLASSES:
        photos = sorted((shapes / kind).glob("*.jpg"))
        for part, chosen in (("train", photos[:30]), ("test", photos[30:])):
            (root / part / kind).mkdir(parents=True)
            for photo in chosen:
                (root / part / kind / photo.name).write_bytes(photo.read_bytes())
    return root


def test_fast_cnn_trains_on_every_image_where_a_test_split_measures_it(
    shapes_with_test, tmp_path, capsys
):
    out = tmp_path / "all.keras"
    assert main(["train", str(shapes_with_test), "--arch", "fast-cnn", "--epochs", "1",
                 "--batch-size", "16", "--out", str(out)]) == 0  # fmt: skip
    assert "(training accuracy " in capsys.readouterr().out  # not called validation
    record = model_info(load_keras_file(out)).training
    assert record["val_split"] == 0.0
    # evaluate measures it on the test split, and a resume keeps the run's split
    assert imgrec.evaluate(out, shapes_with_test)["split"] == "test"
    resumed = train(shapes_with_test, resume=companion_path(out, ".last.keras"), epochs=2,
                    verbose=0)  # fmt: skip
    assert resumed["epochs_done"] == 2 and not resumed["validated"]
    # a validation fraction the run names is the run's
    named = train(shapes_with_test, "fast-cnn", out=tmp_path / "named.keras", epochs=1,
                  batch_size=16, val_split=0.2, class_weight="balanced", verbose=0)  # fmt: skip
    assert named["validated"]  # (and class weights reach the alternating flips' batches)
    assert model_info(load_keras_file(named["last"])).training["val_split"] == 0.2
    # the other recipes hold out imgrec's default
    cnn = train(shapes_with_test, "cifar-cnn", out=tmp_path / "cnn.keras", epochs=1, verbose=0)
    assert cnn["validated"]
