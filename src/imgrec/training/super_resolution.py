"""Train and measure the 2x super-resolution networks on a folder of photos.

``imgrec train PHOTOS --arch sr-cnn`` (or ``sr-resnet``) lands here: PHOTOS is a
folder of photos, not of class folders. Every photo is decoded once; each training
batch is cut from them at random (a 64 x 64 crop and its 32 x 32 bicubic
downscaling, flipped and turned at random), and the network learns to give the crop
back from its downscaling (mean squared error, Adam with a cosine decay).

``evaluate_super_resolution`` measures a network on photos it has not seen: each
photo is downscaled by 2 (bicubic, as in training), upscaled back by the network and
by bicubic interpolation, and both are compared with the photo (PSNR and SSIM,
``imgrec.core.metrics``).

The photos that install with imgrec's dependencies make the two folders:
``write_photo_folders("photos")`` writes ``photos/train`` and ``photos/test``
(:data:`TRAIN_PHOTOS`, :data:`TEST_PHOTOS`: no photo in both).
"""

from __future__ import annotations

import os
import time
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from imgrec.core.errors import DatasetError, ImageError, ModelError
from imgrec.core.images import load_image, scan_images
from imgrec.core.metrics import psnr, ssim
from imgrec.core.storage import write_bytes_atomic
from imgrec.models.super_resolution import (
    DEFAULT_TILE,
    PATCH,
    SCALE,
    SR_ARCHITECTURES,
    SUPER_RESOLUTION,
    SuperResolutionArchitecture,
    check_super_resolution_model,
    upscale,
)

# The photos that install with scikit-image, scikit-learn and matplotlib: (package,
# file inside its data folder). Grey photos train too (as RGB). The two motorcycle
# views are nearly the same picture: both train, neither tests.
TRAIN_PHOTOS = (
    ("skimage", "astronaut.png"),
    ("skimage", "rocket.jpg"),
    ("skimage", "hubble_deep_field.jpg"),
    ("skimage", "ihc.png"),
    ("skimage", "motorcycle_left.png"),
    ("skimage", "motorcycle_right.png"),
    ("skimage", "retina.jpg"),
    ("skimage", "camera.png"),
    ("skimage", "brick.png"),
    ("skimage", "grass.png"),
    ("skimage", "gravel.png"),
    ("skimage", "coins.png"),
    ("skimage", "moon.png"),
    ("sklearn", "china.jpg"),
)
TEST_PHOTOS = (
    ("skimage", "chelsea.png"),
    ("skimage", "coffee.png"),
    ("sklearn", "flower.jpg"),
    ("matplotlib", "grace_hopper.jpg"),
)
_DATA_FOLDERS = {
    "skimage": ("skimage", "data"),
    "sklearn": ("sklearn.datasets", "images"),
    "matplotlib": ("matplotlib", "mpl-data/sample_data"),
}


def installed_photo(package: str, name: str) -> Path | None:
    """The file of one photo of :data:`TRAIN_PHOTOS` or :data:`TEST_PHOTOS`, if installed."""
    module, folder = _DATA_FOLDERS[package]
    try:
        path = Path(str(resources.files(module).joinpath(folder, name)))
    except ModuleNotFoundError:
        return None
    return path if path.is_file() else None


def write_photo_folders(out: str | os.PathLike) -> dict[str, list[str]]:
    """Copy the installed sample photos into ``out/train`` and ``out/test``.

    Args:
        out: the folder to make (or fill).

    Returns:
        ``{"train": [file names], "test": [...], "missing": [package/file, ...]}``.
    """
    out = Path(out)
    written: dict[str, list[str]] = {"train": [], "test": [], "missing": []}
    for split, photos in (("train", TRAIN_PHOTOS), ("test", TEST_PHOTOS)):
        (out / split).mkdir(parents=True, exist_ok=True)
        for package, name in photos:
            path = installed_photo(package, name)
            if path is None:
                written["missing"].append(f"{package}/{name}")
                continue
            write_bytes_atomic(out / split / name, path.read_bytes())
            written[split].append(name)
    return written


