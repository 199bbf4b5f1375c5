"""The chapter's networks: exact layouts, adaptation to the data, learnability, old names."""

from __future__ import annotations

import warnings

import keras
import numpy as np
import pytest

from imgrec.core.errors import ModelError
from imgrec.models import chapter
from imgrec.models.chapter import (
    CHAPTER_ARCHITECTURES,
    RESCALE_LAYER,
    build_chapter_network,
    get_chapter_architecture,
    is_binary_output,
    last_conv_layer,
    whitening_weights,
)

# The chapter's published parameter counts, typed in from the text (not computed).
CHAPTER_PARAMETERS = {
    "cifar-cnn": 453_786,
    "catdog-cnn": 29_511_617,
    "mnist-cnn": 1_199_882,
}


@pytest.mark.parametrize("name", sorted(CHAPTER_PARAMETERS))
def test_default_parameter_counts_are_the_chapters(name):
    model = build_chapter_network(name)
    assert model.count_params() == CHAPTER_PARAMETERS[name]
    assert CHAPTER_ARCHITECTURES[name].reference_parameters == CHAPTER_PARAMETERS[name]


def test_default_shapes_and_outputs():
    cifar = build_chapter_network("cifar-cnn")
    assert cifar.input_shape == (None, 32, 32, 3)
    assert cifar.output_shape == (None, 10)
    catdog = build_chapter_network("catdog-cnn")
    assert catdog.input_shape == (None, 128, 128, 3)
    assert catdog.output_shape == (None, 1)
    assert is_binary_output(catdog)
    mnist = build_chapter_network("mnist-cnn")
    assert mnist.input_shape == (None, 28, 28, 1)
    assert not is_binary_output(mnist)


def test_vgg_bn_is_small_and_has_batch_norm():
    model = build_chapter_network("vgg-bn")
    assert model.count_params() == 1_144_394  # the count its docstring and the README give
    assert model.output_shape == (None, 10)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert {"BatchNormalization", "Dropout", "Conv2D"} <= kinds
    arch = CHAPTER_ARCHITECTURES["vgg-bn"]
    assert arch.lr_schedule == "cosine"
    assert arch.reference_parameters is None
    assert arch.learning_rate > 0 and arch.epochs > 0


def test_fast_cnn_has_a_frozen_whitening_layer_and_its_recipe():
    model = build_chapter_network("fast-cnn")
    assert model.count_params() == 1_153_576  # the count its docstring gives
    frozen = sum(int(np.prod(w.shape)) for w in model.non_trainable_weights if "bn" not in w.path)
    assert frozen == 40  # 8 filters of 2 x 2 and their biases
    assert not model.get_layer("whiten").trainable
    arch = CHAPTER_ARCHITECTURES["fast-cnn"]
    assert (arch.optimizer, arch.batch_size, arch.tta) == ("sgd", 256, "flip")
    assert arch.prepare is not None and arch.precision == "bfloat16"


def test_fast_cnn_widths_set_the_blocks_filters_and_are_checked():
    model = chapter.fast_cnn(input_shape=(16, 16, 1), num_classes=4, widths=(8, 16, 24))
    filters = [model.get_layer(f"block{b}_conv{c}").filters for b in (1, 2, 3) for c in (1, 2)]
    assert filters == [8, 8, 16, 16, 24, 24]
    for widths in ((8, 16), (8, 0, 16)):
        with pytest.raises(ModelError, match="widths"):
            chapter.fast_cnn(widths=widths)


def test_whitening_makes_the_patch_covariance_the_identity():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (40, 12, 12, 1)).astype(np.float64)
    images = (images + np.roll(images, 1, axis=2)) / 2  # neighbours correlate
    kernel, bias = whitening_weights(images, epsilon=0.0)
    assert kernel.shape == (2, 2, 1, 8)
    windows = np.lib.stride_tricks.sliding_window_view(images / 255, (2, 2), axis=(1, 2))
    patches = windows.reshape(-1, 4)
    filters = kernel.reshape(4, 8).T  # rows i, j of the patch, as the windows are
    white = patches @ filters[:4].T + bias[:4]
    np.testing.assert_allclose(white.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(np.cov(white.T, bias=True), np.eye(4), atol=1e-3)
    np.testing.assert_allclose(filters[4:], -filters[:4])


def test_prepare_sets_the_whitening_layer_as_a_convolution_of_the_patches():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (30, 9, 9, 1)).astype(np.float32)
    model = build_chapter_network("fast-cnn", input_shape=(9, 9, 1), num_classes=3)
    CHAPTER_ARCHITECTURES["fast-cnn"].prepare(model, images)
    kernel, bias = whitening_weights(images)
    probe = keras.Model(model.input, model.get_layer("whiten").output)
    out = keras.ops.convert_to_numpy(probe(images[:2], training=False))
    # Output pixel (y, x) whitens the patch at rows y..y+1 and columns x..x+1.
    patch = images[1, 3:5, 6:8, 0].reshape(4) / 255
    np.testing.assert_allclose(out[1, 3, 6], kernel.reshape(4, 8).T @ patch + bias, atol=1e-4)


