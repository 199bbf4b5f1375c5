"""Train a network on a data set: the chapter's ``model.fit``, with what it leaves to users.

``train`` is the one entry point (``imgrec.train``). It picks one of three kinds of
run and hands over:

- ``resume``: continue a saved run (``imgrec.training.resume``);
- a zoo network: transfer learning (``imgrec.training.transfer``);
- one of the chapter's networks (``imgrec.training.chapter_run``).

Each loads the data once (decoded into the uint8 cache), builds the network with its
augmentation inside (Keras preprocessing layers, so it runs wherever the model
trains), and fits it with Keras's own loop and progress bar
(``imgrec.training.loop``). Around the loop:

- after every completed epoch the latest state, optimizer included, is saved
  atomically to ``<out>.last.keras`` with the training record and its history inside,
  the best model so far (lowest validation loss) to ``out``, and the history to
  ``<out>.history.json`` (see ``imgrec.training.checkpoints`` for when saves are
  spaced out);
- early stopping on the validation loss;
- Ctrl-C (SIGINT) stops after the current batch, saves, and returns cleanly; the
  unfinished epoch is not counted; a second Ctrl-C stops at once;
- the training curves (PNG) sit next to the model.

With ``devices`` (and ``coordinator``, ``num_processes``, ``process_id`` for several
hosts) the same run trains data-parallel: see ``imgrec.training.distribute``.
"""

from __future__ import annotations

import os
from typing import Any

import keras

from imgrec.core.errors import ImgrecError
from imgrec.datasets import Dataset
from imgrec.models.conv_vae import is_conv_vae
from imgrec.models.registry import ZOO_KIND, get_model_entry, is_model
from imgrec.training.chapter_run import train_chapter_network
from imgrec.training.checkpoints import RunFiles
from imgrec.training.data import data_report, load_training_data
from imgrec.training.distribute import Placement, plan_placement
from imgrec.training.loop import FitOptions
from imgrec.training.record import DEFAULT_BATCH_SIZE, DEFAULT_VAL_SPLIT, SplitSettings
from imgrec.training.resume import resume_training
from imgrec.training.transfer import train_transfer
from imgrec.training.vae import refuse_resume, train_conv_vae

# Epochs for transfer learning when --epochs is not given.
TRANSFER_EPOCHS = 10
DEFAULT_OUT = "model.keras"


