"""Class Activation Maps: they point at the object of the class, and fail clearly.

The photo questions use ``cat_and_coffee``: chelsea (the cat) above coffee (an
espresso) on one canvas, so that the map of each class has somewhere else to be.
The network is the offline MobileNetV2, loaded once per session (conftest).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from cat_and_coffee import (
    CAT_BOX,
    COFFEE_BOX,
    EGYPTIAN_CAT,
    ESPRESSO,
    box_mask_on_input,
    cat_above_coffee,
)
from PIL import Image
from scipy.stats import spearmanr

from imgrec.cli import main
from imgrec.core.errors import ModelError, SpecError
from imgrec.core.images import load_image
from imgrec.explanation.cam import (
    COLORMAPS,
    class_activation_map,
    colorize,
    explain,
    overlay,
)
from imgrec.models.chapter import build_chapter_network
from imgrec.models.metadata import ModelInfo, attach_info, model_info
from imgrec.models.mobilenet_v2 import MobileNetV2Torchvision
from imgrec.models.preprocessing import Preprocessing
from imgrec.models.pretrained import load_backbone
from imgrec.training.augment import augmentation_layer
from imgrec.training.transfer import build_transfer_model

SUBPROCESS_TIMEOUT_S = 300


@pytest.fixture(scope="module")
def composite() -> np.ndarray:
    return cat_above_coffee()


@pytest.fixture(scope="module")
def chelsea(chelsea_path) -> np.ndarray:
    return load_image(chelsea_path)


def with_info(model: keras.Model, classes: int, size: tuple[int, int]) -> keras.Model:
    """A freshly built network, with the metadata imgrec's own models carry."""
    names = tuple(f"class {i}" for i in range(classes))
    return attach_info(model, ModelInfo(model.name, names, Preprocessing(size=size), "random"))


def inside_and_outside(model, explanation, photo, box) -> tuple[float, float]:
    """Mean of the map on the photo's ``box``, and elsewhere (as the model sees them)."""
    source = model_info(model).preprocessing.source_box(*photo.shape[:2])
    inside = box_mask_on_input(box, source, explanation.heatmap.shape)
    return float(explanation.heatmap[inside].mean()), float(explanation.heatmap[~inside].mean())


def grey(photo: np.ndarray) -> np.ndarray:
    """The photo as Pillow's luminance, H x W x 1, as a grey model gets it."""
    return np.asarray(Image.fromarray(photo).convert("L"))[..., np.newaxis]


@pytest.mark.slow
def test_the_default_class_is_the_top_one_and_the_map_fits_the_photo(mobilenet, chelsea):
    explanation = class_activation_map(mobilenet, chelsea)
    assert (explanation.class_index, explanation.class_name) == (EGYPTIAN_CAT, "Egyptian cat")
    assert explanation.probability == pytest.approx(0.714, abs=0.01)  # as imgrec predict says
    assert explanation.method == "gradcam"
    assert explanation.layer == "out_relu"  # MobileNetV2's last feature map, before pooling
    assert explanation.heatmap.shape == (224, 224)
    assert explanation.heatmap.dtype == np.float32
    assert explanation.heatmap.min() >= 0 and explanation.heatmap.max() == pytest.approx(1)
    seen = model_info(mobilenet).preprocessing.resize_and_crop(chelsea)
    np.testing.assert_array_equal(explanation.image, seen)


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_the_map_of_egyptian_cat_is_on_the_cat(mobilenet, composite, method):
    explanation = class_activation_map(
        mobilenet, composite, method=method, class_index=EGYPTIAN_CAT
    )
    inside, outside = inside_and_outside(mobilenet, explanation, composite, CAT_BOX)
    # Measured: gradcam 0.61 inside and 0.12 outside, gradcam++ 0.65 and 0.38.
    assert inside > 1.5 * outside


