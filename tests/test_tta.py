"""Test-time augmentation (``imgrec.models.tta``): the views, the averages, the model's
recorded default, and the same answers on Keras, ONNX Runtime and the batch workers.

Cheap on purpose: two dense models on 6 x 6 grey images, built here with chosen or
seeded weights (never trained), and one in-process ONNX export for the module.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

from imgrec.cli import main
from imgrec.core.errors import ModelError, SpecError
from imgrec.deploy.batch_worker import BatchClassifier, worker_model
from imgrec.deploy.exporter import export
from imgrec.deploy.runtime import KerasRuntime, open_onnx, predict_probabilities
from imgrec.deploy.sidecar import read_sidecar
from imgrec.evaluation.report import evaluate
from imgrec.models.loading import load_model, save_model
from imgrec.models.metadata import ModelInfo, attach_info, model_info
from imgrec.models.preprocessing import Preprocessing
from imgrec.models.tta import check_tta, mirror, predict_with_tta, shift, tta_views
from imgrec.prediction import predict, predict_many

SIZE = 6
PIXELS = Preprocessing(size=(SIZE, SIZE), scale=1 / 255, name="pixels:0-1")


def grey_images(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, SIZE, SIZE, 1), dtype=np.uint8)


def sided(bright_left: bool, seed: int = 0) -> np.ndarray:
    """A 6 x 6 grey image, bright on one half, dark on the other, with some noise."""
    image = grey_images(1, seed)[0] // 8
    bright = slice(0, SIZE // 2) if bright_left else slice(SIZE // 2, SIZE)
    image[:, bright] += 200
    return image


def asymmetric_model(tta: str | None = None) -> keras.Model:
    """Class "left" when the left half is brighter, "right" otherwise, confidently.

    Its two logits are +-(left half - right half): a mirror swaps them exactly, so the
    mean over an image and its mirror is 0.5 for each class, whatever the image.
    """
    inputs = keras.Input((SIZE, SIZE, 1))
    dense = keras.layers.Dense(2, activation="softmax")
    outputs = dense(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    sign = np.where(np.arange(SIZE) < SIZE // 2, 1.0, -1.0)
    left_minus_right = np.tile(sign, SIZE) * 2.0  # Flatten order: row by row
    dense.set_weights([np.stack([left_minus_right, -left_minus_right], axis=1), np.zeros(2)])
    info = ModelInfo("asymmetric", ("left", "right"), PIXELS, "chosen", tta=tta)
    return attach_info(model, info)


def seeded_model(tta: str | None = None) -> keras.Model:
    """A small dense network with seeded random weights: no symmetry of any kind."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    return attach_info(model, ModelInfo("seeded", ("a", "b", "c"), PIXELS, "seed 5", tta=tta))


# --------------------------------------------------------------------------- the views


