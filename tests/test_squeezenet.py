"""SqueezeNet v1.1: torchvision's architecture, its weights file, the zoo and CAM.

No weights file of torchvision's is on this machine (and none may be fetched), so
the weights here are a random state dict with torchvision's keys and shapes, written
as a real PyTorch zip ``.pth`` and read back through the safe reader. The reference
scores come from ``numpy_squeezenet``, a float64 NumPy forward pass that reads the
raw state dict and shares no code with the Keras port.
"""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from numpy_squeezenet import class_maps, pooled_size, random_state_dict
from numpy_squeezenet import scores as reference_scores
from PIL import Image
from test_torch_weights import fake_torch, write_zip_pth  # noqa: F401 (a fixture)

import imgrec.models.zoo as zoo
from imgrec.cli import main
from imgrec.core.errors import WeightsError
from imgrec.core.images import load_image
from imgrec.explanation.cam import class_activation_map
from imgrec.models.count_parameters import count
from imgrec.models.metadata import model_info
from imgrec.models.pretrained import load_pretrained
from imgrec.models.squeezenet import SqueezeNet1_1, load_torch_state_dict
from imgrec.models.torch_weights import load_state_dict

# torchvision's figure for squeezenet1_1 (SqueezeNet1_1_Weights.IMAGENET1K_V1.meta).
TORCHVISION_PARAMETERS = 1_235_496
FILE_NAME = "squeezenet1_1-b8a52dc0.pth"
URL = f"https://download.pytorch.org/models/{FILE_NAME}"
# Every score is compared to the float64 reference within this much of the largest
# score. The port computes in float32 (unit roundoff 6e-8); each output sums up to
# 512 x 9 products over ten convolutions deep, so rounding grows to about 1e-6 of the
# scores' scale (measured: 1.3e-7 at 224, 2.9e-7 at 66). 1e-5 leaves room for other
# BLAS kernels and is still far below what one wrong kernel layout, bias or pool does
# (a floor-mode pool instead of ceil mode: 0.2).
RELATIVE_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def state() -> dict[str, np.ndarray]:
    return random_state_dict(seed=1)


@pytest.fixture(scope="module")
def model() -> keras.Model:
    """Any input size, scores without softmax (torchvision's output)."""
    return SqueezeNet1_1(input_shape=(None, None, 3), classifier_activation=None)


@pytest.fixture
def pth(fake_torch, tmp_path, state):  # noqa: F811 (the fixture imported above)
    """The random state dict as a PyTorch (>= 1.6) zip file, named as torchvision names it."""
    path = tmp_path / FILE_NAME
    write_zip_pth(path, state)
    return path


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty PyTorch home: the hub cache a developer may have stays out of the tests."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def test_parameter_count_is_torchvisions(model, state):
    assert model.count_params() == TORCHVISION_PARAMETERS
    assert sum(array.size for array in state.values()) == TORCHVISION_PARAMETERS
    # conv1, three convolutions in each of the eight Fire modules, conv10.
    assert sum(1 for layer in model.layers if layer.weights) == 26


def test_the_zoo_counts_it_by_building_it():
    assert count("squeezenet1_1") == {"parameters": TORCHVISION_PARAMETERS, "depth": 26}


@pytest.mark.slow
def test_imgrec_zoo_adds_it_to_a_cache_made_before_it(monkeypatch, tmp_path, torch_home, capsys):
    """`imgrec zoo` shows 1,235,496 and where the file goes; a parameter cache written
    before SqueezeNet joined gets it added, without building the other networks again."""
    monkeypatch.setenv("IMGREC_HOME", str(tmp_path / "imgrec_home"))
    cache = zoo._parameter_cache_path()
    older = {entry.name: {"parameters": 7, "depth": 1} for entry in zoo.ZOO}
    del older["squeezenet1_1"]
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps(older))

    assert main(["zoo"]) == 0
    table, _, footer = capsys.readouterr().out.partition("\n\n")
    rows = {line.split()[0]: line.split()[1:] for line in table.splitlines()[1:]}
    figures = ["4.7", "58.2", "80.6", "1,235,496", "26", "224x224", "unavailable"]
    assert rows["SqueezeNet1.1"] == figures
    assert rows["VGG16"][3] == "7"  # from the cache, not built again
    assert json.loads(cache.read_text())["squeezenet1_1"]["parameters"] == 1_235_496
    assert FILE_NAME in footer and URL in footer
    assert str(torch_home / "hub" / "checkpoints") in footer
    assert "--weights" in footer


