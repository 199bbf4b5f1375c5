"""The AC-GAN of the Keras.js demo: a generator of MNIST digits of a chosen class.

An auxiliary-classifier GAN (Odena et al., 2017) in the shape of Keras's own AC-GAN
example, made small enough to train on two CPU cores:

- the **generator** takes a 100-d noise vector drawn uniformly from [-1, 1] and a
  class (0-9); the class is embedded as 100 numbers and multiplied into the noise
  (Keras's example does the same), then a dense layer and two 4 x 4 transposed
  convolutions, with batch normalisation, draw a 28 x 28 digit;
- the **discriminator** (two strided convolutions, leaky ReLU, dropout) answers
  twice: one logit "real or generated" and ten logits "which digit".

Both are plain functional ``keras.Model`` made of Keras's own layers, so the saved
generator loads through imgrec's safe loader like any other model. Both speak
pixels 0-255, as the chapter's networks do: the generator ends with a rescaling of
its ``tanh`` output, the discriminator starts with the inverse. The generator's
output can therefore go straight into the chapter's ``mnist-cnn``.

What trains them (the custom training step) is :mod:`imgrec.training.acgan`; this
module builds them and draws digits from a trained generator.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from imgrec.core.errors import ImgrecError, ModelError
from imgrec.core.storage import write_bytes_atomic

ARCHITECTURE = "acgan"
LATENT_DIM = 100
NUM_CLASSES = 10
IMAGE_SHAPE = (28, 28, 1)
NOISE_INPUT = "noise"
CLASS_INPUT = "class"
# The command that makes a generator (named where one is missing).
# Images generated per forward pass.
BATCH = 256
TRAIN_COMMAND = "imgrec train mnist --arch acgan --out gan.keras"


def build_generator(
    latent_dim: int = LATENT_DIM, num_classes: int = NUM_CLASSES, width: int = 32, seed: int = 0
) -> keras.Model:
    """The class-conditioned generator: ``[noise (N, latent_dim), class (N, 1)]`` -> pixels.

    Args:
        latent_dim: the size of the noise vector.
        num_classes: how many classes the generator knows.
        width: filters of the last hidden layer (the one before it has twice as many).
        seed: seeds the initial weights.

    Returns:
        A functional model whose output is ``(N, 28, 28, 1)`` float pixels 0-255.
    """
    init = keras.initializers.GlorotNormal(seed=seed)
    noise = keras.Input((latent_dim,), name=NOISE_INPUT)
    label = keras.Input((1,), dtype="int32", name=CLASS_INPUT)
    embedded = layers.Embedding(
        num_classes, latent_dim, embeddings_initializer=keras.initializers.GlorotNormal(seed + 1)
    )(label)
    hidden = layers.Multiply()([noise, layers.Flatten()(embedded)])
    hidden = layers.Dense(7 * 7 * 2 * width, use_bias=False, kernel_initializer=init)(hidden)
    hidden = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(hidden))
    hidden = layers.Reshape((7, 7, 2 * width))(hidden)
    hidden = layers.Conv2DTranspose(
        width, 4, strides=2, padding="same", use_bias=False, kernel_initializer=init
    )(hidden)
    hidden = layers.ReLU()(layers.BatchNormalization(momentum=0.9)(hidden))
    image = layers.Conv2DTranspose(
        1, 4, strides=2, padding="same", activation="tanh", kernel_initializer=init
    )(hidden)
    pixels = layers.Rescaling(127.5, offset=127.5, name="pixels")(image)
    return keras.Model([noise, label], pixels, name="acgan_generator")


def build_discriminator(
    num_classes: int = NUM_CLASSES, width: int = 32, seed: int = 0
) -> keras.Model:
    """The discriminator: pixels 0-255 -> ``[real-or-fake logit (N, 1), class logits (N, C)]``.

    Args:
        num_classes: how many classes the auxiliary head tells apart.
        width: filters of the first convolution (the second has twice as many).
        seed: seeds the initial weights and the dropout.
    """
    init = keras.initializers.GlorotUniform(seed=seed)
    image = keras.Input(IMAGE_SHAPE, name="image")
    hidden = layers.Rescaling(1 / 127.5, offset=-1.0)(image)
    for i, filters in enumerate((width, 2 * width)):
        hidden = layers.Conv2D(filters, 3, strides=2, padding="same", kernel_initializer=init)(
            hidden
        )
        hidden = layers.LeakyReLU(0.2)(hidden)
        hidden = layers.Dropout(0.3, seed=seed + i)(hidden)
    hidden = layers.Flatten()(hidden)
    real = layers.Dense(1, name="real", kernel_initializer=init)(hidden)
    aux = layers.Dense(num_classes, name="digit", kernel_initializer=init)(hidden)
    return keras.Model(image, [real, aux], name="acgan_discriminator")


def is_generator(model: keras.Model) -> bool:
    """Whether ``model`` has the generator's inputs (noise, class) and an image output."""
    inputs = getattr(model, "inputs", None) or []
    names = [getattr(tensor, "name", "") for tensor in inputs]
    return len(inputs) == 2 and NOISE_INPUT in names[0] and CLASS_INPUT in names[1]