def test_the_views_are_the_mirror_and_one_pixel_reflected_shifts():
    image = np.arange(1, 10, dtype=np.uint8).reshape(1, 3, 3, 1)  # rows 1 2 3 / 4 5 6 / 7 8 9
    assert mirror(image)[0, :, :, 0].tolist() == [[3, 2, 1], [6, 5, 4], [9, 8, 7]]
    # Down and right by one: the uncovered top row and left column are reflections
    # (the row and column one further in), as airbench's F.pad(..., "reflect").
    assert shift(image, 1, 1)[0, :, :, 0].tolist() == [[5, 4, 5], [2, 1, 2], [5, 4, 5]]
    assert shift(image, -1, -1)[0, :, :, 0].tolist() == [[5, 6, 5], [8, 9, 8], [5, 6, 5]]
    assert shift(image, 1, 1).dtype == np.uint8

    assert [w for w, _ in tta_views(image, "none")] == [1.0]
    flip = tta_views(image, "flip")
    assert [w for w, _ in flip] == [0.5, 0.5]
    np.testing.assert_array_equal(flip[1][1], image[:, :, ::-1])
    six = tta_views(image, "flip,shift")
    assert [w for w, _ in six] == [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    expected = [
        image,
        image[:, :, ::-1],
        shift(image, 1, 1),
        shift(image, 1, 1)[:, :, ::-1],
        shift(image, -1, -1),
        shift(image, -1, -1)[:, :, ::-1],
    ]
    for (_, view), want in zip(six, expected, strict=True):
        np.testing.assert_array_equal(view, want)


@pytest.mark.parametrize("bad", ["mirror", "flip,", "Flip", "shift", ""])
def test_unknown_modes_are_refused_naming_the_value(bad):
    with pytest.raises(SpecError, match=repr(bad)):
        check_tta(bad)
    with pytest.raises(SpecError, match="none, flip, flip,shift"):
        predict_with_tta(lambda x: x, grey_images(1), bad)


def test_a_bad_mode_fails_before_any_model_is_loaded(tmp_path):
    missing = tmp_path / "no-such-model.keras"
    with pytest.raises(SpecError, match="'flip,shitf'"):
        evaluate(missing, "digits", tta="flip,shitf")
    with pytest.raises(SpecError, match="'flips'"):
        predict(grey_images(1)[0], missing, tta="flips")
    with pytest.raises(SpecError, match="'left'"):
        ModelInfo("m", ("a", "b"), PIXELS, "w", tta="left")


# --------------------------------------------------------------------------- the averages


def test_flip_and_flip_shift_are_the_weighted_means_of_the_views():
    model = seeded_model()
    images = grey_images(5, seed=1)
    runtime = KerasRuntime(model)

    def probabilities(batch: np.ndarray) -> np.ndarray:
        return runtime.predict(PIXELS.normalize(batch))

    plain = probabilities(images)
    flipped = probabilities(np.ascontiguousarray(images[:, :, ::-1]))
    got = predict_probabilities(model, images, batch_size=2, tta="flip")
    np.testing.assert_allclose(got, (plain + flipped) / 2, atol=1e-6)
    assert not np.allclose(got, plain, atol=1e-3)  # the mirror did change something

    moved = [shift(images, d, d) for d in (1, -1)]
    views = [plain, flipped]
    views += [probabilities(np.ascontiguousarray(v[:, :, ::-1 if m else 1])) for v in moved
              for m in (False, True)]  # fmt: skip
    weights = [0.25, 0.25, 0.125, 0.125, 0.125, 0.125]
    want = sum(w * p for w, p in zip(weights, views, strict=True))
    got = predict_probabilities(model, images, batch_size=3, tta="flip,shift")
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(predict_probabilities(model, images, 2), plain, atol=1e-6)


def test_flip_undoes_a_model_that_only_sees_left_against_right():
    model = asymmetric_model()
    left = sided(bright_left=True)
    (plain,) = predict(left, model, top=2, runtime="keras", verbose=False)
    (flip,) = predict(left, model, top=2, runtime="keras", verbose=False, tta="flip")
    assert plain["tta"] == "none" and flip["tta"] == "flip"
    assert plain["top"][0]["class"] == "left"
    assert plain["top"][0]["probability"] > 0.99
    # The mirror's answer is the image's, swapped: the mean is exactly undecided.
    assert [c["probability"] for c in flip["top"]] == pytest.approx([0.5, 0.5], abs=1e-6)


# --------------------------------------------------------------------------- metadata


def test_metadata_without_tta_still_loads_and_keeps_its_bytes(tmp_path):
    info = model_info(seeded_model())
    config = info.to_config()
    assert "tta" not in config  # a model without one is written as before the field
    assert ModelInfo.from_config(config).tta is None
    assert ModelInfo.from_config(config | {"tta": "flip"}).tta == "flip"
    with pytest.raises(ValueError, match="'sideways'"):
        ModelInfo.from_config(config | {"tta": "sideways"})

    save_model(seeded_model(), tmp_path / "plain.keras")
    assert model_info(load_model(tmp_path / "plain.keras")).tta is None
    save_model(seeded_model(tta="flip,shift"), tmp_path / "recorded.keras")
    assert model_info(load_model(tmp_path / "recorded.keras")).tta == "flip,shift"


def _folder_dataset(root: Path) -> Path:
    """train/ and test/, each with 3 left-bright and 3 right-bright PNGs."""
    for split in ("train", "test"):
        for name, bright_left in (("left", True), ("right", False)):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(3):
                image = sided(bright_left, seed=i)[:, :, 0]
                Image.fromarray(image).save(folder / f"{i}.png")
    return root


def test_the_recorded_tta_is_the_default_and_tta_none_turns_it_off(tmp_path, capsys):
    """Through the command line (in this process): evaluate and predict."""
    model_file = save_model(asymmetric_model(tta="flip"), tmp_path / "asym.keras")
    data = _folder_dataset(tmp_path / "sides")
    photo = data / "test" / "left" / "0.png"

    def run_json(*args: object) -> object:
        capsys.readouterr()
        assert main([*(str(a) for a in args), "--json"]) == 0
        return json.loads(capsys.readouterr().out)

    recorded = run_json("evaluate", model_file, data, "--runtime", "keras")
    switched_off = run_json("evaluate", model_file, data, "--runtime", "keras", "--tta", "none")
    assert recorded["tta"] == "flip" and switched_off["tta"] == "none"
    assert switched_off["accuracy"] == 1.0
    assert recorded["accuracy"] == 0.5  # every answer a tie: the first class each time

    (default,) = run_json("predict", photo, "--model", model_file, "--runtime", "keras")
    (plain,) = run_json("predict", photo, "--model", model_file, "--runtime", "keras",
                        "--tta", "none")  # fmt: skip
    assert default["tta"] == "flip" and plain["tta"] == "none"
    assert default["top"][0]["probability"] == pytest.approx(0.5, abs=1e-6)
    assert plain["top"][0]["probability"] > 0.99

    capsys.readouterr()
    assert main(["evaluate", str(model_file), str(data), "--runtime", "keras"]) == 0
    assert "6 images (test split, test-time augmentation flip)" in capsys.readouterr().out
    assert main(["predict", str(photo), "--model", str(model_file), "--runtime", "keras"]) == 0
    assert "asymmetric, weights: chosen, test-time augmentation flip" in capsys.readouterr().out
    assert main(["evaluate", str(model_file), "--classifier", "c.keras", "--tta", "flip"]) != 0
    assert "--tta" in capsys.readouterr().err
    assert main(["predict", str(photo), "--model", str(model_file), "--tta", "sideways"]) != 0
    assert "'sideways'" in capsys.readouterr().err


# --------------------------------------------------------------------------- ONNX Runtime


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> Path:
    """The seeded model, recording flip,shift, exported once in this process."""
    path = tmp_path_factory.mktemp("tta_export") / "seeded.onnx"
    export(seeded_model(tta="flip,shift"), path, format="onnx")
    return path


def test_onnx_exports_carry_the_tta_and_agree_with_keras(exported):
    assert read_sidecar(exported)["model"]["tta"] == "flip,shift"
    images = grey_images(4, seed=2)
    keras_model = seeded_model(tta="flip,shift")
    onnx = open_onnx(exported)
    assert onnx.info.tta == "flip,shift"

    on_keras = predict_many(list(images), keras_model, top=3, runtime="keras", verbose=False)
    on_onnx = predict_many(list(images), exported, top=3, batch_size=4, verbose=False)
    assert on_keras["tta"] == on_onnx["tta"] == "flip,shift"  # the sidecar's, honoured
    assert on_onnx["runtime"] == "onnx"
    for a, b in zip(on_keras["results"], on_onnx["results"], strict=True):
        assert [c["class"] for c in a["top"]] == [c["class"] for c in b["top"]]
        got = [c["probability"] for c in b["top"]]
        assert got == pytest.approx([c["probability"] for c in a["top"]], abs=1e-5)
    for mode in ("none", "flip", "flip,shift"):
        np.testing.assert_allclose(
            predict_probabilities(onnx, images, 3, tta=mode),
            predict_probabilities(keras_model, images, 3, tta=mode),
            atol=1e-5,
        )


def test_the_batch_workers_average_the_same_views(exported, tmp_path):
    """``predict --engine ray``'s workers (run here without Ray) honour the TTA too."""
    images = grey_images(3, seed=4)
    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"{i}.png"))
        Image.fromarray(image[:, :, 0]).save(paths[-1])
    onnx = open_onnx(exported)
    for mode in ("none", "flip,shift"):
        worker = BatchClassifier(worker_model(onnx, tta=mode), top=1)
        rows = worker({"image": np.array(paths)}).to_pylist()
        want = predict_probabilities(onnx, images, 3, tta=mode).max(axis=1)
        assert [r["probability_1"] for r in rows] == pytest.approx(want.tolist(), abs=1e-6)
    with pytest.raises(SpecError, match="'mirror'"):
        worker_model(onnx, tta="mirror")