# --------------------------------------------------------------------------- photos


def load_photos(folder: str | os.PathLike) -> tuple[list[tuple[str, np.ndarray]], list[dict]]:
    """The photos of ``folder`` (recursively) as RGB uint8, and those skipped with why.

    Photos under 2 x ``PATCH`` pixels on a side are skipped: no training crop fits.

    Raises:
        DatasetError: not a folder, or no photo in it.
    """
    try:
        scan = scan_images(folder)
    except ImageError as err:
        raise DatasetError(f"{folder}: not a folder of photos ({err})") from err
    photos, skipped = [], [{"path": str(p), "reason": r} for p, r in scan.rejected]
    for path in scan.images:
        try:
            image = load_image(path, mode="RGB")
        except ImageError as err:
            skipped.append({"path": str(path), "reason": str(err)})
            continue
        if min(image.shape[:2]) < SCALE * PATCH:
            skipped.append({"path": str(path), "reason": "smaller than a training crop"})
            continue
        photos.append((str(path.relative_to(folder)), image))
    if not photos:
        raise DatasetError(f"{folder}: no photos to train or measure on")
    return photos, skipped


def downscale(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The photo cut to even sides, and its bicubic downscaling by 2 (antialiased)."""
    height, width = (image.shape[0] // SCALE) * SCALE, (image.shape[1] // SCALE) * SCALE
    high = np.ascontiguousarray(image[:height, :width])
    small = _resize(high, width // SCALE, height // SCALE)
    return high, small


def bicubic_upscale(image: np.ndarray) -> np.ndarray:
    """``image`` twice as large by bicubic interpolation (Pillow's), uint8."""
    return _resize(image, image.shape[1] * SCALE, image.shape[0] * SCALE)


def bilinear_upscale(image: np.ndarray) -> np.ndarray:
    """``image`` twice as large by bilinear interpolation (Pillow's), uint8."""
    return _resize(image, image.shape[1] * SCALE, image.shape[0] * SCALE, Image.Resampling.BILINEAR)


def _resize(
    image: np.ndarray,
    width: int,
    height: int,
    method: Image.Resampling = Image.Resampling.BICUBIC,
) -> np.ndarray:
    if image.shape[-1] == 1:
        out = np.asarray(Image.fromarray(image[..., 0]).resize((width, height), method))
        return out[..., np.newaxis]
    return np.asarray(Image.fromarray(image).resize((width, height), method))


class PatchSampler:
    """Random training pairs cut from photos: low-resolution crops and their originals.

    Args:
        photos: RGB uint8 photos.
        patch: the low-resolution side of a crop.
        seed: seeds the crops, flips and turns.
    """

    def __init__(self, photos: list[np.ndarray], patch: int, seed: int) -> None:
        self.pairs = [downscale(photo) for photo in photos]
        self.patch = patch
        self.rng = np.random.default_rng(seed)
        # Larger photos give more crops: draw a photo by its number of crop positions.
        positions = np.array(
            [max(1, (s.shape[0] - patch + 1) * (s.shape[1] - patch + 1)) for _, s in self.pairs],
            np.float64,
        )
        self.weights = positions / positions.sum()

    def batch(self, size: int) -> tuple[np.ndarray, np.ndarray]:
        """``size`` pairs: float32 in [0, 1], ``N x p x p x 3`` and ``N x 2p x 2p x 3``."""
        p = self.patch
        low = np.empty((size, p, p, 3), np.float32)
        high = np.empty((size, SCALE * p, SCALE * p, 3), np.float32)
        for i, index in enumerate(self.rng.choice(len(self.pairs), size, p=self.weights)):
            big, small = self.pairs[index]
            top = self.rng.integers(0, small.shape[0] - p + 1)
            left = self.rng.integers(0, small.shape[1] - p + 1)
            crop_small = small[top : top + p, left : left + p]
            crop_big = big[SCALE * top : SCALE * (top + p), SCALE * left : SCALE * (left + p)]
            turns, flip = int(self.rng.integers(4)), bool(self.rng.integers(2))
            low[i] = _orient(crop_small, turns, flip)
            high[i] = _orient(crop_big, turns, flip)
        return low / 255.0, high / 255.0


def _orient(image: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    image = np.rot90(image, turns)
    return image[:, ::-1] if flip else image


# --------------------------------------------------------------------------- training


def train_super_resolution(
    photos: str | os.PathLike,
    arch: str = "sr-cnn",
    *,
    out: str | os.PathLike | None = None,
    epochs: int | None = None,
    steps_per_epoch: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    patch: int = PATCH,
    seed: int | None = None,
    verbose: int = 1,
) -> dict[str, Any]:
    """Train a 2x super-resolution network on a folder of photos; save it to ``out``.

    Args:
        photos: a folder of photos (any layout; every image file under it).
        arch: ``"sr-cnn"`` or ``"sr-resnet"`` (``SR_ARCHITECTURES``).
        out: the ``.keras`` file (default ``model.keras``), saved after every epoch.
        epochs, steps_per_epoch, batch_size, lr: default to the architecture's recipe.
        patch: the low-resolution side of a training crop.
        seed: seeds the crops and the weights (default 0).
        verbose: 0 silent; otherwise one line per epoch (its loss and the time so far).

    Returns:
        Plain data: ``model`` (the path), ``arch``, ``photos`` (names), ``skipped``,
        ``epochs_done``, ``steps``, ``final_loss``, ``seconds``.

    Raises:
        ModelError: ``arch`` is not a super-resolution architecture.
        DatasetError: no photos in ``photos``.
    """
    import keras

    recipe = _recipe(arch)
    seed = 0 if seed is None else seed
    epochs = epochs or recipe.epochs
    steps = steps_per_epoch or recipe.steps_per_epoch
    batch_size = batch_size or recipe.batch_size
    lr = lr or recipe.learning_rate
    out = Path(out if out is not None else "model.keras")
    if out.suffix != ".keras":
        raise ModelError(f"{out}: a model file must end in .keras")
    loaded, skipped = load_photos(photos)
    sampler = PatchSampler([image for _, image in loaded], patch, seed)
    keras.utils.set_random_seed(seed)
    model = recipe.build(channels=3)
    schedule = keras.optimizers.schedules.CosineDecay(lr, epochs * steps, alpha=0.1)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="mse")
    record = {
        "kind": SUPER_RESOLUTION,
        "architecture": recipe.name,
        "scale": SCALE,
        "patch": patch,
        "dataset": {"name": Path(photos).name, "source": str(photos)},
        "photos": [name for name, _ in loaded],
        "epochs": epochs,
        "steps_per_epoch": steps,
        "batch_size": batch_size,
        "learning_rate": lr,
        "seed": seed,
    }
    started = time.perf_counter()
    history = _fit(model, sampler, record, out, verbose, photos)
    return {
        "model": str(out),
        "arch": recipe.name,
        "photos": record["photos"],
        "skipped": skipped,
        "epochs_done": epochs,
        "steps": epochs * steps,
        "final_loss": history[-1],
        "seconds": round(time.perf_counter() - started, 1),
    }


def _fit(
    model: Any, sampler: PatchSampler, record: dict, out: Path, verbose: int, photos: Any
) -> list[float]:
    """Fit epoch by epoch on fresh random crops; save the model after each epoch."""
    from imgrec.models.loading import save_model

    epochs, steps, batch_size = record["epochs"], record["steps_per_epoch"], record["batch_size"]
    started = time.perf_counter()
    history: list[float] = []
    for epoch in range(epochs):
        batches = [sampler.batch(batch_size) for _ in range(steps)]
        low = np.concatenate([b[0] for b in batches])
        high = np.concatenate([b[1] for b in batches])
        fit = model.fit(
            low, high, batch_size=batch_size, epochs=epoch + 1, initial_epoch=epoch,
            shuffle=False, verbose=0,
        )  # fmt: skip
        history.append(float(fit.history["loss"][-1]))
        seconds = time.perf_counter() - started
        record |= {"epochs_done": epoch + 1, "history": {"loss": list(history)}}
        record["seconds"] = round(seconds, 1)
        _attach(model, _recipe(record["architecture"]), record, photos)
        save_model(model, out)
        if verbose:
            print(f"epoch {epoch + 1}/{epochs}: loss {history[-1]:.6f} ({seconds:.0f} s)")
    return history


def _recipe(arch: str) -> SuperResolutionArchitecture:
    from imgrec.models.registry import get_model_entry

    entry = get_model_entry(arch)
    if entry.super_resolution is None:
        raise ModelError(
            f"{entry.name} is not a super-resolution network; those are "
            f"{', '.join(SR_ARCHITECTURES)}"
        )
    return entry.super_resolution


def _attach(model: Any, recipe: SuperResolutionArchitecture, record: dict, photos: Any) -> None:
    from imgrec.models.metadata import ModelInfo, attach_info
    from imgrec.models.preprocessing import Preprocessing

    info = ModelInfo(
        name=recipe.name,
        class_names=(),
        preprocessing=Preprocessing(size=(PATCH, PATCH), scale=1 / 255, name=SUPER_RESOLUTION),
        weights=f"trained by imgrec on {photos}",
        training=dict(record),
    )
    attach_info(model, info)


# --------------------------------------------------------------------------- evaluation


def evaluate_super_resolution(
    model: str | os.PathLike | Any,
    photos: str | os.PathLike,
    *,
    tile: int = DEFAULT_TILE,
    report: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """PSNR and SSIM of a network's 2x upscaling against bicubic's, photo by photo.

    Each photo (cut to even sides) is downscaled by 2 with bicubic interpolation, then
    upscaled back by the network and by bicubic interpolation; both are compared with
    the photo on RGB pixels (0-255): PSNR, and SSIM (Gaussian window, averaged over the
    colour channels).

    Args:
        model: a super-resolution ``.keras`` file, or a loaded model.
        photos: a folder of photos the network did not train on.
        tile: the tile side for ``upscale``.
        report: a folder to write ``metrics.json`` into, or None.

    Returns:
        ``{"model", "arch", "photos": [{"photo", "size", "psnr", "ssim",
        "bicubic_psnr", "bicubic_ssim"}], "mean": {the same four}, "skipped"}``.

    Raises:
        ModelError: not a super-resolution network.
        DatasetError: no photos in ``photos``.
    """
    from imgrec.models.loading import load_model

    name = str(model) if isinstance(model, str | os.PathLike) else model.name
    network = load_model(model) if isinstance(model, str | os.PathLike) else model
    check_super_resolution_model(network, name)
    loaded, skipped = load_photos(photos)
    rows = []
    for photo, image in loaded:
        high, small = downscale(image)
        sharp, smooth = upscale(network, small, tile=tile), bicubic_upscale(small)
        rows.append(
            {
                "photo": photo,
                "size": [int(high.shape[1]), int(high.shape[0])],
                "psnr": psnr(high, sharp),
                "ssim": ssim(high, sharp),
                "bicubic_psnr": psnr(high, smooth),
                "bicubic_ssim": ssim(high, smooth),
            }
        )
    keys = ("psnr", "ssim", "bicubic_psnr", "bicubic_ssim")
    result = {
        "model": name,
        "arch": _architecture_of(network),
        "photos": rows,
        "mean": {key: float(np.mean([row[key] for row in rows])) for key in keys},
        "skipped": skipped,
    }
    if report is not None:
        import json

        Path(report).mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(
            Path(report) / "metrics.json", json.dumps(result, indent=2).encode("utf-8")
        )
    return result


def _architecture_of(model: Any) -> str | None:
    from imgrec.models.metadata import model_info

    try:
        training = model_info(model).training or {}
    except ModelError:
        return None
    return training.get("architecture")
