"""The layer viewer: Keras's summary as data, and each layer's feature maps for a photo."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest
from PIL import Image

import imgrec
from imgrec.cli import main
from imgrec.core.errors import ImgrecError, ModelError, SpecError
from imgrec.core.images import load_image
from imgrec.explanation.layer_view import channel_grid, describe_layers, feature_maps, layers_report
from imgrec.models.chapter import build_chapter_network
from imgrec.models.metadata import ModelInfo, attach_info, model_info
from imgrec.models.preprocessing import Preprocessing
from imgrec.models.pretrained import load_backbone
from imgrec.training.transfer import BACKBONE_LAYER, build_transfer_model


@pytest.fixture(scope="module")
def chelsea(chelsea_path) -> np.ndarray:
    return load_image(chelsea_path)


@pytest.fixture(scope="module")
def small_vgg() -> keras.Model:
    """vgg-bn for 32 x 32 photos and 3 classes, random weights."""
    model = build_chapter_network("vgg-bn", (32, 32, 3), 3)
    info = ModelInfo("small-vgg", ("a", "b", "c"), Preprocessing(size=(32, 32)), "random")
    return attach_info(model, info)


@pytest.fixture(scope="module")
def transfer_model() -> keras.Model:
    backbone, preprocessing, _ = load_backbone("mobilenet_v2", (96, 96, 3))
    model = build_transfer_model(backbone, preprocessing, (64, 64, 3), 3)
    backbone.trainable = False
    info = ModelInfo("pets", ("cat", "dog", "fish"), Preprocessing(size=(64, 64)), "test")
    return attach_info(model, info)


def test_describe_layers_is_the_summary_as_data(mobilenet):
    rows = describe_layers(mobilenet)
    assert [row["name"] for row in rows] == [layer.name for layer in mobilenet.layers]
    assert sum(row["parameters"] for row in rows) == mobilenet.count_params()
    conv1 = next(row for row in rows if row["name"] == "Conv1")
    # 3 x 3 kernels, 3 input channels, 32 filters, no bias; stride 2 on 224 x 224.
    assert conv1 == {
        "name": "Conv1",
        "type": "Conv2D",
        "output_shape": [None, 112, 112, 32],
        "parameters": 3 * 3 * 3 * 32,
        "trainable": True,
        "depth": 0,
    }
    json.dumps(rows)  # JSON-ready


@pytest.mark.slow
def test_nested_models_are_opened(transfer_model):
    rows = describe_layers(transfer_model)
    by_name = {row["name"]: row for row in rows}
    top = [row for row in rows if row["depth"] == 0]
    assert [row["name"] for row in top] == [layer.name for layer in transfer_model.layers]
    assert sum(row["parameters"] for row in top) == transfer_model.count_params()
    backbone = transfer_model.get_layer(BACKBONE_LAYER)
    inner = [row for row in rows if row["name"].startswith("backbone/")]
    assert len(inner) == len(backbone.layers)
    assert {row["depth"] for row in inner} == {1}
    assert by_name["backbone/Conv1"]["output_shape"] == [None, 48, 48, 32]
    assert by_name["backbone/Conv1"]["trainable"] is False  # the frozen backbone
    assert by_name["predictions"]["trainable"] is True


@pytest.mark.slow
def test_feature_maps_are_the_layers_outputs(mobilenet, chelsea):
    maps = feature_maps(mobilenet, chelsea, layers=["out_relu", "Conv1"], channels=4)
    assert list(maps) == ["Conv1", "out_relu"]  # the network's order
    assert maps["Conv1"].shape == (112, 112, 4) and maps["out_relu"].shape == (7, 7, 4)
    assert all(m.dtype == np.float32 for m in maps.values())
    batch = model_info(mobilenet).preprocessing([chelsea])
    conv1 = keras.Model(mobilenet.input, mobilenet.get_layer("Conv1").output)
    np.testing.assert_allclose(maps["Conv1"], conv1.predict_on_batch(batch)[0, ..., :4], atol=1e-4)


@pytest.mark.slow
def test_feature_maps_inside_a_nested_backbone(transfer_model, chelsea):
    maps = feature_maps(
        transfer_model, chelsea, layers=["imagenet_normalize", "backbone/Conv1"], channels=32
    )
    normalized = maps["imagenet_normalize"]
    assert normalized.shape == (96, 96, 3)  # resized to the backbone's input inside the model
    backbone = transfer_model.get_layer(BACKBONE_LAYER)
    conv1 = keras.Model(backbone.input, backbone.get_layer("Conv1").output)
    expected = conv1.predict_on_batch(normalized[np.newaxis])[0]
    np.testing.assert_allclose(maps["backbone/Conv1"], expected, atol=1e-4)


def test_wrong_layers_and_channels_are_refused(small_vgg, chelsea):
    with pytest.raises(ModelError, match=r"no layer 'conv9'.*candidates: .*block3_relu2"):
        feature_maps(small_vgg, chelsea, layers=["conv9"])
    with pytest.raises(ModelError, match="no layer 'fc1'"):  # 2-D: not a feature map
        feature_maps(small_vgg, chelsea, layers=["fc1"])
    with pytest.raises(SpecError, match="channels"):
        feature_maps(small_vgg, chelsea, channels=0)


def test_layers_report_draws_one_grid_per_4d_layer(small_vgg, chelsea, tmp_path):
    result = layers_report(small_vgg, chelsea, tmp_path)
    four_d = [
        (i, row["name"])
        for i, row in enumerate(result["layers"])
        if row["output_shape"] and len(row["output_shape"]) == 4 and row["type"] != "InputLayer"
    ]
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == [f"{i:02d}_{name}.png" for i, name in four_d]
    assert pngs[:2] == ["01_rescale.png", "02_block1_conv1.png"]
    assert json.loads((tmp_path / "index.json").read_text()) == result
    assert result["parameters"] == small_vgg.count_params()
    with Image.open(tmp_path / "02_block1_conv1.png") as png:
        # 16 of 32 channels of 32 x 32, enlarged twice, 4 x 4 tiles 2 pixels apart.
        assert png.format == "PNG" and png.size == (4 * 64 + 3 * 2,) * 2
    with Image.open(tmp_path / "15_block3_conv1.png") as png:
        assert png.size == (4 * 64 + 3 * 2,) * 2  # 8 x 8 maps, enlarged eight times


def test_an_image_needs_an_output_folder(small_vgg, chelsea):
    with pytest.raises(ImgrecError, match="--out"):
        layers_report(small_vgg, chelsea)


def test_channel_grid():
    values = np.zeros((5, 7, 3), np.float32)
    values[..., 1] = np.arange(7)  # a ramp from left to right
    grid = channel_grid(values)
    scale = 10  # 7 pixels enlarged to at least 64
    assert grid.shape == (2 * 5 * scale + 2, 2 * 7 * scale + 2, 3)
    first, second = grid[: 5 * scale, : 7 * scale], grid[: 5 * scale, 7 * scale + 2 :]
    assert len(np.unique(first.reshape(-1, 3), axis=0)) == 1  # constant: one colour
    assert not np.array_equal(second[:, 0], second[:, -1])  # the ramp's two ends
    assert (grid[5 * scale : 5 * scale + 2] == 255).all()  # the white gap


@pytest.mark.slow
def test_layers_command_prints_the_table(small_vgg, tmp_path, capsys, chelsea_path):
    path = imgrec.save_model(small_vgg, tmp_path / "small.keras")
    assert main(["layers", str(path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["Layer", "(type)", "Output", "Shape", "Param", "#"]
    conv = next(line for line in lines if line.startswith("block1_conv1 (Conv2D)"))
    filters = small_vgg.get_layer("block1_conv1").filters
    weights = 3 * 3 * 3 * filters  # a 3 x 3 kernel over RGB, no bias
    assert conv.split()[-5:] == ["(None,", "32,", "32,", f"{filters})", f"{weights:,}"]
    assert f"Total params: {small_vgg.count_params():,}" in out

    folder = tmp_path / "maps"
    assert main(["layers", str(path), str(chelsea_path), "--out", str(folder), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["image"] == str(chelsea_path)
    assert len(result["feature_maps"]) == len(list(folder.glob("*.png"))) > 0
