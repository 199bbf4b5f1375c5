"""The AC-GAN (issue 14): its networks, its training run, ``imgrec generate`` and the
agreement measure, on a tiny generator trained for one short epoch once per module.

The real run (``imgrec train mnist --arch acgan``, minutes) is not repeated here: these
tests check the wiring a real run relies on, cheaply.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from imgrec.cli import main
from imgrec.core.errors import ModelError
from imgrec.evaluation.agreement import agreement_table, generator_agreement
from imgrec.models import acgan
from imgrec.models.loading import load_keras_file, save_model
from imgrec.models.metadata import ModelInfo, attach_info
from imgrec.models.preprocessing import Preprocessing
from imgrec.training.acgan import ACGANTrainer
from imgrec.web.catalog import ModelCatalog, UnknownModelError

DIGITS = tuple(str(d) for d in range(10))


def _digit_folder(root: Path) -> Path:
    """Ten class folders ``0`` ... ``9`` of six 28 x 28 grey PNGs: a bar at a place per class."""
    rng = np.random.default_rng(0)
    for digit in range(10):
        (root / str(digit)).mkdir(parents=True)
        for i in range(6):
            pixels = rng.integers(0, 40, (28, 28), dtype=np.uint8)
            pixels[2 * digit + 2 : 2 * digit + 6, 4:24] = 255
            Image.fromarray(pixels).save(root / str(digit) / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """``imgrec train FOLDER --arch acgan`` for one epoch of four steps; its JSON result."""
    root = tmp_path_factory.mktemp("acgan")
    data = _digit_folder(root / "digits")
    out = root / "models" / "tiny-gan.keras"
    out.parent.mkdir()
    argv = ["train", str(data), "--arch", "acgan", "--epochs", "1", "--batch-size", "16"]
    code, result = _run_json([*argv, "--out", str(out)])
    assert code == 0
    return result


def _run_json(argv: list[str]) -> tuple[int, dict]:
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        code = main([*argv, "--json"])
    return code, json.loads(buffer.getvalue())


@pytest.fixture(scope="module")
def generator(trained) -> keras.Model:
    return load_keras_file(trained["model"])


def test_the_networks_have_the_shapes_of_the_demo():
    generator = acgan.build_generator()
    discriminator = acgan.build_discriminator()
    noise = acgan.draw_noise(3)
    images = generator([noise, np.array([[0], [5], [9]], np.int32)])
    assert tuple(images.shape) == (3, 28, 28, 1)
    real, digit = discriminator(images)
    assert tuple(real.shape) == (3, 1) and tuple(digit.shape) == (3, 10)
    assert acgan.latent_size(generator) == 100 and acgan.class_count(generator) == 10
    assert acgan.is_generator(generator) and not acgan.is_generator(discriminator)


def test_noise_is_uniform_in_the_unit_interval_and_seeded():
    noise = acgan.draw_noise(500, seed=3)
    assert noise.shape == (500, 100) and noise.dtype == np.float32
    assert noise.min() >= -1 and noise.max() <= 1 and noise.min() < -0.99 and noise.max() > 0.99
    assert np.array_equal(noise, acgan.draw_noise(500, seed=3))
    assert not np.array_equal(noise, acgan.draw_noise(500, seed=4))


def test_training_saves_a_generator_with_its_record(trained, generator):
    assert trained["epochs_done"] == 1 and not trained["interrupted"]
    # 60 images in batches of 16: four steps, both networks updated.
    assert set(trained["history_last"]) == {"d_loss", "g_loss", *acgan_accuracies()}
    assert all(np.isfinite(v) for v in trained["history_last"].values())
    assert Path(trained["samples"]).is_file() and Path(trained["history"]).is_file()
    info = json.loads(zipfile.ZipFile(trained["model"]).read("imgrec.json"))
    assert info["class_names"] == list(DIGITS)
    assert info["training"]["architecture"] == "acgan"
    assert info["training"]["epochs_done"] == 1
    assert acgan.is_generator(generator)
    # The file holds Keras's own layers only: no custom object had to be registered.
    config = zipfile.ZipFile(trained["model"]).read("config.json").decode()
    assert "acgan_trainer" not in config and "discriminator" not in config


def acgan_accuracies() -> tuple[str, ...]:
    from imgrec.training.acgan import ACCURACIES

    return ACCURACIES


def test_a_training_step_updates_both_networks():
    generator, discriminator = acgan.build_generator(), acgan.build_discriminator()
    trainer = ACGANTrainer(generator, discriminator)
    trainer.compile(jit_compile=False)
    trainer.build_optimizers()
    before = [w.numpy().copy() for w in (generator.weights[1], discriminator.weights[-1])]
    images = np.random.default_rng(0).uniform(0, 255, (8, 28, 28, 1)).astype(np.float32)
    logs = trainer.train_on_batch(images, np.arange(8).reshape(-1, 1), return_dict=True)
    assert set(logs) == {"d_loss", "g_loss", *acgan_accuracies()}
    after = [w.numpy() for w in (generator.weights[1], discriminator.weights[-1])]
    assert not np.array_equal(before[0], after[0]) and not np.array_equal(before[1], after[1])


def test_generate_is_deterministic_by_seed(generator):
    first = acgan.generate(generator, 7, 4, seed=11)
    assert first.shape == (4, 28, 28, 1) and first.dtype == np.uint8
    assert np.array_equal(first, acgan.generate(generator, 7, 4, seed=11))
    assert not np.array_equal(first, acgan.generate(generator, 7, 4, seed=12))


def test_the_class_reaches_the_generator(generator):
    """The same noise drawn as two classes: the generator's own answer for each class."""
    noise = acgan.draw_noise(2, seed=5)
    for digit in (2, 8):
        expected = generator([noise, np.full((2, 1), digit, np.int32)], training=False)
        expected = np.clip(np.rint(keras.ops.convert_to_numpy(expected)), 0, 255)
        assert np.array_equal(acgan.generate(generator, digit, noise=noise), expected)
    assert not np.array_equal(
        acgan.generate(generator, 2, noise=noise), acgan.generate(generator, 8, noise=noise)
    )