def test_prepare_starts_each_block_convolution_partly_as_the_identity():
    rng = np.random.default_rng(2)
    model = build_chapter_network("fast-cnn", input_shape=(12, 12, 1), num_classes=3)
    before = model.get_layer("block2_conv1").get_weights()[0]
    CHAPTER_ARCHITECTURES["fast-cnn"].prepare(model, rng.integers(0, 256, (20, 12, 12, 1)))
    for name, inputs, outputs in (("block1_conv1", 8, 64), ("block2_conv1", 64, 128),
                                  ("block3_conv2", 256, 256)):  # fmt: skip
        conv = model.get_layer(name)
        x = rng.normal(size=(2, 5, 5, inputs)).astype(np.float32)
        y = keras.ops.convert_to_numpy(conv(x))
        np.testing.assert_allclose(y[..., :inputs], x[..., : min(inputs, outputs)], atol=1e-6)
    # the filters beyond the inputs keep their random start
    after = model.get_layer("block2_conv1").get_weights()[0]
    np.testing.assert_array_equal(after[..., 64:], before[..., 64:])
    assert after[..., 64:].std() > 0.01


def test_every_architecture_describes_a_recipe():
    for name, arch in CHAPTER_ARCHITECTURES.items():
        assert arch.name == name
        assert arch.description
        assert arch.lr_schedule in ("constant", "cosine")
        assert arch.weight_decay >= 0


def test_cifar_cnn_adapts_to_grey_28x28():
    model = build_chapter_network("cifar-cnn", input_shape=(28, 28, 1), num_classes=10)
    assert model.input_shape == (None, 28, 28, 1)
    assert model.output_shape == (None, 10)


def test_catdog_with_three_classes_is_softmax():
    model = build_chapter_network("catdog-cnn", num_classes=3)
    assert model.output_shape == (None, 3)
    assert not is_binary_output(model)
    assert model.layers[-1].activation.__name__ == "softmax"


@pytest.mark.parametrize("name", ["cifar-cnn", "mnist-cnn", "vgg-bn", "fast-cnn"])
def test_two_classes_are_two_softmax_units_except_catdog(name):
    model = build_chapter_network(name, num_classes=2)
    assert model.output_shape == (None, 2)
    assert not is_binary_output(model)


@pytest.mark.parametrize(
    ("name", "smallest"),
    [("cifar-cnn", 8), ("catdog-cnn", 10), ("mnist-cnn", 6), ("vgg-bn", 8), ("fast-cnn", 8)],
)
def test_smallest_input_builds_and_smaller_raises(name, smallest):
    model = build_chapter_network(name, input_shape=(smallest, smallest + 3, 1), num_classes=4)
    assert model.output_shape == (None, 4)
    assert CHAPTER_ARCHITECTURES[name].min_input_size == smallest
    with pytest.raises(ModelError, match="too small"):
        build_chapter_network(name, input_shape=(smallest - 1, 64, 3))


@pytest.mark.parametrize(
    ("input_shape", "num_classes", "message"),
    [
        ((32, 32, 4), 10, "channels"),
        ((32, 32), 10, "input_shape"),
        ("32x32", 10, "input_shape"),
        ((32, 32, 3), 1, "num_classes"),
        ((32, 32, 3), 2.5, "num_classes"),
    ],
)
def test_bad_arguments_raise_model_error(input_shape, num_classes, message):
    with pytest.raises(ModelError, match=message):
        build_chapter_network("cifar-cnn", input_shape=input_shape, num_classes=num_classes)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ModelError) as info:
        build_chapter_network("lenet-5")
    for name in CHAPTER_ARCHITECTURES:
        assert name in str(info.value)


@pytest.mark.parametrize("spelling", ["cifar-cnn", "CIFAR_CNN", "cifarcnn", "Cifar-CNN"])
def test_names_are_forgiving(spelling):
    assert get_chapter_architecture(spelling).name == "cifar-cnn"


