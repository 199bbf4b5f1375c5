"""The one registry: the chapter's networks and the zoo's, listed, looked up and built."""

from __future__ import annotations

import json
import subprocess
import sys

import keras
import pytest

from imgrec.core.errors import ModelError
from imgrec.models.chapter import CHAPTER_ARCHITECTURES
from imgrec.models.registry import (
    CHAPTER,
    SR_KIND,
    ZOO_KIND,
    ModelEntry,
    create_model,
    get_model_entry,
    is_model,
    list_models,
    register_model,
)
from imgrec.models.zoo import ZOO

CHAPTER_NAMES = ["cifar-cnn", "catdog-cnn", "mnist-cnn", "vgg-bn", "fast-cnn"]


def test_every_network_of_both_tables_is_listed_once_in_table_order():
    assert list_models(CHAPTER) == CHAPTER_NAMES == list(CHAPTER_ARCHITECTURES)
    assert list_models(ZOO_KIND) == [entry.name for entry in ZOO]
    assert list_models(SR_KIND) == ["sr-cnn", "sr-resnet"]
    assert list_models() == CHAPTER_NAMES + [entry.name for entry in ZOO] + ["sr-cnn", "sr-resnet"]
    assert list_models(pattern="resnet*_v2") == ["resnet50_v2", "resnet101_v2", "resnet152_v2"]
    with pytest.raises(ModelError, match="kind"):
        list_models("seed")


def test_an_entry_says_kind_input_size_builder_and_metadata():
    cifar = get_model_entry("CIFAR_CNN")
    assert (cifar.name, cifar.kind, cifar.input_shape, cifar.input_size) == (
        "cifar-cnn",
        CHAPTER,
        (32, 32, 3),
        (32, 32),
    )
    assert cifar.chapter is CHAPTER_ARCHITECTURES["cifar-cnn"] and cifar.zoo is None
    assert cifar.num_classes == 10 and cifar.builder is CHAPTER_ARCHITECTURES["cifar-cnn"].build
    inception = get_model_entry("InceptionV3")
    assert (inception.kind, inception.input_shape, inception.num_classes) == (
        ZOO_KIND,
        (299, 299, 3),
        1000,
    )
    assert inception.zoo is next(e for e in ZOO if e.name == "inception_v3")
    assert inception.chapter is None and inception.display_name == "InceptionV3"
    assert get_model_entry("mobilenet-v2") is get_model_entry("MobileNetV2")


def test_an_unknown_name_lists_both_kinds():
    with pytest.raises(ModelError) as info:
        get_model_entry("lenet-5")
    for name in list_models():
        assert name in str(info.value)
    assert not is_model("lenet-5") and is_model("VGG_BN") and is_model("ResNet50")


def test_looking_up_imports_no_keras():
    """Listing and looking up answer at once: no TensorFlow, no Keras (a child process)."""
    code = (
        "import json, sys\n"
        "from imgrec.models.registry import get_model_entry, list_models\n"
        "names = list_models()\n"
        "size = get_model_entry('xception').input_size\n"
        "loaded = sorted(m for m in ('keras', 'tensorflow') if m in sys.modules)\n"
        "print(json.dumps([len(names), size, loaded]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == [len(list_models()), [299, 299], []]


def test_create_model_builds_the_chapters_networks():
    model = create_model("mnist-cnn")
    assert model.input_shape == (None, 28, 28, 1) and model.count_params() == 1_199_882
    grey = create_model("cifar_cnn", input_shape=(28, 28, 1), num_classes=3)
    assert grey.input_shape == (None, 28, 28, 1) and grey.output_shape == (None, 3)
    flip = keras.layers.RandomFlip("horizontal", name="flip")
    assert create_model("vgg-bn", augmentation=flip).layers[1].name == "flip"
    with pytest.raises(ModelError, match=r"trained from scratch.*pretrained"):
        create_model("cifar-cnn", pretrained=True)
    with pytest.raises(ModelError, match="include_top"):
        create_model("cifar-cnn", include_top=False)


@pytest.mark.slow
def test_create_model_builds_a_zoo_network_without_weights():
    model = create_model(
        "efficientnet_lite0", input_shape=(96, 96, 3), include_top=False, pooling="avg"
    )
    assert model.input_shape == (None, 96, 96, 3) and model.output_shape == (None, 1280)
    head = create_model("mobilenet_v2", input_shape=(96, 96, 3), num_classes=7)
    assert head.output_shape == (None, 7)
    with pytest.raises(ModelError, match="augmentation"):
        create_model("mobilenet_v2", augmentation=keras.layers.RandomFlip())


@pytest.mark.slow
def test_create_model_pretrained_loads_the_imagenet_weights():
    """The offline package's weights, as imgrec.load_model gives them."""
    from imgrec.models.metadata import model_info

    model = create_model("MobileNetV2", pretrained=True)
    assert model.output_shape == (None, 1000)
    assert "offline package" in model_info(model).weights
    with pytest.raises(ModelError, match="ImageNet's input"):
        create_model("mobilenet_v2", pretrained=True, num_classes=3)


def test_register_model_adds_a_network_every_verb_can_name():
    from imgrec.models import registry

    def tiny(input_shape, num_classes, augmentation=None):
        inputs = keras.Input(input_shape)
        pooled = keras.layers.GlobalAveragePooling2D()(inputs)
        return keras.Model(inputs, keras.layers.Dense(num_classes)(pooled))

    entry = ModelEntry("tiny-net", CHAPTER, "tiny-net", "a test", (8, 8, 1), tiny, 2)
    try:
        assert register_model(entry) is entry
        assert list_models(CHAPTER)[-1] == "tiny-net"
        assert create_model("TinyNet").output_shape == (None, 2)
        with pytest.raises(ModelError, match="taken by chapter network cifar-cnn"):
            register_model(ModelEntry("CIFAR_cnn", CHAPTER, "x", "", (8, 8, 1), tiny, 2))
        with pytest.raises(ModelError, match="kind"):
            register_model(ModelEntry("other", "seed", "other", "", (8, 8, 1), tiny, 2))
    finally:
        registry._REGISTRY.pop("tiny-net", None)
    assert not is_model("tiny-net")