def train(
    dataset: str | os.PathLike | Dataset,
    arch: str = "cifar-cnn",
    *,
    out: str | os.PathLike | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    image_size: tuple[int, int] | None = None,
    augment: str = "",
    resume: str | os.PathLike | None = None,
    class_weight: str | None = None,
    val_split: float | None = None,
    limit_per_class: int | None = None,
    seed: int | None = None,
    patience: int = 5,
    verbose: int = 1,
    callbacks: list[keras.callbacks.Callback] | None = None,
    transfer: str | None = None,
    freeze: int | None = None,
    unfreeze_from: str | None = None,
    devices: int | str | None = None,
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
) -> dict[str, Any]:
    """Train ``arch`` on ``dataset`` and save the best model to ``out``.

    Args:
        dataset: a data set name or path (see ``imgrec datasets``), or a loaded one.
        arch: a chapter network (``cifar-cnn``, ``catdog-cnn``, ``mnist-cnn``, ``vgg-bn``),
            ``fast-cnn`` (the recipe for accuracy per second), a zoo network for transfer
            learning (``mobilenet_v2``), a 2x super-resolution network (``sr-cnn``,
            ``sr-resnet``) (``imgrec.models.registry.list_models()`` names all these),
            ``conv-vae`` (a VAE) or ``acgan`` (a GAN of digits).
        out: the best model (``.keras``; default ``model.keras``, on resume the run's
            own beside ``resume``); ``.last.keras``, ``.history.json``,
            ``.curves.png`` and ``.skipped.json`` go beside it.
        epochs: total epochs to reach (default: the recipe's).
        lr: learning rate (default: the recipe's).
        batch_size: images per step (default: the recipe's, else 64).
        image_size: height and width for photo folders (default: the architecture's
            input size); array data sets keep their own size unless this is given.
        augment: a spec such as ``"flip,rotate=15"`` (default: the recipe's; ``"none"``: none).
        resume: a ``.keras`` file saved by ``train`` to continue; ``arch`` is then
            ignored, and epochs, batch size, split and seed default to the run's own.
        class_weight: ``"balanced"`` weighs classes by inverse frequency.
        val_split: fraction of the training data held out for validation when the
            data set has no validation split of its own (default 0.1; ``fast-cnn``: 0,
            all of them, where the data set has a test split of its own).
        limit_per_class: keep at most this many training images per class.
        seed: seeds the split, shuffling, augmentation and weights (default 0).
        patience: epochs without a better validation loss before stopping.
        verbose: 0 silent, 1 Keras's progress bar, 2 one line per epoch.
        callbacks: more Keras callbacks for ``fit``, run after imgrec's own.
        transfer: for a zoo network: ``"head"`` (default), ``"finetune"`` or
            ``"scratch"`` (see ``imgrec.training.transfer``).
        freeze: for ``finetune``: how many backbone layers stay frozen.
        unfreeze_from: for ``finetune``: the layer from which on the backbone is
            trained (instead of ``freeze``).
        devices: train data-parallel on N of this process's devices or ``"all"``
            (default 1; with several processes, all); ``batch_size`` is the global batch.
        coordinator: process 0's ``HOST:PORT``, when several processes train together
            (JAX).
        num_processes: how many processes train together.
        process_id: which one this is, 0 to ``num_processes - 1`` (only 0 writes files).

    Returns:
        Plain data: paths written (``model``, ``last``, ``history``, ``curves``; None
        where no epoch finished, or not process 0), epochs done and asked, best
        validation loss and accuracy (``validated`` False: no validation images, and
        these are the training figures), whether interrupted, seconds, data set summary,
        skipped files; on several devices, ``distribution`` (see ``Placement.report``).

    Raises:
        DatasetError: a bad data set.
        ModelError: a bad architecture or model file.
        SpecError: a bad augmentation spec.
        ImgrecError: device settings this machine or backend cannot honour.
    """
    placement = plan_placement(devices, coordinator=coordinator, num_processes=num_processes,
                               process_id=process_id)  # fmt: skip
    batch_size = batch_size or _recipe_batch_size(arch, resume)
    _check_placement(placement, arch, resume, batch_size)
    options = FitOptions(batch_size or DEFAULT_BATCH_SIZE, class_weight, patience, verbose,
                         tuple(callbacks or ()), placement)  # fmt: skip
    with placement.scope(), placement.output(out) as out:
        result = _dispatch(
            dataset, arch, options, out=out, epochs=epochs, batch_size=batch_size, lr=lr,
            image_size=image_size, augment=augment, resume=resume, val_split=val_split,
            limit_per_class=limit_per_class, seed=seed, transfer=transfer, freeze=freeze,
            unfreeze_from=unfreeze_from,
        )  # fmt: skip
    return _own_files(result, placement)


def _dispatch(
    dataset: str | os.PathLike | Dataset,
    arch: str,
    options: FitOptions,
    *,
    out: str | os.PathLike | None,
    epochs: int | None,
    batch_size: int | None,
    lr: float | None,
    image_size: tuple[int, int] | None,
    augment: str,
    resume: str | os.PathLike | None,
    val_split: float | None,
    limit_per_class: int | None,
    seed: int | None,
    transfer: str | None,
    freeze: int | None,
    unfreeze_from: str | None,
) -> dict[str, Any]:
    """Hand the run over to resume, transfer learning or a chapter network's recipe."""
    if resume is not None:
        refuse_resume(resume)
        split = {"val_split": val_split, "seed": seed, "limit_per_class": limit_per_class}
        return resume_training(
            dataset, resume, options=options, out=out, epochs=epochs, batch_size=batch_size,
            split=split,
        )  # fmt: skip
    files, split = _start_new_run(out, val_split, seed, limit_per_class)
    if is_conv_vae(arch):
        unused = {"--augment": augment, "--transfer": transfer, "--freeze": freeze,
                  "--unfreeze-from": unfreeze_from}  # fmt: skip
        return train_conv_vae(
            dataset, files=files, split=split, options=options, epochs=epochs,
            batch_size=batch_size, lr=lr, image_size=image_size, unused=unused,
        )  # fmt: skip
    if is_transfer_architecture(arch):
        return _train_transfer(
            dataset, arch, files, split, options, transfer=transfer, epochs=epochs, lr=lr,
            image_size=image_size, augment=augment, freeze=freeze, unfreeze_from=unfreeze_from,
        )  # fmt: skip
    if transfer is not None:
        raise ImgrecError(f"--transfer needs a zoo network as --arch, not {arch!r}")
    return train_chapter_network(
        dataset, arch, files=files, split=split, options=options, epochs=epochs, lr=lr,
        image_size=image_size, augment=augment, split_named=val_split is not None,
    )  # fmt: skip


