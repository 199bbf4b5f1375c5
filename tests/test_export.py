"""``imgrec.export`` and ``imgrec export``: real conversions, checked outside the exporter.

Every exported file is loaded here with the consumer's own tool (ONNX Runtime,
TFLite's interpreter, ``tf.saved_model.load``) and compared with the Keras model on
photos and data the exporter did not choose, so that a bug in the exporter's own
check cannot hide a bad file. The trained model is a ``cifar-cnn`` fitted for a few
epochs on a folder of PNGs this module draws (coloured squares on noise).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import keras
import numpy as np
import onnxruntime
import pytest
import tensorflow as tf
from PIL import Image

import imgrec
from imgrec.cli import main
from imgrec.core.errors import ImgrecError, ModelError
from imgrec.core.images import load_image
from imgrec.core.samples import SAMPLES, sample_path
from imgrec.datasets import load_dataset
from imgrec.deploy.export_cache import load_runtime
from imgrec.deploy.exporter import FP32_TOLERANCE, export
from imgrec.deploy.sidecar import read_sidecar, sidecar_path
from imgrec.models.chapter import build_chapter_network
from imgrec.models.metadata import ModelInfo, attach_info, class_probabilities, model_info
from imgrec.models.preprocessing import Preprocessing
from imgrec.models.pretrained import load_backbone
from imgrec.training.augment import augmentation_layer
from imgrec.training.transfer import build_transfer_model

# Trains, exports or runs subprocesses for seconds a test: left out of `make check`.
pytestmark = pytest.mark.slow

COLOURS = {"blue": (40, 60, 230), "green": (40, 210, 60), "red": (230, 50, 40)}
PER_CLASS = 30


def keras_probabilities(model: keras.Model, batch: np.ndarray) -> np.ndarray:
    return class_probabilities(np.asarray(model(batch, training=False)))


def onnx_probabilities(path: Path, batch: np.ndarray) -> np.ndarray:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (model_input,) = session.get_inputs()
    return class_probabilities(session.run(None, {model_input.name: batch})[0])


def photos(model: keras.Model) -> np.ndarray:
    """The sample photos as the model takes them (grey for one-channel models)."""
    mode = "L" if model.input_shape[-1] == 1 else "RGB"
    return model_info(model).preprocessing([load_image(sample_path(n), mode=mode) for n in SAMPLES])


@pytest.fixture(scope="module")
def squares(tmp_path_factory) -> Path:
    """Three classes of coloured squares on grey noise, 32 x 32 PNGs in class folders."""
    root = tmp_path_factory.mktemp("squares")
    rng = np.random.default_rng(0)
    for name, colour in COLOURS.items():
        (root / name).mkdir()
        for i in range(PER_CLASS):
            pixels = rng.integers(60, 140, (32, 32, 3), dtype=np.uint8)
            top, left = rng.integers(0, 16, 2)
            side = int(rng.integers(10, 17))
            pixels[top : top + side, left : left + side] = colour
            Image.fromarray(pixels).save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def trained_path(squares, tmp_path_factory) -> Path:
    """A cifar-cnn trained with augmentation layers inside it (flip, rotate)."""
    out = tmp_path_factory.mktemp("trained") / "squares.keras"
    imgrec.train(
        squares,
        "cifar-cnn",
        out=out,
        epochs=4,
        batch_size=16,
        augment="flip,rotate=10",
        val_split=0.3,
        seed=0,
        verbose=0,
    )
    return out


@pytest.fixture(scope="module")
def trained(trained_path) -> keras.Model:
    return imgrec.load_model(trained_path)


@pytest.fixture(scope="module")
def squares_val(squares, trained) -> np.ndarray:
    """The validation images the model was not trained on, preprocessed."""
    dataset = load_dataset(squares, image_size=(32, 32), val_split=0.3, seed=0, progress=False)
    return model_info(trained).preprocessing.normalize(np.asarray(dataset.val.images))


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("exports")


def test_mobilenet_onnx_matches_keras_and_keeps_its_preprocessing(mobilenet, chelsea_path):
    """fp32 ONNX of the zoo network: same probabilities within 1e-4; chelsea is a cat.

    The export is the one the ONNX runtime makes and caches (with ``export``), which
    the runtime tests and ``predict`` then reuse: one conversion of MobileNetV2.
    """
    path = load_runtime(mobilenet, "onnx").path
    batch = photos(mobilenet)
    got = onnx_probabilities(path, batch)
    np.testing.assert_allclose(got, keras_probabilities(mobilenet, batch), atol=FP32_TOLERANCE)

    sidecar = read_sidecar(path)
    assert sidecar["check"]["max_abs_diff"] < FP32_TOLERANCE
    assert sidecar["check"]["tolerance"] == FP32_TOLERANCE
    info = ModelInfo.from_config(sidecar["model"])
    assert info == model_info(mobilenet)
    assert sidecar["input"]["shape"] == [None, 224, 224, 3]
    assert sidecar["output"]["shape"] == [None, 1000]
    assert sidecar["source"]["file"] is None  # a model in memory, not a file
    # The sidecar alone is enough to classify a photo: its recipe and class names.
    pixels = info.preprocessing([load_image(chelsea_path)])
    assert info.class_names[int(onnx_probabilities(path, pixels).argmax())] == "Egyptian cat"
    assert any("central 224 x 224" in step for step in sidecar["input"]["steps"])


def test_efficientnet_lite0_onnx_matches_keras(exports):
    model = imgrec.load_model("efficientnet_lite0")
    result = export(model, exports / "lite0.onnx")
    batch = photos(model)
    got = onnx_probabilities(Path(result["path"]), batch)
    np.testing.assert_allclose(got, keras_probabilities(model, batch), atol=FP32_TOLERANCE)
    assert got.argmax(axis=1)[list(SAMPLES).index("chelsea")] == 285  # Egyptian cat


def test_transfer_model_with_augmentation_exports_as_inference(exports):
    """Nested backbone, grey input resized inside, random augmentation that must vanish."""
    backbone, preprocessing, _ = load_backbone("mobilenet_v2", (64, 64, 3))
    augmentation = augmentation_layer("flip,rotate=20,zoom=0.2,contrast=0.3", seed=0)
    model = build_transfer_model(backbone, preprocessing, (40, 40, 1), 4, augmentation)
    info = ModelInfo("transfer", ("a", "b", "c", "d"), Preprocessing(size=(40, 40)), "test")
    attach_info(model, info)
    result = export(model, exports / "transfer.onnx")
    batch = np.random.default_rng(1).uniform(0, 255, (6, 40, 40, 1)).astype(np.float32)
    got = onnx_probabilities(Path(result["path"]), batch)
    # Two Keras inference calls agree with each other and with the export: the
    # augmentation layers are the identity in both.
    np.testing.assert_allclose(got, keras_probabilities(model, batch), atol=FP32_TOLERANCE)


@pytest.mark.parametrize(
    ("arch", "shape", "classes"),
    [
        ("mnist-cnn", (28, 28, 1), 10),
        ("vgg-bn", (32, 32, 3), 5),
        ("catdog-cnn", (64, 64, 3), 2),
        ("fast-cnn", (28, 28, 1), 10),
    ],
)
def test_seed_networks_export_to_onnx(arch, shape, classes, exports):
    """Every seed network, grey and colour; catdog-cnn's single sigmoid unit too."""
    model = build_chapter_network(
        arch, shape, classes, augmentation=augmentation_layer("flip", seed=0)
    )
    names = tuple(f"class {i}" for i in range(classes))
    attach_info(model, ModelInfo(arch, names, Preprocessing(size=shape[:2]), "random"))
    result = export(model, exports / f"{arch}.onnx")
    batch = np.random.default_rng(2).uniform(0, 255, (5, *shape)).astype(np.float32)
    got = onnx_probabilities(Path(result["path"]), batch)
    assert got.shape == (5, classes)
    np.testing.assert_allclose(got, keras_probabilities(model, batch), atol=FP32_TOLERANCE)
    if classes == 2:
        assert "sigmoid" in read_sidecar(result["path"])["output"]["meaning"]