def test_gradcam_follows_the_class_asked_for(mobilenet, composite):
    cat = class_activation_map(mobilenet, composite, class_index=EGYPTIAN_CAT)
    espresso = class_activation_map(mobilenet, composite, class_index=ESPRESSO)
    assert espresso.class_name == "espresso"
    on_cat = inside_and_outside(mobilenet, espresso, composite, CAT_BOX)[0]
    on_cup = inside_and_outside(mobilenet, espresso, composite, COFFEE_BOX)[0]
    assert on_cup > 2 * on_cat
    assert inside_and_outside(mobilenet, cat, composite, CAT_BOX)[0] > 2 * on_cat


def test_cam_is_gradcam_on_a_network_ending_in_pooling_and_one_dense_layer(mobilenet, chelsea):
    # With global average pooling then a linear layer, the gradient of class c's score
    # with respect to A[i, j, k] is w[k, c] / (h * w) everywhere: Grad-CAM's channel
    # weights are CAM's, divided by a constant that the scaling to [0, 1] removes.
    cam = class_activation_map(mobilenet, chelsea, method="cam")
    gradcam = class_activation_map(mobilenet, chelsea, method="gradcam")
    assert cam.layer == gradcam.layer == "out_relu"
    np.testing.assert_allclose(cam.heatmap, gradcam.heatmap, atol=1e-4)


