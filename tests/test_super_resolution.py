"""2x super-resolution: the two networks, training on photos, upscaling without seams,
PSNR and SSIM, the evaluation report and the command line.

The networks are trained for a handful of steps once per module (seconds): enough to
check everything but how good they get, which the README measures on the full runs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgrec.cli import main
from imgrec.core.errors import DatasetError, ImageError, ModelError
from imgrec.core.metrics import psnr, ssim
from imgrec.models.registry import SR_KIND, create_model, get_model_entry, list_models
from imgrec.models.super_resolution import (
    context_margin,
    super_resolution_architecture,
    upscale,
    upscale_file,
)
from imgrec.training.super_resolution import (
    TEST_PHOTOS,
    TRAIN_PHOTOS,
    bicubic_upscale,
    downscale,
    evaluate_super_resolution,
    train_super_resolution,
    write_photo_folders,
)


def _photo(seed: int, height: int, width: int) -> np.ndarray:
    """A smooth colour picture with edges (gradients and a few discs)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height)], -1)
    for _ in range(4):
        cy, cx, r = rng.integers(0, height), rng.integers(0, width), rng.integers(6, 20)
        image[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.integers(0, 256, 3)
    return image.astype(np.uint8)


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    Image.fromarray(_photo(0, 96, 120)).save(folder / "a.png")
    Image.fromarray(_photo(1, 80, 90)).save(folder / "b.jpg", quality=95)
    (folder / "notes.txt").write_text("not a photo")
    Image.fromarray(_photo(2, 40, 40)).save(folder / "tiny.png")  # under a training crop
    return folder


@pytest.fixture(scope="module")
def models(photos, tmp_path_factory) -> dict[str, Path]:
    """Both networks, trained for a few steps: sr-cnn by the command line, sr-resnet by
    the API."""
    folder = tmp_path_factory.mktemp("models")
    cnn = folder / "sr-cnn.keras"
    argv = ["train", str(photos), "--arch", "sr-cnn", "--epochs", "1", "--batch-size", "2"]
    assert main([*argv, "--out", str(cnn), "--quiet"]) == 0
    resnet = folder / "sr-resnet.keras"
    result = train_super_resolution(
        photos, "sr-resnet", out=resnet, epochs=2, steps_per_epoch=2, batch_size=2, verbose=0
    )
    assert result["model"] == str(resnet) and result["steps"] == 4
    assert result["photos"] == ["a.png", "b.jpg"]
    assert [Path(s["path"]).name for s in result["skipped"]] == ["tiny.png"]
    return {"sr-cnn": cnn, "sr-resnet": resnet}


@pytest.fixture(scope="module")
def loaded(models):
    import imgrec

    return {arch: imgrec.load_model(path) for arch, path in models.items()}


def test_the_registry_lists_both_networks_as_their_own_kind():
    assert list_models(SR_KIND) == ["sr-cnn", "sr-resnet"]
    entry = get_model_entry("SR_ResNet")
    assert entry.kind == SR_KIND and entry.super_resolution is not None
    model = create_model("sr-cnn")
    assert model.input_shape == (None, None, None, 3)
    assert model.compute_output_shape((1, 37, 53, 3)) == (1, 74, 106, 3)
    assert create_model("sr-resnet", input_shape=(32, 32, 1)).output_shape[-1] == 1
    with pytest.raises(ModelError, match="super-resolution"):
        create_model("sr-cnn", pretrained=True)


def test_an_untrained_network_is_bicubic_upscaling():
    """The last layers start at zero: the output is the bicubic upscaling inside."""
    low = _photo(3, 24, 30)
    for arch in ("sr-cnn", "sr-resnet"):
        big = upscale(create_model(arch), low)
        assert psnr(bicubic_upscale(low), big) > 35


def test_the_files_say_they_hold_super_resolution_networks(models, tmp_path):
    assert {arch: super_resolution_architecture(p) for arch, p in models.items()} == {
        "sr-cnn": "sr-cnn",
        "sr-resnet": "sr-resnet",
    }
    (tmp_path / "x.keras").write_bytes(b"not a zip")
    assert super_resolution_architecture(tmp_path / "x.keras") is None
    assert super_resolution_architecture(tmp_path / "missing.keras") is None


@pytest.mark.parametrize("arch", ["sr-cnn", "sr-resnet"])
def test_tiles_meet_without_seams(loaded, arch):
    """Any tile size gives the photo the whole image gives at once, odd sizes included."""
    model = loaded[arch]
    low = _photo(4, 37, 53)
    whole = upscale(model, low, tile=1000)
    assert whole.shape == (74, 106, 3) and whole.dtype == np.uint8
    for tile in (16, 24):  # 3 x 4 and 2 x 3 tiles, none of them whole
        tiled = upscale(model, low, tile=tile)
        assert np.abs(tiled.astype(int) - whole).max() <= 1
    # Without the margin the tiles disagree where they meet: the test can fail.
    seams = upscale(model, low, tile=16, margin=0)
    assert np.abs(seams.astype(int) - whole).max() > 1


def test_the_margin_covers_the_receptive_field(loaded):
    assert context_margin(loaded["sr-cnn"]) >= 4  # 9x9 and 5x5 at 2x, bicubic's reach
    assert context_margin(loaded["sr-resnet"]) >= 15  # fourteen 3x3 at 1x


def test_upscale_file_grey_rgba_and_odd_sizes(loaded, tmp_path):
    grey = tmp_path / "grey.png"
    Image.fromarray(_photo(5, 37, 53)[..., 0]).save(grey)
    result = upscale_file(grey, loaded["sr-resnet"], tmp_path / "grey_big.png", tile=16)
    with Image.open(result["out"]) as out:
        assert (out.mode, out.size) == ("L", (106, 74))
    assert (result["size"], result["upscaled"]) == ([53, 37], [106, 74])

    rgba = np.dstack([_photo(6, 53, 37), np.full((53, 37), 128, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    default_out = upscale_file(tmp_path / "alpha.png", loaded["sr-cnn"])["out"]
    assert Path(default_out) == tmp_path / "alpha_2x.png"
    with Image.open(default_out) as out:
        assert (out.mode, out.size) == ("RGB", (74, 106))


def test_upscale_refuses_what_is_not_a_photo_or_not_an_upscaler(models, loaded, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(ImageError, match=r"bad\.png"):
        upscale_file(tmp_path / "bad.png", loaded["sr-cnn"])
    classifier = create_model("mnist-cnn", num_classes=3)
    with pytest.raises(ModelError, match="not a super-resolution network"):
        upscale_file(tmp_path / "bad.png", classifier)
    with pytest.raises(ImageError, match="uint8"):
        upscale(loaded["sr-cnn"], np.zeros((8, 8, 3), np.float32))


def test_psnr_and_ssim_against_known_values_and_scikit_image():
    metrics = pytest.importorskip("skimage.metrics")
    a = _photo(7, 48, 64)
    assert psnr(a, a) == math.inf and ssim(a, a) == pytest.approx(1.0)
    # Off by one everywhere: MSE 1, PSNR = 20 log10(255).
    assert psnr(a.astype(int), a.astype(int) + 1) == pytest.approx(48.1308036, abs=1e-6)
    noisy = np.clip(a + np.random.default_rng(0).normal(0, 12, a.shape), 0, 255).astype(np.uint8)
    assert psnr(a, noisy) == pytest.approx(metrics.peak_signal_noise_ratio(a, noisy), abs=1e-9)
    reference = metrics.structural_similarity(
        a,
        noisy,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=255,
        channel_axis=-1,
    )
    assert ssim(a, noisy) == pytest.approx(reference, abs=1e-9)
    assert ssim(a[..., 0], noisy[..., 0]) < ssim(a[..., 0], a[..., 0])
    with pytest.raises(ValueError, match="shape"):
        psnr(a, a[:10])
    with pytest.raises(ValueError, match="11 pixels"):
        ssim(a[:8, :8], a[:8, :8])


def test_evaluate_reports_psnr_and_ssim_against_bicubic(models, photos, tmp_path):
    report = tmp_path / "report"
    result = evaluate_super_resolution(models["sr-resnet"], photos, report=report)
    assert result["arch"] == "sr-resnet"
    assert [row["photo"] for row in result["photos"]] == ["a.png", "b.jpg"]
    image = np.asarray(Image.open(photos / "a.png"))
    high, low = downscale(image)
    assert result["photos"][0]["bicubic_psnr"] == pytest.approx(psnr(high, bicubic_upscale(low)))
    assert result["photos"][0]["size"] == [120, 96]
    for key in ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim"):
        values = [row[key] for row in result["photos"]]
        assert result["mean"][key] == pytest.approx(np.mean(values))
    assert json.loads((report / "metrics.json").read_text())["mean"] == result["mean"]
    with pytest.raises(DatasetError, match="no photos"):
        evaluate_super_resolution(models["sr-resnet"], tmp_path / "report")


def test_evaluate_and_upscale_from_the_command_line(models, photos, tmp_path, capsys):
    assert main(["evaluate", str(models["sr-cnn"]), str(photos)]) == 0
    out = capsys.readouterr().out
    assert "| photo | size | bicubic PSNR | sr-cnn PSNR |" in out
    assert "| a.png | 120 x 96 |" in out and "| mean |" in out
    Image.fromarray(_photo(8, 21, 30)).save(tmp_path / "small.png")
    argv = ["upscale", str(tmp_path / "small.png"), "--model", str(models["sr-resnet"])]
    assert main([*argv, "--out", str(tmp_path / "big.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["upscaled"] == [60, 42]
    with Image.open(tmp_path / "big.png") as big:
        assert big.size == (60, 42)


def test_train_and_evaluate_refuse_options_that_do_not_apply(models, photos, capsys):
    assert main(["train", str(photos), "--arch", "sr-cnn", "--augment", "flip"]) == 1
    assert "--augment apply to classifiers only" in capsys.readouterr().err
    assert main(["evaluate", str(models["sr-cnn"])]) == 1
    assert "give the folder of photos" in capsys.readouterr().err


def test_the_sample_photo_folders_keep_test_photos_out_of_training(tmp_path):
    assert not {name for _, name in TRAIN_PHOTOS} & {name for _, name in TEST_PHOTOS}
    written = write_photo_folders(tmp_path)
    assert written["missing"] == []  # scikit-image, scikit-learn and matplotlib ship them
    assert sorted(p.name for p in (tmp_path / "test").iterdir()) == sorted(written["test"])
    assert "chelsea.png" in written["test"] and "astronaut.png" in written["train"]
