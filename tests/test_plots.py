"""Every plot writes a real PNG, atomically, that shows what it was given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgrec.core.images import load_image
from imgrec.core.plots import (
    plot_bars,
    plot_confusion_matrix,
    plot_image_grid,
    plot_training_curves,
)

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _png(path: Path, *, min_width: int = 200, min_height: int = 150) -> np.ndarray:
    """The PNG's pixels, after checking it is a PNG of a sensible size, alone in its folder."""
    assert path.is_file()
    with Image.open(path) as im:
        assert im.format == "PNG"
        assert im.width >= min_width and im.height >= min_height
        assert im.width <= 4000 and im.height <= 4000
        pixels = np.asarray(im.convert("RGB"))
    assert pixels.std() > 5  # something is drawn
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    return pixels


def _matrix(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 20, (n, n)) + np.diag(rng.integers(50, 200, n))


def test_image_grid_of_a_photo_and_grey_images(tmp_path, chelsea_path):
    photo = load_image(chelsea_path)
    grey = load_image(chelsea_path, mode="L")
    out = plot_image_grid(
        [photo, grey, photo[::4, ::4], grey[..., 0]],
        tmp_path / "grid.png",
        titles=["rgb", "grey", "small", "grey 2-d"],
        title="chelsea",
    )
    assert out == tmp_path / "grid.png"
    pixels = _png(out, min_width=300, min_height=200)
    # the grey cells are grey and the photo is in colour
    channel_spread = np.abs(pixels.astype(int) - pixels.mean(axis=2, keepdims=True)).max(axis=2)
    width = pixels.shape[1]
    assert channel_spread[:, : width // 2].max() > 40  # the cat's colours, left column
    assert channel_spread[:, width // 2 :].max() <= 2  # right column: grey images


def test_image_grid_columns_and_errors(tmp_path):
    tiles = [np.full((32, 32, 3), v, np.uint8) for v in (0, 80, 160, 240, 255)]
    tiles[0][:, :16] = 255  # the first tile is half white, so the picture is not flat
    wide = _png(plot_image_grid(tiles, tmp_path / "one_row" / "g.png", columns=5))
    tall = _png(plot_image_grid(tiles, tmp_path / "one_column" / "g.png", columns=1))
    assert wide.shape[1] > wide.shape[0] and tall.shape[0] > tall.shape[1]

    with pytest.raises(ValueError, match="at least one"):
        plot_image_grid([], tmp_path / "x.png")
    with pytest.raises(ValueError, match="uint8"):
        plot_image_grid([np.zeros((8, 8, 3))], tmp_path / "x.png")
    with pytest.raises(ValueError, match="H x W"):
        plot_image_grid([np.zeros((8, 8, 2), np.uint8)], tmp_path / "x.png")
    with pytest.raises(ValueError, match="titles"):
        plot_image_grid(tiles, tmp_path / "x.png", titles=["a"])
    assert not (tmp_path / "x.png").exists()


@pytest.mark.slow
def test_training_curves(tmp_path):
    epochs = 12
    history = {
        "loss": list(np.linspace(2.0, 0.5, epochs)),
        "val_loss": list(np.linspace(2.1, 0.9, epochs)),
        "accuracy": list(np.linspace(0.3, 0.8, epochs)),
        "val_accuracy": list(np.linspace(0.3, 0.7, epochs)),
        "learning_rate": [1e-3] * epochs,
    }
    both = _png(plot_training_curves(history, tmp_path / "both" / "c.png", title="seed CNN"))
    loss_only = _png(plot_training_curves({"loss": [1.0, 0.5]}, tmp_path / "loss" / "c.png"))
    assert both.shape[1] > 1.5 * loss_only.shape[1]  # two panels against one
    acc = {"loss": [1.0, 0.5], "sparse_categorical_accuracy": [0.5, 0.6]}
    assert (
        _png(plot_training_curves(acc, tmp_path / "acc" / "c.png")).shape[1]
        > 1.5 * (loss_only.shape[1])
    )
    with pytest.raises(ValueError, match="loss"):
        plot_training_curves({"accuracy": [0.5]}, tmp_path / "bad.png")


@pytest.mark.slow
def test_confusion_matrix(tmp_path):
    first = _png(plot_confusion_matrix(_matrix(10), CLASSES, tmp_path / "a" / "cm.png"))
    second = _png(plot_confusion_matrix(_matrix(10, seed=1), CLASSES, tmp_path / "b" / "cm.png"))
    counts = _png(
        plot_confusion_matrix(_matrix(10), CLASSES, tmp_path / "c" / "cm.png", normalize=False)
    )
    assert first.shape != second.shape or not np.array_equal(first, second)
    assert first.shape != counts.shape or not np.array_equal(first, counts)


@pytest.mark.slow
@pytest.mark.parametrize("n", [1, 3, 25, 40])
def test_confusion_matrix_sizes(tmp_path, n):
    matrix = _matrix(n)
    matrix[0] = 0  # a class with no test images must not break the normalisation
    names = [f"class number {i}" for i in range(n)]
    pixels = _png(plot_confusion_matrix(matrix, names, tmp_path / "cm.png", title=f"{n}"))
    # the figure grows with the classes, within bounds
    assert pixels.shape[0] >= (300 if n < 25 else 900)


def test_confusion_matrix_errors(tmp_path):
    with pytest.raises(ValueError, match="3 x 3"):
        plot_confusion_matrix(np.zeros((2, 2)), ["a", "b", "c"], tmp_path / "cm.png")
    with pytest.raises(ValueError, match="2 x 2"):
        plot_confusion_matrix(np.zeros((2, 3)), ["a", "b"], tmp_path / "cm.png")


def test_bars(tmp_path):
    labels = ["mobilenet_v2", "efficientnet_lite0", "a much longer model name", "seed"]
    out = plot_bars(labels, [0.71, 0.75, 0.5, 0.62], tmp_path / "bars.png", xlabel="accuracy")
    few = _png(out, min_width=300, min_height=100)
    many = _png(
        plot_bars([f"m{i}" for i in range(30)], range(30), tmp_path / "many" / "bars.png"),
        min_width=300,
        min_height=100,
    )
    assert many.shape[0] > 2 * few.shape[0]
    with pytest.raises(ValueError, match="one value per label"):
        plot_bars(["a", "b"], [1.0], tmp_path / "x.png")
