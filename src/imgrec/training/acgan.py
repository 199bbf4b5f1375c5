"""Train the AC-GAN (:mod:`imgrec.models.acgan`): a custom training step under ``fit``.

One step (as in TensorFlow's DCGAN tutorial, with Keras's AC-GAN losses): draw a
batch of noise and classes, generate, let the discriminator judge the real and the
generated digits, then update both networks from that one pass:

- the discriminator: real digits are "real" with one-sided label smoothing (0.9),
  generated ones "fake", and its auxiliary head names the class of both;
- the generator: its digits should pass for real and be named as the class asked.

Adam with learning rate 2e-4 and beta_1 0.5 for both (Radford et al.), batch
normalisation in the generator, dropout in the discriminator: the usual
stabilisers. The step is written for the TensorFlow backend (``tf.GradientTape``),
imgrec's default; on another backend ``fit`` refuses with a one-line error. The model
files it writes hold only the generator, a plain functional model of Keras's own
layers, which loads on any backend (``imgrec generate`` and the page need nothing more).

``train_acgan`` is what ``imgrec train mnist --arch acgan`` runs: it saves the
generator (with its training record) after every epoch, atomically, so a killed run
keeps the last finished epoch, and writes a grid of one row per class beside it.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import ops

from imgrec.core.errors import ImgrecError
from imgrec.core.storage import write_bytes_atomic
from imgrec.datasets import Dataset
from imgrec.models import acgan
from imgrec.models.loading import save_model
from imgrec.models.metadata import ModelInfo, attach_info
from imgrec.models.preprocessing import Preprocessing
from imgrec.training.data import data_report, load_training_data
from imgrec.training.record import DatasetRef, SplitSettings, TrainingRecord

DEFAULT_EPOCHS = 20
DEFAULT_BATCH_SIZE = 64
LEARNING_RATE = 2e-4
BETA_1 = 0.5
REAL_LABEL = 0.9  # one-sided label smoothing
# What each step reports besides the two losses: how often the discriminator calls a
# real digit real, names a real digit's class, and names the class a generated digit
# was asked to be.
ACCURACIES = ("d_real_accuracy", "d_class_accuracy", "g_class_accuracy")


class ACGANTrainer(keras.Model):
    """Both networks of the AC-GAN, trained together by ``fit`` on (pixels, classes).

    Never saved: ``train_acgan`` saves the generator alone.

    Args:
        generator: from :func:`imgrec.models.acgan.build_generator`.
        discriminator: from :func:`imgrec.models.acgan.build_discriminator`.
        seed: seeds the noise and classes drawn at each step.
    """

    def __init__(self, generator: keras.Model, discriminator: keras.Model, seed: int = 0) -> None:
        super().__init__(name="acgan_trainer")
        self.generator = generator
        self.discriminator = discriminator
        self.latent_dim = acgan.latent_size(generator)
        self.num_classes = acgan.class_count(generator)
        self.noise_seed = keras.random.SeedGenerator(seed)
        self.d_optimizer = keras.optimizers.Adam(LEARNING_RATE, beta_1=BETA_1)
        self.g_optimizer = keras.optimizers.Adam(LEARNING_RATE, beta_1=BETA_1)
        self.trackers = {
            name: keras.metrics.Mean(name=name)
            for name in (
                "d_loss",
                "g_loss",
                "d_real_accuracy",
                "d_class_accuracy",
                "g_class_accuracy",
            )
        }

    def build_optimizers(self) -> None:
        """Create the optimizers' variables before training (not inside a traced step)."""
        self.d_optimizer.build(self.discriminator.trainable_variables)
        self.g_optimizer.build(self.generator.trainable_variables)

    @property
    def metrics(self) -> list[keras.metrics.Metric]:
        return list(self.trackers.values())

    def call(self, inputs: Any, training: bool = False) -> Any:
        return self.generator(inputs, training=training)

    def _draw(self, batch: Any, seed: Any) -> tuple[Any, Any]:
        noise = keras.random.uniform((batch, self.latent_dim), -1.0, 1.0, seed=seed)
        labels = keras.random.randint((batch, 1), 0, self.num_classes, seed=seed, dtype="int32")
        return noise, labels

    def _gan_losses(
        self, real_out: Any, fake_out: Any, labels: Any, fake_labels: Any
    ) -> tuple[Any, Any, dict[str, Any]]:
        """The discriminator's and the generator's losses, and the step's accuracies."""
        (real_logit, real_aux), (fake_logit, fake_aux) = real_out, fake_out
        bce = keras.losses.binary_crossentropy
        sce = keras.losses.sparse_categorical_crossentropy
        d_loss = (
            ops.mean(bce(ops.full_like(real_logit, REAL_LABEL), real_logit, from_logits=True))
            + ops.mean(bce(ops.zeros_like(fake_logit), fake_logit, from_logits=True))
            + ops.mean(sce(labels, real_aux, from_logits=True))
            + ops.mean(sce(fake_labels, fake_aux, from_logits=True))
        )
        g_loss = ops.mean(bce(ops.ones_like(fake_logit), fake_logit, from_logits=True)) + ops.mean(
            sce(fake_labels, fake_aux, from_logits=True)
        )
        labels = ops.reshape(ops.cast(labels, "int32"), (-1,))
        fake_labels = ops.reshape(fake_labels, (-1,))
        accuracies = {
            "d_real_accuracy": ops.mean(ops.cast(real_logit > 0, "float32")),
            "d_class_accuracy": _accuracy(labels, real_aux),
            "g_class_accuracy": _accuracy(fake_labels, fake_aux),
        }
        return d_loss, g_loss, accuracies

    def _report(self, d_loss: Any, g_loss: Any, accuracies: dict[str, Any]) -> dict[str, Any]:
        values = {"d_loss": d_loss, "g_loss": g_loss, **accuracies}
        for name, value in values.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def train_step(self, data: Any) -> dict[str, Any]:
        backend = keras.backend.backend()
        if backend == "tensorflow":
            return self._tensorflow_step(data)
        raise ImgrecError(
            f"the AC-GAN's training step is written for the TensorFlow backend, not {backend!r}"
        )

    def _tensorflow_step(self, data: Any) -> dict[str, Any]:
        import tensorflow as tf

        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        noise, fake_labels = self._draw(ops.shape(images)[0], self.noise_seed)
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            fakes = self.generator([noise, fake_labels], training=True)
            # One pass over real and generated digits together (no batch statistics in
            # the discriminator, so this is the same as two passes, and faster).
            real, aux = self.discriminator(ops.concatenate([images, fakes]), training=True)
            batch = ops.shape(images)[0]
            real_out, fake_out = (real[:batch], aux[:batch]), (real[batch:], aux[batch:])
            d_loss, g_loss, accuracies = self._gan_losses(real_out, fake_out, labels, fake_labels)
        d_vars = self.discriminator.trainable_variables
        g_vars = self.generator.trainable_variables
        self.d_optimizer.apply_gradients(zip(d_tape.gradient(d_loss, d_vars), d_vars, strict=True))
        self.g_optimizer.apply_gradients(zip(g_tape.gradient(g_loss, g_vars), g_vars, strict=True))
        return self._report(d_loss, g_loss, accuracies)


