"""Transfer learning from the offline MobileNetV2: the chapter's three strategies.

Small real data so that CPUs can do it: scikit-learn's digits (8 x 8 grey, resized up
inside the model) and a folder of JPEGs the test draws.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

import imgrec
from imgrec.core.errors import ImgrecError
from imgrec.core.storage import imgrec_home
from imgrec.datasets import load_dataset
from imgrec.models.loading import load_keras_file
from imgrec.models.metadata import model_info
from imgrec.training.fit import train
from imgrec.training.transfer import BACKBONE_LAYER

# Trains, exports or runs subprocesses for seconds a test: left out of `make check`.
pytestmark = pytest.mark.slow

SIZE = (64, 64)  # the backbone's input: small, to keep CPU time down


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", limit_per_class=30, val_split=0.3, seed=0, progress=False)


@pytest.fixture(scope="module")
def head_run(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("head") / "digits-head.keras"
    return train(
        digits, "mobilenet_v2", transfer="head", image_size=SIZE, epochs=15, out=out, verbose=0
    )


@pytest.fixture(scope="module")
def scratch_run(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("scratch") / "digits-scratch.keras"
    return train(
        digits, "mobilenet_v2", transfer="scratch", image_size=SIZE, epochs=3, out=out, verbose=0
    )


def test_head_trains_only_a_new_classifier(head_run):
    (stage,) = head_run["stages"]
    assert stage == {"stage": "head", "trainable": 1280 * 10 + 10, "frozen": 2_257_984 + 12}
    assert head_run["best_val_accuracy"] > 0.7


def test_head_beats_scratch_on_small_data(head_run, scratch_run):
    model = load_keras_file(scratch_run["model"])
    statistics = sum(
        int(np.prod(w.shape)) for w in model.non_trainable_weights if "moving" in w.path
    )
    # From scratch everything learns but BatchNorm's running statistics and the fixed
    # input normalisation (a 3 x 3 kernel and 3 biases).
    assert scratch_run["stages"][0]["frozen"] == statistics + 12
    assert head_run["best_val_accuracy"] > scratch_run["best_val_accuracy"] + 0.2


def test_result_is_one_keras_file_used_like_any_model(head_run, digits):
    model = load_keras_file(head_run["model"])
    info = model_info(model)
    assert info.class_names == digits.class_names
    assert info.training["strategy"] == "head"
    assert "offline package" in info.weights
    image = np.asarray(digits.test.images[0])
    (result,) = imgrec.predict(image, model, top=3)
    assert result["top"][0]["class"] in digits.class_names
    metrics = imgrec.evaluate(model, digits)
    assert metrics["accuracy"] > 0.7


def test_frozen_backbone_keeps_imagenet_weights_and_batchnorm_statistics(head_run):
    trained = load_keras_file(head_run["model"]).get_layer(BACKBONE_LAYER)
    pretrained = imgrec.load_model("mobilenet_v2")
    for name in ("Conv1", "bn_Conv1", "block_16_project_BN"):
        for got, want in zip(
            trained.get_layer(name).get_weights(),
            pretrained.get_layer(name).get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(got, want)


def test_features_are_cached_and_reused(digits, head_run, tmp_path):
    cache = imgrec_home() / "features"
    before = {p: p.stat().st_mtime_ns for p in cache.iterdir()}
    assert before, "the first run cached its features"
    again = train(
        digits,
        "mobilenet_v2",
        transfer="head",
        image_size=SIZE,
        epochs=2,
        out=tmp_path / "again.keras",
        verbose=0,
    )
    assert {p: p.stat().st_mtime_ns for p in cache.iterdir()} == before
    assert again["epochs_done"] == 2


def test_finetune_trains_head_then_upper_layers_with_batchnorm_frozen(digits, tmp_path):
    result = train(
        digits,
        "mobilenet_v2",
        transfer="finetune",
        unfreeze_from="block_15_expand",
        image_size=SIZE,
        epochs=4,
        out=tmp_path / "finetune.keras",
        verbose=0,
    )
    head, finetune = result["stages"]
    assert head["stage"] == "head" and finetune["stage"] == "finetune"
    assert finetune["trainable"] > head["trainable"]
    assert result["epochs_done"] == 4
    history = json.loads(Path(result["history"]).read_text())
    assert history["learning_rate"][-1] == pytest.approx(history["learning_rate"][0] / 10)

    backbone = load_keras_file(result["model"]).get_layer(BACKBONE_LAYER)
    pretrained = imgrec.load_model("mobilenet_v2")

    def same(name: str) -> bool:
        return all(
            np.array_equal(a, b)
            for a, b in zip(
                backbone.get_layer(name).get_weights(),
                pretrained.get_layer(name).get_weights(),
                strict=True,
            )
        )

    assert same("block_1_expand")  # below the unfrozen part
    assert same("block_16_project_BN")  # BatchNorm stays frozen
    assert not same("block_16_project")  # above: trained


def test_photo_folder_with_augmentation_recomputes_features(tmp_path, capsys):
    rng = np.random.default_rng(0)
    for kind, colour in (("red", (220, 30, 30)), ("blue", (30, 30, 220))):
        (tmp_path / "photos" / kind).mkdir(parents=True)
        for i in range(8):
            image = Image.fromarray(rng.integers(0, 80, (40, 40, 3), dtype=np.uint8))
            x, y = rng.integers(2, 18, 2)
            ImageDraw.Draw(image).ellipse((x, y, x + 18, y + 18), fill=colour)
            image.save(tmp_path / "photos" / kind / f"{i}.jpg")
    result = train(
        tmp_path / "photos",
        "mobilenet_v2",
        transfer="head",
        augment="flip",
        image_size=SIZE,
        epochs=2,
        val_split=0.25,
        out=tmp_path / "photos.keras",
    )
    assert "features are recomputed" in capsys.readouterr().err
    assert model_info(load_keras_file(result["model"])).class_names == ("blue", "red")


def test_bad_transfer_options_are_refused(digits, tmp_path):
    with pytest.raises(ImgrecError, match="--freeze"):
        train(digits, "mobilenet_v2", transfer="head", freeze=3, out=tmp_path / "m.keras")
    with pytest.raises(ImgrecError, match="zoo network"):
        train(digits, "cifar-cnn", transfer="head", out=tmp_path / "m.keras")
    with pytest.raises(ImgrecError, match="no layer"):
        train(
            digits,
            "mobilenet_v2",
            transfer="finetune",
            unfreeze_from="nope",
            image_size=SIZE,
            epochs=2,
            out=tmp_path / "m.keras",
            verbose=0,
        )


def test_head_progress_bar_counts_true_steps_and_fits(digits, head_run, tmp_path, capsys):
    """Several steps run per call on cached features; the bar still counts real steps."""
    capsys.readouterr()
    train(
        digits, "mobilenet_v2", transfer="head", image_size=SIZE, epochs=2, batch_size=16,
        out=tmp_path / "bar.keras", verbose=1,
    )  # fmt: skip
    text = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)
    steps = -(-len(digits.train.labels) // 16)
    assert steps > 1
    bars = re.findall(r"(\d+)/(\d+) (━*)", text)
    assert bars, text
    for done, target, bar in bars:
        assert int(target) == steps and 1 <= int(done) <= steps, text
        assert len(bar) == 20, text
    assert re.findall(r"Epoch (\d+)/(\d+)", text) == [("1", "2"), ("2", "2")]