def test_trained_model_onnx_tflite_and_savedmodel_match_keras(
    trained_path, trained, squares_val, exports
):
    """One trained model in the three formats, run by each format's own runtime."""
    expected = keras_probabilities(trained, squares_val)

    onnx_result = export(trained_path, exports / "squares.onnx")
    got = onnx_probabilities(Path(onnx_result["path"]), squares_val)
    np.testing.assert_allclose(got, expected, atol=FP32_TOLERANCE)
    assert read_sidecar(onnx_result["path"])["source"]["file"] == str(trained_path.resolve())

    tflite_result = export(trained_path, exports / "squares.tflite", format="tflite")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # tf.lite.Interpreter's deprecation
        interpreter = tf.lite.Interpreter(model_path=tflite_result["path"])
    run = interpreter.get_signature_runner("serving_default")
    got = class_probabilities(run(input=squares_val)["output"])
    np.testing.assert_allclose(got, expected, atol=FP32_TOLERANCE)

    saved_result = export(trained_path, exports / "squares_savedmodel", format="savedmodel")
    serve = tf.saved_model.load(saved_result["path"]).signatures["serving_default"]
    got = class_probabilities(serve(input=tf.constant(squares_val))["output"].numpy())
    np.testing.assert_allclose(got, expected, atol=FP32_TOLERANCE)
    assert sidecar_path(saved_result["path"]).is_file()


