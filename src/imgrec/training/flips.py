"""Alternating flips: each training image mirrored every other epoch, not at random.

airbench's derandomised horizontal flip (Keller Jordan, "94% on CIFAR-10 in 3.29
Seconds on a Single GPU", arXiv 2404.00498, section 3.6): in the first epoch each image
is mirrored or not at random, and from then on every epoch mirrors exactly the images
the epoch before did not. With random flips an image is seen the same way round in two
epochs running half the time; alternating, every two epochs show each image both ways.

The flips happen here, as the batches are cut, so a model trained this way has no
``RandomFlip`` layer: ``train_chapter_network`` leaves ``flip`` out of its
augmentation layer and the ``TrainingRecord`` says ``alternate_flips``.
"""

from __future__ import annotations

import keras
import numpy as np

from imgrec.models.tta import mirror
from imgrec.training.record import steps_per_epoch


class AlternatingFlips(keras.utils.PyDataset):
    """Shuffled batches of ``images`` and ``targets``, each image mirrored every other epoch.

    Args:
        images: N x H x W x C training images.
        targets: their labels (N) or one-hot targets (N x classes).
        batch_size: images per batch (the last batch of an epoch may be smaller).
        seed: draws the first epoch's flips and every epoch's order.
        first_epoch: the epoch the fit starts at (a resumed run's ``epochs_done``):
            the flips continue as if the run had never stopped.
        sample_weights: one weight per image (class weights), or None.
    """

    def __init__(
        self,
        images: np.ndarray,
        targets: np.ndarray,
        batch_size: int,
        *,
        seed: int = 0,
        first_epoch: int = 0,
        sample_weights: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        if len(images) != len(targets) or batch_size < 1:
            raise ValueError(
                f"AlternatingFlips: {len(images)} images, {len(targets)} targets, "
                f"batch size {batch_size}"
            )
        self.images, self.targets, self.batch_size = images, targets, batch_size
        self.sample_weights = sample_weights
        self.seed = seed
        self.first_flips = np.random.default_rng([seed, 0]).random(len(images)) < 0.5
        self.epoch = first_epoch
        self.order = self._order()

    def __len__(self) -> int:
        return steps_per_epoch(len(self.images), self.batch_size)

    def __getitem__(self, index: int) -> tuple[np.ndarray, ...]:
        chosen = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        batch = np.array(self.images[chosen], dtype=np.float32)
        mirrored = self.flipped(chosen)
        batch[mirrored] = mirror(batch[mirrored])
        if self.sample_weights is None:
            return batch, self.targets[chosen]
        return batch, self.targets[chosen], self.sample_weights[chosen]

    def flipped(self, chosen: np.ndarray) -> np.ndarray:
        """Whether each image of ``chosen`` is mirrored in this epoch."""
        return self.first_flips[chosen] ^ bool(self.epoch % 2)

    def on_epoch_end(self) -> None:
        self.epoch += 1
        self.order = self._order()

    def _order(self) -> np.ndarray:
        return np.random.default_rng([self.seed, 1, self.epoch]).permutation(len(self.images))