def _check_placement(
    placement: Placement, arch: str, resume: str | os.PathLike | None, batch_size: int | None
) -> None:
    """Refuse what a distributed run cannot do, before any data is read."""
    if placement.distributed and resume is None and is_transfer_architecture(arch):
        raise ImgrecError(
            f"--devices: transfer learning ({arch}) trains on one device; several devices "
            "train the chapter's networks"
        )
    if resume is None:
        placement.check_batch_size(batch_size or DEFAULT_BATCH_SIZE)


def _recipe_batch_size(arch: str, resume: str | os.PathLike | None) -> int | None:
    """The batch size of a chapter network's recipe, for a new run (None: imgrec's default)."""
    if resume is not None or not is_model(arch):
        return None
    recipe = get_model_entry(arch).chapter
    return recipe.batch_size if recipe is not None else None


def _own_files(result: dict[str, Any], placement: Placement) -> dict[str, Any]:
    """``result``, without the paths of a process that wrote into a temporary folder."""
    if placement.writes_files:
        return result
    return result | {key: None for key in ("model", "last", "history", "curves")}


def _start_new_run(
    out: str | os.PathLike | None, val_split: float | None, seed: int | None, limit: int | None
) -> tuple[RunFiles, SplitSettings]:
    """The files and the split of a new run, with the seed set and stale files gone."""
    files = RunFiles.for_model(DEFAULT_OUT if out is None else out).without_stale_temporaries()
    split = SplitSettings(DEFAULT_VAL_SPLIT if val_split is None else val_split, seed or 0, limit)
    keras.utils.set_random_seed(split.seed)
    return files, split


def _train_transfer(
    dataset: str | os.PathLike | Dataset,
    arch: str,
    files: RunFiles,
    split: SplitSettings,
    options: FitOptions,
    *,
    transfer: str | None,
    epochs: int | None,
    lr: float | None,
    image_size: tuple[int, int] | None,
    augment: str,
    freeze: int | None,
    unfreeze_from: str | None,
) -> dict[str, Any]:
    """Load the data for a zoo network and hand over to ``train_transfer``."""
    backbone_size = image_size or get_model_entry(arch).input_size
    # Photos are decoded at the backbone's size; array data sets keep theirs and the
    # model resizes them up (a cache of Fashion-MNIST at 224 x 224 would take 10 GB).
    data = load_training_data(dataset, split, folder_size=backbone_size)
    fitted = train_transfer(
        data,
        arch,
        transfer or "head",
        out=files.best,
        epochs=epochs or TRANSFER_EPOCHS,
        batch_size=options.batch_size,
        lr=lr,
        image_size=backbone_size,
        augment=augment,
        freeze=freeze,
        unfreeze_from=unfreeze_from,
        class_weight=options.class_weight,
        seed=split.seed,
        val_split=split.val_split,
        limit_per_class=split.limit_per_class,
        patience=options.patience,
        verbose=options.verbose,
        callbacks=list(options.callbacks),
    )
    return fitted | data_report(data)


def is_transfer_architecture(arch: str) -> bool:
    """Whether ``arch`` names a zoo network (transfer learning), not a chapter network."""
    return is_model(arch) and get_model_entry(arch).kind == ZOO_KIND