def test_cam_on_a_network_whose_last_convolution_makes_the_class_maps(chelsea):
    # SqueezeNet's and NiN's ending: one map per class, then global average pooling
    # alone. The class score is the mean of its own channel, so that channel is the map.
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(
        8,
        3,
        strides=2,
        activation="relu",
        kernel_initializer=keras.initializers.RandomUniform(-1, 1, seed=0),
    )(inputs)
    # A positive kernel and bias keep every class map alive (>= 1), yet uneven.
    class_maps = keras.layers.Conv2D(
        3,
        1,
        activation="relu",
        kernel_initializer=keras.initializers.RandomUniform(0, 1, seed=1),
        bias_initializer="ones",
        name="class_maps",
    )
    maps = class_maps(x)
    x = keras.layers.GlobalAveragePooling2D()(maps)
    outputs = keras.layers.Activation("softmax")(x)
    model = with_info(keras.Model(inputs, outputs), 3, (32, 32))
    cam = class_activation_map(model, chelsea, method="cam", class_index=1)
    gradcam = class_activation_map(model, chelsea, method="gradcam", class_index=1)
    assert cam.layer == gradcam.layer == "class_maps"
    np.testing.assert_allclose(cam.heatmap, gradcam.heatmap, atol=1e-4)
    seen = model_info(model).preprocessing.normalize(cam.image[np.newaxis])
    channel = keras.Model(inputs, maps).predict(seen, verbose=0)[0, ..., 1]
    assert channel.min() >= 1 and channel.max() > 2 * channel.min()  # alive and uneven
    upsampled = np.asarray(Image.fromarray(channel).resize((32, 32), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(cam.heatmap, upsampled / upsampled.max(), atol=1e-5)


@pytest.mark.parametrize(("arch", "shape"), [("cifar-cnn", (32, 32, 3)), ("vgg-bn", (32, 32, 3))])
def test_cam_refuses_networks_with_more_than_one_layer_after_the_map(arch, shape, chelsea):
    # cifar-cnn flattens into two Dense layers; vgg-bn pools, then Dense-BN-ReLU-Dense.
    model = with_info(build_chapter_network(arch, shape, 4), 4, shape[:2])
    with pytest.raises(ModelError, match=f"model '{model.name}'.*use gradcam"):
        class_activation_map(model, chelsea, method="cam")
    explanation = class_activation_map(model, chelsea, method="gradcam")
    assert explanation.heatmap.shape == shape[:2]
    assert explanation.layer == {"cifar-cnn": "conv2", "vgg-bn": "block3_relu2"}[arch]


@pytest.mark.slow
def test_a_randomised_network_gives_a_different_map(mobilenet, chelsea):
    """Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018.

    A map that barely changes when every weight is random explains the photo, not the
    network. Their measure: Spearman's rank correlation of the two maps.
    """
    keras.utils.set_random_seed(0)
    random = MobileNetV2Torchvision()
    attach_info(random, model_info(mobilenet))
    trained = class_activation_map(mobilenet, chelsea, class_index=EGYPTIAN_CAT)
    randomised = class_activation_map(random, chelsea, class_index=EGYPTIAN_CAT)
    correlation = spearmanr(trained.heatmap.ravel(), randomised.heatmap.ravel()).statistic
    assert abs(correlation) < 0.5


@pytest.mark.slow
def test_a_nested_backbone_of_a_transfer_model(mobilenet, chelsea):
    backbone, preprocessing, _ = load_backbone("mobilenet_v2", (96, 96, 3))
    model = build_transfer_model(backbone, preprocessing, (64, 64, 3), 3)
    with_info(model, 3, (64, 64))
    gradcam = class_activation_map(model, chelsea)
    assert gradcam.layer == "backbone/out_relu"
    assert gradcam.heatmap.shape == (64, 64) and gradcam.image.shape == (64, 64, 3)
    # Pooling, dropout and one Dense layer after the backbone: CAM applies, and agrees.
    cam = class_activation_map(model, chelsea, method="cam", layer="out_relu")
    assert cam.layer == "backbone/out_relu"
    np.testing.assert_allclose(cam.heatmap, gradcam.heatmap, atol=1e-4)


def test_a_grey_network(chelsea):
    model = with_info(build_chapter_network("mnist-cnn", (28, 28, 1), 10), 10, (28, 28))
    explanation = class_activation_map(model, chelsea, method="gradcam++")
    assert explanation.layer == "conv2"
    assert explanation.heatmap.shape == (28, 28)
    assert explanation.image.shape == (28, 28, 3)
    # The grey picture the model saw, in three equal channels.
    assert np.array_equal(explanation.image[..., 0], explanation.image[..., 2])
    batch = model_info(model).preprocessing([grey(chelsea)])
    assert explanation.class_index == int(np.argmax(model.predict_on_batch(batch)))
    with pytest.raises(ModelError, match="mnist_cnn"):
        class_activation_map(model, chelsea, method="cam")


def test_random_augmentation_layers_stay_off(chelsea):
    # Called directly, Keras's random layers are in training mode: the map would change
    # from one call to the next.
    augmentation = augmentation_layer("flip,rotate=30,zoom=0.3,shift=0.2", seed=1)
    model = with_info(build_chapter_network("vgg-bn", (32, 32, 3), 3, augmentation), 3, (32, 32))
    first = class_activation_map(model, chelsea)
    second = class_activation_map(model, chelsea)
    np.testing.assert_array_equal(first.heatmap, second.heatmap)
    assert first.probability == second.probability


@pytest.mark.slow
def test_a_chosen_layer_by_name(mobilenet, chelsea):
    explanation = class_activation_map(mobilenet, chelsea, layer="block_16_project_BN")
    assert explanation.layer == "block_16_project_BN"
    assert explanation.heatmap.shape == (224, 224)


def test_wrong_layers_are_refused_with_the_candidates(mobilenet, chelsea):
    with pytest.raises(ModelError, match=r"no layer 'block_99'.*candidates: .*out_relu"):
        class_activation_map(mobilenet, chelsea, layer="block_99")
    with pytest.raises(ModelError, match="no layer 'predictions'"):  # not a feature map
        class_activation_map(mobilenet, chelsea, layer="predictions")
    # Inside a residual block the output does not depend on the layer alone.
    with pytest.raises(ModelError, match="skip connection"):
        class_activation_map(mobilenet, chelsea, layer="block_15_project_BN")


@pytest.mark.parametrize("index", [1000, -1, True, 2.0])
def test_wrong_class_indices_are_refused(mobilenet, chelsea, index):
    with pytest.raises(ModelError, match=r"from 0 to 999 .*1000 classes"):
        class_activation_map(mobilenet, chelsea, class_index=index)


def test_wrong_options_are_refused_before_any_work(mobilenet, chelsea):
    with pytest.raises(SpecError, match="unknown CAM method 'lime'"):
        class_activation_map(mobilenet, chelsea, method="lime")
    with pytest.raises(SpecError, match="unknown colormap 'rainbow-ish'"):
        explain(mobilenet, chelsea, colormap="rainbow-ish")
    with pytest.raises(SpecError, match="alpha"):
        explain(mobilenet, chelsea, alpha=1.5)


def test_colorize_and_overlay():
    ramp = np.linspace(0, 1, 256, dtype=np.float32)[np.newaxis].repeat(4, axis=0)
    jet = colorize(ramp, "jet")
    assert jet.shape == (4, 256, 3) and jet.dtype == np.uint8
    assert tuple(jet[0, 0]) == (0, 0, 128)  # jet starts dark blue and ends dark red
    assert tuple(jet[0, -1]) == (128, 0, 0)
    assert set(COLORMAPS) >= {"jet", "viridis", "inferno", "magma", "plasma", "turbo", "hot"}
    photo = np.full((4, 256, 3), 200, np.uint8)
    np.testing.assert_array_equal(overlay(photo, ramp, alpha=0), photo)
    np.testing.assert_array_equal(overlay(photo, ramp, alpha=1), jet)
    half = overlay(photo, ramp, alpha=0.5).astype(int)
    assert np.abs(half - (photo.astype(int) + jet) / 2).max() <= 1
    with pytest.raises(ValueError, match="heatmap is 4 x 256 but the image is 4 x 10"):
        overlay(photo[:, :10], ramp)


@pytest.mark.slow
def test_explain_command_writes_a_png_and_json(tmp_path, capsys, chelsea_path):
    out = tmp_path / "overlay.png"
    code = main(["explain", "mobilenet_v2", str(chelsea_path), "--out", str(out), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["class"] == "Egyptian cat" and result["index"] == EGYPTIAN_CAT
    assert result["layer"] == "out_relu" and result["method"] == "gradcam"
    assert result["overlay_png"] == str(out)
    with Image.open(out) as png:
        assert png.format == "PNG"
        assert png.width > png.height > 200  # photo and overlay side by side
        pixels = np.asarray(png.convert("RGB")).astype(int)
    # Two panels in the same places of each half: the photo, and the photo painted over
    # (measured: 39 levels apart on average; a photo against itself shifted by three
    # pixels: 15).
    half = png.width // 2
    assert np.abs(pixels[:, :half] - pixels[:, half : 2 * half]).mean() > 25
    assert [p.name for p in tmp_path.iterdir()] == ["overlay.png"]


@pytest.mark.slow
def test_explain_command_reports_a_wrong_layer_in_one_line(tmp_path, capsys, chelsea_path):
    out = tmp_path / "overlay.png"
    code = main(
        ["explain", "mobilenet_v2", str(chelsea_path), "--out", str(out), "--layer", "nope"]
    )
    assert code == 1
    error = capsys.readouterr().err
    assert error.startswith("imgrec: error: ") and "'nope'" in error
    assert error.count("\n") == 1 and not out.exists()


# The gradient on the backends: a head of global average pooling and a linear layer,
# whose gradient is known in closed form: d score_c / d A[i, j, k] = w[k, c] / (h * w).
GRADIENT_CHECK = textwrap.dedent(
    """
    import keras, numpy as np
    from imgrec.explanation.gradients import output_and_gradient
    rng = np.random.default_rng(0)
    features = rng.normal(size=(1, 3, 4, 5)).astype("float32")
    weights = rng.normal(size=(5, 2)).astype("float32")
    pool = keras.layers.GlobalAveragePooling2D()
    def head(a):
        return keras.ops.matmul(pool(a), keras.ops.convert_to_tensor(weights))
    outputs, gradient = output_and_gradient(head, features, 1)
    np.testing.assert_allclose(outputs, features.mean(axis=(1, 2)) @ weights, rtol=1e-5)
    expected = np.broadcast_to(weights[:, 1] / 12, features.shape)
    np.testing.assert_allclose(gradient, expected, rtol=1e-5)
    print(keras.backend.backend())
    """
)


def test_gradient_on_tensorflow():
    exec(GRADIENT_CHECK, {})  # this process runs Keras on TensorFlow
    assert keras.backend.backend() == "tensorflow"


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_gradient_on_other_backends(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed here")
    env = os.environ | {"KERAS_BACKEND": backend}
    run = subprocess.run(
        [sys.executable, "-c", GRADIENT_CHECK],
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == backend
