"""Augmentation specs, the Keras layers built from them, and the augmentation grid."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from PIL import Image

from imgrec.core.errors import ImageError, SpecError
from imgrec.training.augment import augment_grid, augmentation_layer, parse_augment, spec_to_string

FULL = "flip,rotate=15,zoom=0.1,shift=0.1,brightness=0.2,contrast=0.2"


def _photo(size: int = 32, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A float batch of one asymmetric image with texture everywhere (0-255)."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (1, size, size, channels)).astype("float32")
    image[:, :, : size // 4] = 250.0  # a bright band on the left: flips are visible
    return image


def _run(spec: str, x: np.ndarray, *, seed: int | None = 0, training: bool = True) -> np.ndarray:
    layer = augmentation_layer(spec, seed=seed)
    return keras.ops.convert_to_numpy(layer(x, training=training))


# --- parse_augment / spec_to_string ----------------------------------------------------


def test_parse_full_spec_in_canonical_order():
    parsed = parse_augment(" Contrast=0.2, brightness=0.2,shift=0.1 ,zoom=0.1,rotate=15,FLIP ")
    assert parsed == {
        "flip": True,
        "rotate": 15.0,
        "zoom": 0.1,
        "shift": 0.1,
        "brightness": 0.2,
        "contrast": 0.2,
    }
    assert list(parsed) == ["flip", "rotate", "zoom", "shift", "brightness", "contrast"]
    assert spec_to_string(parsed) == FULL
    assert parse_augment(spec_to_string(parsed)) == parsed


@pytest.mark.parametrize("spec", ["", "  ", "none", "None"])
def test_empty_spec(spec):
    assert parse_augment(spec) == {}
    assert augmentation_layer(spec) is None
    assert spec_to_string({}) == "none"


@pytest.mark.parametrize(
    ("spec", "part", "words"),
    [
        ("flip,blur=3", "blur=3", ["unknown", "flip, rotate, zoom, shift, brightness, contrast"]),
        ("flip=1", "flip=1", ["no value"]),
        ("rotate", "rotate", ["needs a value"]),
        ("zoom=", "zoom=", ["needs a value"]),
        ("shift=abc", "shift=abc", ["not a number"]),
        ("rotate=200", "rotate=200", ["180"]),
        ("rotate=0", "rotate=0", ["180"]),
        ("zoom=1.5", "zoom=1.5", ["between 0 and 1"]),
        ("zoom=1", "zoom=1", ["between 0 and 1"]),
        ("contrast=-0.1", "contrast=-0.1", ["between 0 and 1"]),
        ("brightness=nan", "brightness=nan", ["between 0 and 1"]),
        ("flip,zoom=0.1,flip", "flip", ["twice"]),
        ("zoom=0.1,zoom=0.2", "zoom=0.2", ["twice"]),
    ],
)
def test_bad_specs_name_the_part(spec, part, words):
    with pytest.raises(SpecError) as info:
        parse_augment(spec)
    message = str(info.value)
    assert repr(part) in message
    for word in words:
        assert word in message


def test_empty_part_is_an_error():
    with pytest.raises(SpecError, match="empty part"):
        parse_augment("flip,,zoom=0.1")


def test_spec_to_string_checks_the_dict():
    assert (
        spec_to_string({"zoom": 0.25, "flip": True, "rotate": 7.5}) == "flip,rotate=7.5,zoom=0.25"
    )
    assert spec_to_string({"flip": False, "shift": np.float32(0.5)}) == "shift=0.5"
    with pytest.raises(SpecError, match="blur"):
        spec_to_string({"blur": 1.0})
    with pytest.raises(SpecError, match="zoom=2"):
        spec_to_string({"zoom": 2})
    with pytest.raises(SpecError, match="rotate"):
        spec_to_string({"rotate": "15"})


# --- the layer ------------------------------------------------------------------------


def test_layer_order_and_types():
    layer = augmentation_layer("contrast=0.2,brightness=0.2,shift=0.1,zoom=0.1,rotate=15,flip")
    assert isinstance(layer, keras.Sequential)
    assert layer.name == "augmentation"
    assert [type(sub) for sub in layer.layers] == [
        keras.layers.RandomFlip,
        keras.layers.RandomRotation,
        keras.layers.RandomZoom,
        keras.layers.RandomTranslation,
        keras.layers.RandomBrightness,
        keras.layers.RandomContrast,
    ]
    flip, rotate, zoom, shift, brightness, contrast = layer.layers
    assert flip.mode == "horizontal"
    assert rotate.factor == pytest.approx((-15 / 360, 15 / 360))
    assert {rotate.fill_mode, zoom.fill_mode, shift.fill_mode} == {"nearest"}
    assert (zoom.height_factor, zoom.width_factor) == (0.1, 0.1)
    assert (shift.height_factor, shift.width_factor) == (0.1, 0.1)
    assert tuple(brightness.value_range) == (0, 255)
    assert tuple(contrast.value_range) == (0, 255)


def test_layer_from_dict_keeps_only_what_is_asked():
    layer = augmentation_layer({"zoom": 0.2, "flip": True})
    assert [type(sub) for sub in layer.layers] == [keras.layers.RandomFlip, keras.layers.RandomZoom]


def test_identity_at_inference(tmp_path):
    x = _photo(channels=3)
    assert np.array_equal(_run(FULL, x, training=False), x)

    inputs = keras.Input((32, 32, 3))
    model = keras.Model(inputs, keras.layers.Identity()(augmentation_layer(FULL, seed=0)(inputs)))
    assert np.array_equal(model.predict(x, verbose=0), x)
    assert np.array_equal(keras.ops.convert_to_numpy(model(x, training=False)), x)
    # Keras 3's image layers default to training mode in a bare call: augment.py's
    # docstring warns about it, and this pins the behaviour it describes.
    assert not np.array_equal(keras.ops.convert_to_numpy(model(x)), x)

    # The layer stays in a saved model, and a loaded model is still identity in predict.
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras")
    assert [type(sub) for sub in loaded.get_layer("augmentation").layers] == [
        type(sub) for sub in model.get_layer("augmentation").layers
    ]
    assert np.array_equal(loaded.predict(x, verbose=0), x)


def test_flip_mirrors_exactly_both_ways():
    x = _photo()
    out = _run("flip", np.repeat(x, 16, axis=0), seed=1)
    same = [np.array_equal(o, x[0]) for o in out]
    mirrored = [np.array_equal(o, x[0, :, ::-1]) for o in out]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert any(same) and any(mirrored)


def test_brightness_changes_the_mean():
    x = np.full((8, 16, 16, 3), 128.0, dtype="float32")
    out = _run("brightness=0.5", x, seed=2)
    means = out.mean(axis=(1, 2, 3))
    assert np.all(np.abs(means - 128.0) > 0.01)
    assert means.std() > 1.0  # each image gets its own change
    assert out.min() >= 0 and out.max() <= 255


@pytest.mark.parametrize("spec", ["rotate=45", "zoom=0.5", "shift=0.3", "contrast=0.5"])
def test_each_geometric_and_contrast_transform_changes_pixels(spec):
    x = np.repeat(_photo(), 4, axis=0)
    out = _run(spec, x, seed=3)
    assert out.shape == x.shape
    for image in out:
        assert not np.allclose(image, x[0])


def test_grey_images_keep_one_channel():
    x = np.repeat(_photo(channels=1), 4, axis=0)
    out = _run(FULL, x, seed=4)
    assert out.shape == x.shape
    assert not np.allclose(out, x)


def test_seed_makes_it_repeatable():
    x = np.repeat(_photo(), 4, axis=0)
    first, again = _run(FULL, x, seed=7), _run(FULL, x, seed=7)
    assert np.array_equal(first, again)
    assert not np.allclose(first, _run(FULL, x, seed=8))


# --- the grid -------------------------------------------------------------------------


def _pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"))


@pytest.mark.slow
def test_grid_of_a_photo(tmp_path, chelsea_path):
    out = augment_grid(chelsea_path, FULL, tmp_path / "grid.png", count=6, size=64)
    assert out == tmp_path / "grid.png"
    pixels = _pixels(out)
    assert pixels.shape[0] > 200 and pixels.shape[1] > 300
    assert pixels.std() > 20  # a picture, not a blank page
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]

    again = augment_grid(chelsea_path, FULL, tmp_path / "again.png", count=6, size=64)
    assert np.array_equal(_pixels(again), pixels)
    other = augment_grid(chelsea_path, FULL, tmp_path / "other.png", count=6, size=64, seed=1)
    assert not np.array_equal(_pixels(other), pixels)


def test_grid_of_a_grey_array(tmp_path):
    grey = np.clip(_photo(size=48, channels=1)[0], 0, 255).astype(np.uint8)
    out = augment_grid(grey, "flip,rotate=20,contrast=0.3", tmp_path / "grey.png", count=4)
    pixels = _pixels(out).astype(int)
    assert pixels.shape[0] > 100
    # grey stays grey: the only colour on the page is the (black) text
    assert np.abs(pixels[..., 0] - pixels[..., 1]).max() <= 1
    assert np.abs(pixels[..., 1] - pixels[..., 2]).max() <= 1


def test_grid_errors(tmp_path, chelsea_path):
    with pytest.raises(SpecError, match="nothing"):
        augment_grid(chelsea_path, "none", tmp_path / "g.png")
    with pytest.raises(SpecError, match="blur"):
        augment_grid(chelsea_path, "blur=1", tmp_path / "g.png")
    with pytest.raises(ImageError, match=r"missing\.png"):
        augment_grid(tmp_path / "missing.png", "flip", tmp_path / "g.png")
    with pytest.raises(ValueError, match="count"):
        augment_grid(chelsea_path, "flip", tmp_path / "g.png", count=0)
    assert list(tmp_path.iterdir()) == []