def test_a_damaged_recorded_tta_names_the_file(exported, tmp_path):
    sidecar = json.loads(Path(f"{exported}.json").read_text())
    sidecar["model"]["tta"] = "upside-down"
    copy = tmp_path / "copy.onnx"
    copy.write_bytes(exported.read_bytes())
    Path(f"{copy}.json").write_text(json.dumps(sidecar))
    with pytest.raises(ModelError, match=r"copy\.onnx\.json.*'upside-down'"):
        open_onnx(copy)


def test_predict_ray_sends_the_resolved_tta_to_its_workers(exported, tmp_path, monkeypatch):
    """The driver's side of ``--engine ray``, without starting Ray: the recorded TTA, or
    the one asked for, travels in the ``WorkerModel`` and is in the summary."""
    pytest.importorskip("ray")
    from imgrec.prediction import ray_batch

    sent = []

    @contextlib.contextmanager
    def no_ray(ray, address, workers):
        yield 1.0

    def capture(ray, todo, spec, table, summary, *, verbose):
        sent.append(spec)

    monkeypatch.setattr(ray_batch, "_ray_session", no_ray)
    monkeypatch.setattr(ray_batch, "_run", capture)
    Image.fromarray(grey_images(1)[0, :, :, 0]).save(tmp_path / "a.png")
    recorded = ray_batch.predict_ray(tmp_path / "a.png", exported, out=tmp_path / "1.csv")
    asked = ray_batch.predict_ray(tmp_path / "a.png", exported, out=tmp_path / "2.csv", tta="flip")
    assert [spec.tta for spec in sent] == ["flip,shift", "flip"]
    assert (recorded["tta"], asked["tta"]) == ("flip,shift", "flip")