def _accuracy(labels: Any, logits: Any) -> Any:
    return ops.mean(ops.cast(ops.equal(ops.argmax(logits, axis=-1), labels), "float32"))


def train_acgan(
    dataset: str | os.PathLike | Dataset = "mnist",
    *,
    out: str | os.PathLike = "gan.keras",
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    limit_per_class: int | None = None,
    verbose: int = 1,
    callbacks: list[keras.callbacks.Callback] | None = None,
) -> dict[str, Any]:
    """Train the AC-GAN on ``dataset`` (brought to 28 x 28 grey) and save its generator.

    Args:
        dataset: a data set name or path (``mnist``), or a loaded one; every image
            that is not a test image trains (no validation split: nothing is chosen
            on it).
        out: the generator's ``.keras`` file, saved after every epoch; beside it
            ``<out>.history.json`` and ``<out>.samples.png`` (one row per class).
        epochs: epochs to train (default 20).
        batch_size: images per step (default 64).
        lr: both optimizers' learning rate (default 2e-4).
        seed: seeds the weights, the shuffling and the noise (default 0).
        limit_per_class: keep at most this many training images per class.
        verbose: 0 silent, 1 Keras's progress bar, 2 one line per epoch.
        callbacks: more Keras callbacks for ``fit``.

    Returns:
        Plain data: ``model``, ``history``, ``samples`` (paths; ``model`` None if no
        epoch finished), ``epochs_done``, ``epochs_asked``, ``interrupted``,
        ``seconds``, ``history_last`` (the last epoch's losses and accuracies), the
        data set's summary and the files skipped.

    Raises:
        DatasetError: a bad data set; ModelError: ``out`` does not end in ``.keras``.
    """
    out = Path(out)
    if out.suffix != ".keras":
        raise ImgrecError(f"{out}: a model file must end in .keras")
    seed = 0 if seed is None else seed
    split = SplitSettings(val_split=0.0, seed=seed, limit_per_class=limit_per_class)
    data = load_training_data(
        dataset, split, image_size=acgan.IMAGE_SHAPE[:2], channels=acgan.IMAGE_SHAPE[2]
    )
    trainer = _new_trainer(len(data.class_names), seed, lr)
    generator = trainer.generator
    record = TrainingRecord(
        architecture=acgan.ARCHITECTURE,
        dataset=DatasetRef.of(data),
        epochs_asked=epochs or DEFAULT_EPOCHS,
        batch_size=batch_size or DEFAULT_BATCH_SIZE,
        split=split,
    )
    saver = _EpochSaver(generator, record, out, tuple(data.class_names), seed)
    started = time.monotonic()
    interrupted = False
    try:
        trainer.fit(
            data.train.images.astype(np.float32),
            data.train.labels.astype(np.int32).reshape(-1, 1),
            batch_size=record.batch_size,
            epochs=record.epochs_asked,
            shuffle=True,
            verbose=verbose,
            callbacks=[saver, *(callbacks or [])],
        )
    except KeyboardInterrupt:
        interrupted = True
    saved = saver.record.epochs_done > 0
    return {
        "model": str(out) if saved else None,
        "history": str(saver.history_path) if saved else None,
        "samples": str(saver.samples_path) if saved else None,
        "epochs_done": saver.record.epochs_done,
        "epochs_asked": record.epochs_asked,
        "interrupted": interrupted,
        "seconds": time.monotonic() - started,
        "history_last": {k: v[-1] for k, v in saver.record.history.items()},
    } | data_report(data)