@pytest.mark.parametrize(("format", "quantize"), [("onnx", "int8"), ("tflite", "fp16")])
def test_quantized_exports_report_the_accuracy_change(
    format, quantize, trained_path, squares, exports
):
    """Smaller files, and the accuracy of both models on the validation split."""
    out = exports / f"squares-{quantize}.{format}"
    result = export(trained_path, out, format=format, quantize=quantize, val=squares)
    float_size = Path(trained_path).stat().st_size
    assert result["bytes"] < float_size
    accuracy = result["accuracy"]
    assert accuracy["split"] == "val"
    assert accuracy["images"] == 3 * round(PER_CLASS * 0.3)
    assert accuracy["keras"] > 0.6  # the model learned: a broken export would show
    assert accuracy["change"] == pytest.approx(accuracy["exported"] - accuracy["keras"])
    assert accuracy["exported"] >= accuracy["keras"] - 0.1
    assert result["check"]["tolerance"] is None
    if quantize == "int8":
        train_images = 3 * PER_CLASS - accuracy["images"]
        assert result["calibration"] == f"{train_images} training images of {squares.name}"
        # The file stands alone: evaluated through its sidecar, the same accuracy.
        alone = imgrec.evaluate(out, squares, runtime="onnx")
        assert alone["accuracy"] == pytest.approx(accuracy["exported"])


def test_cli_export_prints_difference_and_accuracy(capsys, trained_path, squares, tmp_path):
    out = tmp_path / "cli.onnx"
    code = main(["export", str(trained_path), "--out", str(out), "--val", str(squares)])
    printed = capsys.readouterr().out
    assert code == 0
    assert f"wrote {out} (onnx, float32" in printed
    assert "largest probability difference from Keras" in printed
    assert f"accuracy on {squares.name} (val split, 27 images)" in printed

    code = main(["export", str(trained_path), "--out", str(out), "--quantize", "fp16", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0
    assert result["quantize"] == "fp16"
    assert read_sidecar(out)["quantize"] == "fp16"


def test_bad_options_are_refused_before_any_work(trained_path, tmp_path, capsys):
    with pytest.raises(ImgrecError, match=r"must end in \.onnx"):
        export(trained_path, tmp_path / "model.tflite", format="onnx")
    with pytest.raises(ImgrecError, match="not to savedmodel"):
        export(trained_path, tmp_path / "sm", format="savedmodel", quantize="int8")
    folder = tmp_path / "precious"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    with pytest.raises(ImgrecError, match="not a SavedModel folder"):
        export(trained_path, folder, format="savedmodel")
    assert (folder / "notes.txt").read_text() == "keep me"

    code = main(["export", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "m.onnx")])
    assert code == 1
    assert "missing.keras: no such model file" in capsys.readouterr().err


def test_a_failed_export_leaves_no_file(tmp_path):
    """A forward pass ONNX cannot run (random noise at inference) is refused, no file left."""

    class AlwaysNoisy(keras.layers.Layer):
        def call(self, x):
            return x + keras.random.uniform(keras.ops.shape(x), seed=1)

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(2, activation="softmax")(
        keras.layers.Flatten()(AlwaysNoisy()(inputs))
    )
    model = keras.Model(inputs, outputs)
    attach_info(model, ModelInfo("noisy", ("a", "b"), Preprocessing(size=(8, 8)), "test"))
    out = tmp_path / "noisy.onnx"
    with pytest.raises(ModelError, match="noisy"):
        export(model, out)
    assert not out.exists()
    assert not sidecar_path(out).exists()
    assert list(tmp_path.iterdir()) == []