def latent_size(generator: keras.Model) -> int:
    """The length of the generator's noise vector."""
    return int(generator.inputs[0].shape[-1])


def class_count(generator: keras.Model) -> int:
    """How many classes the generator knows (its embedding's rows)."""
    for layer in generator.layers:
        if isinstance(layer, layers.Embedding):
            return int(layer.input_dim)
    raise ModelError(f"model {generator.name!r} is not an AC-GAN generator (no class embedding)")


def draw_noise(n: int, latent_dim: int = LATENT_DIM, seed: int | None = 0) -> np.ndarray:
    """``n`` noise vectors drawn uniformly from [-1, 1], as the generator was trained on.

    Args:
        n: how many vectors.
        latent_dim: the length of each.
        seed: the same seed draws the same vectors (None: fresh ones).
    """
    rng = np.random.default_rng(seed)
    return rng.uniform(-1.0, 1.0, size=(n, latent_dim)).astype(np.float32)


def generate(
    generator: keras.Model,
    digit: int | Sequence[int],
    n: int | None = None,
    seed: int | None = 0,
    noise: np.ndarray | None = None,
) -> np.ndarray:
    """Digits of the chosen class(es), as uint8 images ``(n, 28, 28, 1)``.

    Args:
        generator: a trained (or built) AC-GAN generator.
        digit: one class for all images, or one class per image.
        n: how many images (default: one per class given, or 1).
        seed: seeds the noise; the same seed, class and generator give the same images.
        noise: the noise vectors themselves (``(n, latent)``, values in [-1, 1]);
            ``seed`` is then not used.

    Raises:
        ModelError: a class outside the generator's classes, a noise of the wrong
            shape or outside [-1, 1], or ``n`` below 1.
    """
    labels = np.atleast_1d(np.asarray(digit))
    latent, classes = latent_size(generator), class_count(generator)
    if noise is not None:
        noise = np.asarray(noise, dtype=np.float32)
        if noise.ndim == 1:
            noise = noise[None]
        if noise.ndim != 2 or noise.shape[1] != latent:
            raise ModelError(f"noise of shape {noise.shape}: expected (n, {latent})")
        if not np.all(np.isfinite(noise)) or np.abs(noise).max() > 1:
            raise ModelError("noise values must lie in [-1, 1]")
        n = n or len(noise)
    n = n or len(labels)
    if n < 1:
        raise ModelError(f"n={n}: at least one image")
    if labels.dtype.kind not in "iu" or labels.min() < 0 or labels.max() >= classes:
        raise ModelError(f"class {labels.tolist()}: expected whole numbers 0 to {classes - 1}")
    if len(labels) == 1:
        labels = np.repeat(labels, n)
    if len(labels) != n or (noise is not None and len(noise) != n):
        raise ModelError(f"{len(labels)} classes for {n} images: give one class or one per image")
    noise = draw_noise(n, latent, seed) if noise is None else noise
    labels = labels.reshape(-1, 1).astype(np.int32)
    # Called directly, not through predict(): nothing to trace, so one digit for the page
    # takes milliseconds from the first request on.
    pixels = [
        keras.ops.convert_to_numpy(
            generator([noise[start : start + BATCH], labels[start : start + BATCH]], training=False)
        )
        for start in range(0, n, BATCH)
    ]
    return np.clip(np.rint(np.concatenate(pixels)), 0, 255).astype(np.uint8)