def test_generate_refuses_what_it_cannot_draw(generator):
    with pytest.raises(ModelError, match="0 to 9"):
        acgan.generate(generator, 10)
    with pytest.raises(ModelError, match=r"\(n, 100\)"):
        acgan.generate(generator, 1, noise=np.zeros(99))
    with pytest.raises(ModelError, match=r"\[-1, 1\]"):
        acgan.generate(generator, 1, noise=np.full(100, 2.0))


def test_the_saved_generator_round_trips(tmp_path, generator):
    copy = save_model(generator, tmp_path / "copy.keras")
    again = load_keras_file(copy)
    noise = acgan.draw_noise(3, seed=1)
    assert np.array_equal(
        acgan.generate(generator, 4, noise=noise), acgan.generate(again, 4, noise=noise)
    )


def test_cli_writes_a_grid_or_one_png_per_image(trained, tmp_path, capsys):
    grid = tmp_path / "grid.png"
    assert (
        main(["generate", trained["model"], "--class", "7", "--n", "16", "--out", str(grid)]) == 0
    )
    assert f"wrote a grid of 16 images of class 7: {grid}" in capsys.readouterr().out
    assert Image.open(grid).size == (4 * 28 + 3 * 2, 4 * 28 + 3 * 2)
    folder = tmp_path / "each"
    code, result = _run_json(
        ["generate", trained["model"], "--class", "7", "--n", "3", "--out", f"{folder}/"]
    )
    assert code == 0 and result["classes"] == ["7", "7", "7"]
    assert sorted(p.name for p in folder.iterdir()) == ["0.png", "1.png", "2.png"]
    first = np.asarray(Image.open(folder / "0.png"))
    assert first.shape == (28, 28)
    # The same seed: the folder's first image is the grid's first.
    assert np.array_equal(first, np.asarray(Image.open(grid))[:28, :28])


def test_cli_names_what_is_wrong(trained, tmp_path, capsys):
    classifier = _classifier(tmp_path, DIGITS)
    assert main(["generate", str(classifier), "--out", str(tmp_path / "x.png")]) == 1
    assert "not an AC-GAN generator" in capsys.readouterr().err
    assert main(["generate", trained["model"], "--out", str(tmp_path / "x.jpg")]) == 1
    assert ".png" in capsys.readouterr().err
    assert main(["train", "mnist", "--arch", "acgan", "--augment", "flip"]) == 1
    assert "--augment: not an option of --arch acgan" in capsys.readouterr().err


def _classifier(folder: Path, names: tuple[str, ...]) -> Path:
    """An untrained 28 x 28 grey classifier of ``names``, saved with its metadata."""
    inputs = keras.Input((28, 28, 1))
    hidden = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(len(names), activation="softmax")(hidden))
    info = ModelInfo("tiny", names, Preprocessing(size=(28, 28), name="pixels:0-255"), "test")
    return save_model(attach_info(model, info), folder / f"classifier-{len(names)}.keras")


def test_agreement_counts_what_the_classifier_says(generator, tmp_path):
    path = _classifier(tmp_path, DIGITS)
    result = generator_agreement(generator, path, per_class=5, seed=2, runtime="keras")
    classifier = load_keras_file(path)
    agreed = 0
    for digit in range(10):
        images = acgan.generate(generator, digit, 5, seed=2 + digit)
        said = classifier.predict_on_batch(images.astype(np.float32)).argmax(axis=1)
        row = result["per_class"][str(digit)]
        assert row["asked"] == 5 and row["agreed"] == int((said == digit).sum())
        agreed += row["agreed"]
    assert result["images"] == 50 and result["agreement"] == agreed / 50
    table = agreement_table(result)
    assert table.count("\n") == 12 and f"| all | 50 | {agreed} |" in table
    with pytest.raises(ModelError, match="knows no class 9"):
        generator_agreement(generator, _classifier(tmp_path, DIGITS[:9]), runtime="keras")


def test_evaluate_classifier_prints_the_per_class_table(trained, tmp_path, capsys):
    path = _classifier(tmp_path, DIGITS)
    argv = ["evaluate", trained["model"], "--classifier", str(path), "--per-class", "3"]
    assert main([*argv, "--runtime", "keras"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("30 generated images; the classifier named the class asked for")
    assert "| 9 | 3 |" in out and "| all | 30 |" in out
    assert main([*argv[:2], "mnist", *argv[2:]]) == 1  # a data set too: refused, not ignored
    assert "takes no DATASET" in capsys.readouterr().err
    # Without --classifier, DATASET is still required, as a usage error.
    assert main(["evaluate", str(path)]) == 2
    assert "required: dataset" in capsys.readouterr().err


def test_the_catalog_finds_the_generator_by_its_architecture(trained, tmp_path):
    folder = Path(trained["model"]).parent
    _classifier(folder, DIGITS)
    catalog = ModelCatalog(folder)
    assert catalog.find_architecture("acgan").name == "tiny-gan.keras"
    assert catalog.find_architecture("vae") is None
    assert ModelCatalog(tmp_path).find_architecture("acgan") is None
    # The recognition page offers classifiers only: the generator is the AC-GAN demo's.
    files = [entry.name for entry in catalog.entries() if entry.kind == "file"]
    assert "tiny-gan.keras" not in files and files
    with pytest.raises(UnknownModelError):
        catalog.find("tiny-gan.keras")