def test_rescaling_follows_the_augmentation_layer():
    flip = keras.layers.RandomFlip("horizontal", name="my_flip")
    model = build_chapter_network("mnist-cnn", augmentation=flip)
    names = [layer.name for layer in model.layers]
    assert names[1] == "my_flip"
    assert names[2] == RESCALE_LAYER
    rescale = model.get_layer(RESCALE_LAYER)
    assert isinstance(rescale, keras.layers.Rescaling)
    assert rescale.scale == pytest.approx(1 / 255)
    assert model.count_params() == CHAPTER_PARAMETERS["mnist-cnn"]

    plain = build_chapter_network("mnist-cnn")
    assert [layer.name for layer in plain.layers][1] == RESCALE_LAYER


def test_augmentation_must_be_a_layer():
    with pytest.raises(ModelError, match="augmentation"):
        build_chapter_network("cifar-cnn", augmentation="flip")


@pytest.mark.parametrize("name", sorted(CHAPTER_ARCHITECTURES))
def test_forward_pass_on_pixel_values_gives_probabilities(name):
    arch = CHAPTER_ARCHITECTURES[name]
    shape = (32, 32, 3) if name == "catdog-cnn" else arch.default_input_shape
    classes = 3 if name == "catdog-cnn" else arch.default_num_classes
    model = build_chapter_network(name, input_shape=shape, num_classes=classes)
    pixels = np.random.default_rng(0).integers(0, 256, (4, *shape)).astype("float32")
    probabilities = keras.ops.convert_to_numpy(model(pixels, training=False))
    assert probabilities.shape == (4, classes)
    assert np.all(probabilities >= 0)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)


def test_binary_forward_pass_is_one_probability():
    model = build_chapter_network("catdog-cnn", input_shape=(24, 24, 3))
    pixels = np.full((2, 24, 24, 3), 200.0, dtype="float32")
    p = keras.ops.convert_to_numpy(model(pixels, training=False))
    assert p.shape == (2, 1)
    assert np.all((p >= 0) & (p <= 1))


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("cifar-cnn", "conv2"),
        ("catdog-cnn", "conv2"),
        ("mnist-cnn", "conv2"),
        ("vgg-bn", "block3_relu2"),
        ("fast-cnn", "block3_relu2"),
    ],
)
def test_last_conv_layer_is_the_last_feature_map(name, layer):
    model = build_chapter_network(name)
    found = last_conv_layer(model)
    assert found.name == layer
    assert len(found.output.shape) == 4


def _halves(n: int = 200, size: int = 28, seed: int = 0):
    """Class 0: bright top half; class 1: bright bottom half, on noisy 0-255 images."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 60, (n, size, size, 1)).astype("float32")
    y = np.arange(n) % 2
    half = size // 2
    x[y == 0, :half] += 180
    x[y == 1, half:] += 180
    return x, y


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg-bn", "cifar-cnn"])
def test_learns_a_separable_problem(name):
    keras.utils.set_random_seed(1)
    x, y = _halves()
    model = build_chapter_network(name, input_shape=(28, 28, 1), num_classes=2)
    model.compile(
        keras.optimizers.Adam(CHAPTER_ARCHITECTURES[name].learning_rate),
        "sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert history.history["accuracy"][-1] > 0.9


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("SeedArchitecture", "ChapterArchitecture"),
        ("SEED_ARCHITECTURES", "CHAPTER_ARCHITECTURES"),
        ("get_seed_architecture", "get_chapter_architecture"),
        ("build_seed", "build_chapter_network"),
    ],
)
def test_the_seed_names_still_answer_with_a_deprecation_warning(old, new):
    with pytest.warns(DeprecationWarning, match=rf"{old} is deprecated.*use {new}"):
        assert getattr(chapter, old) is getattr(chapter, new)
    with pytest.raises(AttributeError, match="no attribute 'build_sead'"):
        chapter.build_sead  # noqa: B018


def test_the_old_module_path_builds_as_the_examples_do():
    """examples/ and the README call imgrec.models.seed.build_seed."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from imgrec.models.seed import build_seed

        model = build_seed("mnist-cnn", (28, 28, 1), 10)
    assert model.count_params() == CHAPTER_PARAMETERS["mnist-cnn"]
    assert {w.category for w in caught} == {DeprecationWarning}
    assert any("build_seed" in str(w.message) for w in caught)


def test_importing_the_chapter_module_does_not_start_keras():
    """The registry lists the chapter's networks without TensorFlow (a child process)."""
    import subprocess
    import sys

    code = (
        "import sys, imgrec.models.chapter as c\n"
        "assert len(c.CHAPTER_ARCHITECTURES) == 5\n"
        "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