def tile(images: np.ndarray, columns: int | None = None, gap: int = 2) -> np.ndarray:
    """uint8 images ``(n, h, w, 1)`` side by side in rows of ``columns``, ``gap`` pixels apart.

    Args:
        images: the images (at least one).
        columns: images per row (default: a near-square grid).
        gap: black pixels between images.

    Returns:
        One uint8 image ``(H, W)``.
    """
    n, height, width = images.shape[:3]
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    grid = np.zeros(
        (rows * height + (rows - 1) * gap, columns * width + (columns - 1) * gap), np.uint8
    )
    for i, image in enumerate(images):
        top, left = (i // columns) * (height + gap), (i % columns) * (width + gap)
        grid[top : top + height, left : left + width] = image[..., 0]
    return grid


def png_bytes(pixels: np.ndarray) -> bytes:
    """A grey uint8 image ``(h, w)`` or ``(h, w, 1)`` as PNG bytes."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.asarray(pixels, np.uint8).reshape(pixels.shape[:2])).save(buffer, "PNG")
    return buffer.getvalue()


def save_images(
    images: np.ndarray, out: str | os.PathLike, columns: int | None = None
) -> list[Path]:
    """Write generated images: one grid PNG, or one PNG per image into a folder.

    Args:
        images: uint8 images ``(n, h, w, 1)``.
        out: a ``.png`` file for the grid, or a folder (an existing one, or a path
            ending in ``/``) for ``0.png``, ``1.png``, ...
        columns: images per row of the grid.

    Returns:
        The files written.

    Raises:
        ImgrecError: a file name that does not end in ``.png``.
    """
    target = Path(out)
    if str(out).endswith(("/", os.sep)) or target.is_dir():
        target.mkdir(parents=True, exist_ok=True)
        width = len(str(len(images) - 1))
        written = []
        for i, image in enumerate(images):
            path = target / f"{i:0{width}d}.png"
            write_bytes_atomic(path, png_bytes(image))
            written.append(path)
        return written
    if target.suffix.lower() != ".png":
        raise ImgrecError(f"{out}: write the grid to a .png file, or images to a folder (DIR/)")
    write_bytes_atomic(target, png_bytes(tile(images, columns)))
    return [target]


def load_generator(model: str | os.PathLike | keras.Model) -> keras.Model:
    """An AC-GAN generator: a loaded one as it is, or a ``.keras`` file loaded safely.

    Raises:
        ModelError: a missing or unsafe file, or a model that is not an AC-GAN
            generator (it names the command that makes one).
    """
    from imgrec.models.loading import load_keras_file

    if not isinstance(model, keras.Model):
        if not str(model).endswith(".keras"):
            raise ModelError(f"{model}: expected an AC-GAN generator's .keras file")
        model = load_keras_file(model)
    if not is_generator(model):
        raise ModelError(
            f"{model.name!r} is not an AC-GAN generator (inputs noise and class); "
            f"make one with: {TRAIN_COMMAND}"
        )
    return model


def class_names(generator: keras.Model) -> tuple[str, ...]:
    """The generator's class names: from its imgrec metadata, else ``0``, ``1``, ..."""
    from imgrec.models.metadata import model_info

    try:
        return tuple(model_info(generator).class_names)
    except ModelError:
        return tuple(str(i) for i in range(class_count(generator)))


def generate_files(
    model: str | os.PathLike | keras.Model,
    digit: int | None,
    n: int = 16,
    *,
    out: str | os.PathLike,
    seed: int | None = 0,
    columns: int | None = None,
) -> dict[str, Any]:
    """Generate ``n`` images of class ``digit`` and write them (``imgrec generate``).

    Args:
        model: a generator's ``.keras`` file, or a loaded generator.
        digit: the class; None takes the classes in turn (0, 1, ..., 9, 0, ...).
        n: how many images.
        out: a ``.png`` for one grid, or a folder (``DIR/``) for one PNG per image.
        seed: seeds the noise (the same seed draws the same images).
        columns: images per row of the grid (default: near-square).

    Returns:
        ``files`` (paths written), ``classes`` (the class of each image), ``seed``.

    Raises:
        ModelError: not a generator, or a class it does not know.
        ImgrecError: ``out`` is neither a ``.png`` nor a folder.
    """
    generator = load_generator(model)
    if n < 1:
        raise ModelError(f"n={n}: at least one image")
    labels = np.arange(n) % class_count(generator) if digit is None else np.full(n, digit)
    files = save_images(generate(generator, labels, seed=seed), out, columns=columns)
    names = class_names(generator)
    return {"files": [str(f) for f in files], "classes": [names[i] for i in labels], "seed": seed}
