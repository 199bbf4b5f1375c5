"""The model zoo: counts from building the networks, weights origins, and a fast CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from imgrec.core.storage import keras_models_dir
from imgrec.models.torch_weights import load_state_dict
from imgrec.models.zoo import (
    EFFICIENTNET_LITE0_OFFLINE,
    ZOO,
    get_entry,
    parameter_counts,
    weights_origin,
    zoo_table,
)

# The counts fixture builds all seventeen networks: about a minute on two cores.
pytestmark = pytest.mark.slow

# The Keras Applications documentation's figures (exact totals of model.summary();
# depth counts the layers that hold weights).
PUBLISHED = {
    "xception": (22_910_480, 81),
    "vgg16": (138_357_544, 16),
    "vgg19": (143_667_240, 19),
    "resnet50": (25_636_712, 107),
    "resnet101": (44_707_176, 209),
    "resnet152": (60_419_944, 311),
    "resnet50_v2": (25_613_800, 103),
    "resnet101_v2": (44_675_560, 205),
    "resnet152_v2": (60_380_648, 307),
    "inception_v3": (23_851_784, 189),
    "inception_resnet_v2": (55_873_736, 449),
    "mobilenet": (4_253_864, 55),
    "mobilenet_v2": (3_538_984, 105),
    "densenet121": (8_062_504, 242),
    "efficientnet_b0": (5_330_571, 132),
}


@pytest.fixture(scope="module")
def counts():
    """Build every network once (about a minute on two cores)."""
    return parameter_counts(refresh=True)


def test_parameter_counts_equal_the_published_ones(counts):
    for name, (parameters, depth) in PUBLISHED.items():
        assert counts[name] == {"parameters": parameters, "depth": depth}, name


def test_efficientnet_lite0_count_equals_its_weights_file(counts):
    """Our own Lite0 has exactly as many numbers as the PyTorch file it loads."""
    state = load_state_dict(EFFICIENTNET_LITE0_OFFLINE.path())
    expected = sum(v.size for k, v in state.items() if not k.endswith("num_batches_tracked"))
    assert counts["efficientnet_lite0"]["parameters"] == expected
    assert round(expected / 1e6, 1) == 4.7  # the TensorFlow release's "4.7M"


def test_every_network_is_in_the_table(counts):
    rows = zoo_table()
    assert [row["name"] for row in rows] == [entry.name for entry in ZOO]
    assert set(PUBLISHED) | {"efficientnet_lite0", "squeezenet1_1"} == {row["name"] for row in rows}


def test_squeezenet_count_is_torchvisions(counts):
    """Our own SqueezeNet v1.1 has torchvision's published count (its weights' meta)."""
    assert counts["squeezenet1_1"] == {"parameters": 1_235_496, "depth": 26}


def test_weights_origin_follows_what_is_on_this_machine(counts, tmp_path, monkeypatch):
    """Offline here: the packaged networks come from their packages, others are missing
    until their file lands in the Keras cache (or, for SqueezeNet, PyTorch's hub cache)."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    resnet = get_entry("ResNet50")
    assert weights_origin(get_entry("mobilenet_v2")) == "offline package"
    assert weights_origin(get_entry("efficientnet-lite0")) == "offline package"
    assert weights_origin(resnet) == "unavailable"
    keras_models_dir().mkdir(parents=True)
    (keras_models_dir() / resnet.keras_weights_file).write_bytes(b"stand-in")
    assert weights_origin(resnet) == "Keras cache"
    squeezenet = get_entry("squeezenet1_1")
    assert weights_origin(squeezenet) == "unavailable"
    checkpoints = tmp_path / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / squeezenet.torch_hub.file_name).write_bytes(b"stand-in")
    assert weights_origin(squeezenet) == "torch hub cache"


def test_zoo_command_answers_without_tensorflow(counts):
    """`imgrec zoo` reads the cached counts and never starts TensorFlow or Keras."""
    code = (
        "import json, sys\n"
        "from imgrec.cli import main\n"
        "main(['zoo', '--json'])\n"
        "print(json.dumps(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    table_text, loaded = out.rsplit("\n", 2)[0], out.rsplit("\n", 2)[1]
    assert json.loads(loaded) == []
    rows = json.loads(table_text)
    assert {row["name"]: row["parameters"] for row in rows}["vgg16"] == PUBLISHED["vgg16"][0]


def test_zoo_table_prints_for_people(counts, capsys, tmp_path, monkeypatch):
    from imgrec.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # no SqueezeNet weights file
    assert main(["zoo"]) == 0
    out = capsys.readouterr().out
    table, _, footer = out.partition("\n\n")
    header, *lines = table.splitlines()
    assert header.split()[:3] == ["Model", "Size", "(MB)"]
    assert len(lines) == len(ZOO)
    mobilenet_v2 = next(line for line in lines if line.startswith("MobileNetV2 "))
    assert "3,538,984" in mobilenet_v2
    assert "offline package" in mobilenet_v2
    assert "names the file to get" in footer  # ResNet50 & co. are unavailable offline
    squeezenet = next(line for line in lines if line.startswith("SqueezeNet1.1 "))
    assert "1,235,496" in squeezenet
    assert "unavailable" in squeezenet
    # No download for it: the footer says which file to put where.
    assert "squeezenet1_1-b8a52dc0.pth" in footer
    assert str(tmp_path / "hub" / "checkpoints") in footer


def test_names_are_forgiving_and_unknown_names_are_listed():
    assert get_entry("MobileNetV2") is get_entry("mobilenet_v2") is get_entry("mobilenet-v2")
    with pytest.raises(Exception, match="resnet50"):
        get_entry("resnet49")


def test_published_figures_have_no_typos():
    # SqueezeNet claims AlexNet's accuracy (57.2 % top-1 in its paper), not its successors'.
    alexnet_level = {"squeezenet1_1"}
    for entry in ZOO:
        low = 55 if entry.name in alexnet_level else 60
        assert entry.top1 is None or low < entry.top1 < 90
        assert entry.top5 is None or entry.top1 < entry.top5 < 100
        assert entry.size_mb > 0 and entry.input_size in (224, 299)
