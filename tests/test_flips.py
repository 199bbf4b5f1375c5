"""Alternating flips: every image once each way round in every two epochs, in any order."""

import itertools

import numpy as np
import pytest

from imgrec.training.flips import AlternatingFlips


def _images(count: int = 10) -> np.ndarray:
    """``count`` 2 x 3 images whose left column holds the image's index, the rest 0."""
    images = np.zeros((count, 2, 3, 1), np.uint8)
    images[:, :, 0, 0] = np.arange(count)[:, None]
    return images


def _epoch(flips: AlternatingFlips) -> dict[int, bool]:
    """One epoch's batches: each image's index and whether it came mirrored."""
    seen = {}
    for index in range(len(flips)):
        batch, targets = flips[index]
        assert batch.dtype == np.float32 and len(batch) <= flips.batch_size
        for image, target in zip(batch, targets, strict=True):
            mirrored = image[0, 0, 0] == 0 and image[0, 2, 0] == target
            seen[int(target)] = bool(mirrored) if target else None
    flips.on_epoch_end()
    return seen


def test_each_image_comes_once_an_epoch_and_each_way_round_every_two_epochs():
    images = _images(10)
    flips = AlternatingFlips(images, np.arange(10), batch_size=4, seed=3)
    assert len(flips) == 3  # 4 + 4 + 2
    epochs = [_epoch(flips) for _ in range(4)]
    for seen in epochs:
        assert sorted(seen) == list(range(10))  # every image, once
    for first, second in itertools.pairwise(epochs):
        assert all(first[i] != second[i] for i in range(1, 10))  # (image 0 is all zeros)
    assert 0 < sum(epochs[0][i] for i in range(1, 10)) < 9  # the first epoch: at random
    first, again = (AlternatingFlips(images, np.arange(10), 4, seed=3) for _ in range(2))
    np.testing.assert_array_equal(first[0][0], again[0][0])  # the seed decides


def test_a_resumed_run_continues_the_flips_where_it_stopped():
    images = _images(10)
    run = AlternatingFlips(images, np.arange(10), batch_size=10, seed=1)
    _epoch(run), _epoch(run)
    third = _epoch(run)
    resumed = AlternatingFlips(images, np.arange(10), batch_size=10, seed=1, first_epoch=2)
    assert _epoch(resumed) == third


def test_class_weights_travel_as_sample_weights_and_bad_sizes_are_refused():
    weights = np.linspace(0.5, 1.4, 10).astype(np.float32)
    flips = AlternatingFlips(_images(10), np.arange(10), 10, sample_weights=weights)
    _, targets, sample = flips[0]
    np.testing.assert_allclose(sample, weights[targets])
    with pytest.raises(ValueError, match="AlternatingFlips"):
        AlternatingFlips(_images(10), np.arange(9), 4)