def test_intermediate_shapes_are_torchvisions():
    """224 -> 111 -> 55 -> 27 -> 13; at 66 the pools' ceil mode adds a row every time."""
    for size, expected in ((224, (111, 55, 27, 13)), (66, (32, 16, 8, 4))):
        net = SqueezeNet1_1(input_shape=(size, size, 3))
        got = [net.get_layer(n).output.shape[1] for n in ("conv1", "pool1", "pool3", "pool5")]
        assert tuple(got) == expected
        assert net.get_layer("relu_conv10").output.shape[1:] == (expected[-1],) * 2 + (1000,)
        assert net.output.shape == (None, 1000)
    # PyTorch's rule, as the reference computes it: floor mode would give 15, 7, 3.
    assert [pooled_size(n) for n in (32, 16, 8)] == [16, 8, 4]
    assert [(n - 3) // 2 + 1 for n in (32, 16, 8)] == [15, 7, 3]


def test_without_top_is_a_512_channel_backbone():
    backbone = SqueezeNet1_1(include_top=False, pooling="avg")
    assert backbone.output.shape == (None, 512)
    assert backbone.count_params() == TORCHVISION_PARAMETERS - (512 * 1000 + 1000)


@pytest.mark.slow
def test_scores_match_the_numpy_reference(model, state, pth):
    """Through a real .pth and the safe reader, at 224 and at 66 (where ceil mode acts)."""
    read = load_state_dict(pth)
    assert read.keys() == state.keys()
    for key, array in state.items():
        np.testing.assert_array_equal(read[key], array)
    load_torch_state_dict(model, read)

    rng = np.random.default_rng(0)
    for shape in ((2, 224, 224, 3), (1, 66, 66, 3)):
        batch = rng.normal(size=shape).astype(np.float32)
        expected = reference_scores(batch, state)
        got = keras.ops.convert_to_numpy(model(batch, training=False)).astype(np.float64)
        error = np.abs(got - expected).max() / np.abs(expected).max()
        print(f"SqueezeNet1_1 {shape} vs NumPy reference: max error / max score = {error:.2g}")
        assert error < RELATIVE_TOLERANCE
        assert (expected > 0).mean() > 0.2  # the ReLU maps are not all dead


def test_missing_weights_name_the_file_the_url_and_the_folder(torch_home, capsys, chelsea_path):
    entry = zoo.get_entry("SqueezeNet1.1")
    assert zoo.weights_origin(entry) == "unavailable"
    folder = str(torch_home / "hub" / "checkpoints")
    with pytest.raises(WeightsError) as caught:
        load_pretrained("squeezenet1_1")
    for text in (FILE_NAME, URL, folder, "--weights"):
        assert text in str(caught.value)

    assert main(["predict", str(chelsea_path), "--model", "squeezenet1_1"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert FILE_NAME in captured.err and URL in captured.err
    assert "Traceback" not in captured.err


@pytest.mark.slow
def test_torch_hub_cache_and_weights_flag(torch_home, pth, state, chelsea_path):
    """The file in PyTorch's hub cache is found; ``--weights FILE`` takes it from anywhere."""
    from_flag = load_pretrained("squeezenet1_1", weights=pth)
    assert model_info(from_flag).weights == f"PyTorch weights {pth}"

    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    pth.rename(checkpoints / FILE_NAME)
    assert zoo.weights_origin(zoo.get_entry("squeezenet1_1")) == "torch hub cache"
    net = load_pretrained("squeezenet1_1")
    info = model_info(net)
    assert info.weights.startswith(f"torch hub cache ({checkpoints / FILE_NAME})")
    assert info.preprocessing.name == "torchvision" and info.preprocessing.size == (224, 224)

    photo = load_image(chelsea_path)
    batch = info.preprocessing([photo])
    expected = reference_scores(batch, state)[0]
    softmax = np.exp(expected - expected.max()) / np.exp(expected - expected.max()).sum()
    np.testing.assert_allclose(net.predict(batch, verbose=0)[0], softmax, rtol=1e-4, atol=1e-7)

    # CAM: conv10's map of the class, upsampled; Grad-CAM finds the same map.
    cam = class_activation_map(net, photo, method="cam")
    gradcam = class_activation_map(net, photo, method="gradcam")
    assert cam.layer == gradcam.layer == "relu_conv10"
    assert cam.class_index == gradcam.class_index == int(np.argmax(expected))
    np.testing.assert_allclose(cam.heatmap, gradcam.heatmap, atol=1e-4)
    low = class_maps(batch, state)[0, ..., cam.class_index].astype(np.float32)
    height, width = cam.heatmap.shape
    upsampled = np.asarray(Image.fromarray(low).resize((width, height), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(cam.heatmap, upsampled / upsampled.max(), atol=1e-4)