def _new_trainer(classes: int, seed: int, lr: float | None) -> ACGANTrainer:
    """Both networks, seeded, with their optimizers built, ready for ``fit``."""
    keras.utils.set_random_seed(seed)
    generator = acgan.build_generator(num_classes=classes, seed=seed)
    trainer = ACGANTrainer(generator, acgan.build_discriminator(classes, seed=seed), seed=seed)
    if lr is not None:
        trainer.d_optimizer.learning_rate = trainer.g_optimizer.learning_rate = lr
    # XLA measured slower here (0.9 s against 0.35 s a step on two busy cores).
    trainer.compile(jit_compile=False)
    trainer.build_optimizers()
    return trainer


class _EpochSaver(keras.callbacks.Callback):
    """After each epoch: the generator with its record, the history, a sample grid."""

    def __init__(
        self,
        generator: keras.Model,
        record: TrainingRecord,
        out: Path,
        class_names: tuple[str, ...],
        seed: int,
    ) -> None:
        super().__init__()
        self.generator, self.record, self.out, self.class_names = (
            generator,
            record,
            out,
            class_names,
        )
        self.history_path = out.with_suffix(".history.json")
        self.samples_path = out.with_suffix(".samples.png")
        self.seed = seed

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        # Ctrl-C during the save must not leave a half-written file: the writes are
        # atomic, and SIGINT waits until they are done.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
        try:
            self.record = self.record.after_epoch(logs or {})
            info = ModelInfo(
                name=self.out.name,
                class_names=self.class_names,
                preprocessing=Preprocessing(size=acgan.IMAGE_SHAPE[:2], name="pixels:0-255"),
                weights=f"trained by imgrec on {self.record.dataset.name}",
                training=self.record.to_json(),
            )
            save_model(attach_info(self.generator, info), self.out)
            write_bytes_atomic(
                self.history_path, json.dumps(self.record.history, indent=1).encode()
            )
            classes = len(self.class_names)
            labels = np.repeat(np.arange(classes), 10)
            images = acgan.generate(self.generator, labels, seed=self.seed)
            acgan.save_images(images, self.samples_path, columns=10)
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
