"""``imgrec train`` and ``imgrec augment``: fit a network; see what augmentation does."""

from __future__ import annotations

import argparse
import shlex

from imgrec.cli import flags, upscale
from imgrec.cli.shell import SHELL_ONLY, Command, api_arguments, print_json, progress_level
from imgrec.core.native import BFLOAT16

# The options a resumed run does not read from its .keras file, with the value that
# needs no repeating: the resume hint repeats those the interrupted run was given. (The
# architecture, learning rate, image size and augmentation travel inside the file.)
RESUME_OPTIONS = {
    "epochs": ("--epochs", None),
    "batch_size": ("--batch-size", None),
    "val_split": ("--val-split", None),
    "limit_per_class": ("--limit-per-class", None),
    "seed": ("--seed", None),
    "class_weight": ("--class-weight", None),
    "patience": ("--patience", flags.PATIENCE.options["default"]),
    "devices": ("--devices", None),
}


# The generative network ``--arch`` also takes (imgrec.models.acgan.ARCHITECTURE): it has
# a training run of its own, and only these of train's options apply to it.
ACGAN_ARCH = "acgan"
ACGAN_OPTIONS = ("dataset", "out", "epochs", "batch_size", "lr", "seed", "limit_per_class")


def run_train(args: argparse.Namespace) -> int:
    """Train, then print the skipped files, the stages, the result and the paths."""
    if upscale.is_super_resolution_arch(args.arch):
        return upscale.run_train_super_resolution(args)
    from imgrec.training.fit import train

    if args.arch == ACGAN_ARCH:
        return run_train_acgan(args)

    result = train(**api_arguments(args, verbose=progress_level(args)))
    if args.json:
        return print_json(result)
    for skipped in result["skipped"]:
        print(f"skipped {skipped['path']}: {skipped['reason']}")
    for stage in result.get("stages", []):
        print(
            f"{stage['stage']}: {stage['trainable']:,} trainable parameters, "
            f"{stage['frozen']:,} frozen"
        )
    if result["skipped"]:
        print(
            f"{len(result['skipped'])} files skipped (listed in the .skipped.json beside the model)"
        )
    distribution = result.get("distribution")
    if distribution and distribution["process_id"]:
        print(
            f"process {distribution['process_id']} of {distribution['processes']}: "
            f"{result['epochs_done']} epochs in {result['seconds']:.0f} s; process 0 writes "
            "the model"
        )
        return 0
    if result["model"] is None:
        print("interrupted before the first epoch finished: nothing saved")
        return 0
    if result["interrupted"]:
        print(
            f"interrupted after epoch {result['epochs_done']} of {result['epochs_asked']}; "
            f"continue with: {resume_command(args, result['last'], result['model'])}"
        )
    best = result["best_val_accuracy"]
    held_out = "validation" if result.get("validated", True) else "training"
    accuracy = f" ({held_out} accuracy {best:.2%})" if best is not None else ""
    best_loss = result.get("best_val_loss")
    if best is None and best_loss is not None:  # a VAE: no accuracy
        accuracy = f" (validation loss {best_loss:.4g})"
    arithmetic = f" ({BFLOAT16})" if result.get("precision") == BFLOAT16 else ""
    print(
        f"{result['epochs_done']} epochs in {result['seconds']:.0f} s{arithmetic}; "
        f"best model: {result['model']}{accuracy}"
    )
    print(f"history: {result['history']}\ncurves: {result['curves']}")
    if distribution:
        left_out = distribution["images_left_out"]
        print(
            f"devices: {distribution['devices']} ({distribution['processes']} process"
            f"{'es' if distribution['processes'] > 1 else ''}); left out to split evenly: "
            f"{left_out['train']} training, {left_out['val']} validation images"
        )
    return 0


def run_train_acgan(args: argparse.Namespace) -> int:
    """``--arch acgan``: train the AC-GAN, then print the epochs, the time and the files."""
    from imgrec.core.errors import ImgrecError
    from imgrec.training.acgan import train_acgan

    ignored = {"arch", "patience", *ACGAN_OPTIONS, *SHELL_ONLY}
    given = [dest for dest, value in vars(args).items() if dest not in ignored and value]
    if given:
        options = ", ".join("--" + dest.replace("_", "-") for dest in given)
        raise ImgrecError(f"{options}: not an option of --arch {ACGAN_ARCH}")
    kwargs = {dest: getattr(args, dest) for dest in ACGAN_OPTIONS}
    result = train_acgan(**kwargs | {"out": args.out or "gan.keras"}, verbose=progress_level(args))
    if args.json:
        return print_json(result)
    for skipped in result["skipped"]:
        print(f"skipped {skipped['path']}: {skipped['reason']}")
    if result["model"] is None:
        print("interrupted before the first epoch finished: nothing saved")
        return 0
    stopped = " (interrupted)" if result["interrupted"] else ""
    print(
        f"{result['epochs_done']} of {result['epochs_asked']} epochs in "
        f"{result['seconds']:.0f} s{stopped}; generator: {result['model']}"
    )
    print(f"history: {result['history']}\nsamples: {result['samples']}")
    return 0


def resume_command(args: argparse.Namespace, last: str, out: str) -> str:
    """The ``imgrec train`` command that continues this run from ``last``, shell-quoted.

    It names the data set, ``--resume last``, ``--out out`` (the run's best model) and
    each option of
    :data:`RESUME_OPTIONS` that this run was given. Values that start with ``-`` are
    written so that they cannot pass for options (``--out=-x.keras``, ``./-data``).
    """
    dataset = str(args.dataset)
    words = ["imgrec", "train", f"./{dataset}" if dataset.startswith("-") else dataset]
    words += _option("--resume", last) + _option("--out", out)
    for dest, (option, unneeded) in RESUME_OPTIONS.items():
        value = getattr(args, dest)
        if value is not None and value != unneeded:
            words += _option(option, value)
    return shlex.join(words)


def _option(option: str, value: object) -> list[str]:
    text = str(value)
    return [f"{option}={text}"] if text.startswith("-") else [option, text]


def run_augment(args: argparse.Namespace) -> int:
    """Draw the augmentation grid and print where it went."""
    from imgrec.training.augment import augment_grid

    path = augment_grid(**api_arguments(args, rename={"augment": "spec"}))
    if args.json:
        return print_json({"grid": str(path)})
    print(f"wrote {path}")
    return 0


TRAIN = Command(
    "train",
    help="train a network on a data set, with augmentation, checkpoints and resume",
    description="Train a network on a folder, an archive or a built-in data set. The "
    "best model goes to --out; the latest state, its optimizer and history to "
    "<out>.last.keras. Both are saved after every epoch; only where a save takes longer than "
    "an epoch (a new head on cached features) are saves spaced out, to at most about half "
    "the training time. A killed run keeps every finished epoch but the one in progress; "
    "Ctrl-C stops after the batch and never counts an unfinished epoch. --resume continues, "
    "beside the resumed file unless --out says otherwise.",
    flags=[
        flags.DATASET,
        flags.VAL_SPLIT.but(
            help="validation fraction (default 0.1; fast-cnn: 0 where the data set has a test "
            "split of its own; on resume the run's)"
        ),
        flags.LIMIT_PER_CLASS,
        flags.SEED,
        flags.flag(
            "--arch",
            default="cifar-cnn",
            help="one of the chapter's networks (cifar-cnn, catdog-cnn, mnist-cnn, vgg-bn) or "
            "fast-cnn, our recipe for accuracy per second; a zoo network for transfer "
            "learning (mobilenet_v2, efficientnet_lite0, ...), "
            "acgan: the AC-GAN of digits, conv-vae: the VAE with a 2-D latent code (imgrec "
            "generate draws from both), or a 2x super-resolution network (sr-cnn, sr-resnet) "
            "trained on a folder of photos",
        ),
        flags.TRANSFER,
        flags.flag("--freeze", type=int, metavar="N", help="finetune: keep N layers frozen"),
        flags.flag("--unfreeze-from", metavar="LAYER", help="finetune: train from this layer on"),
        flags.EPOCHS,
        flags.BATCH_SIZE,
        flags.flag("--lr", type=float, help="learning rate (default: the recipe's)"),
        flags.IMAGE_SIZE,
        flags.AUGMENT.but(default=""),
        flags.OUT.but(
            help="where the best model goes (default model.keras; on --resume X.last.keras, "
            "X.keras)"
        ),
        flags.flag("--resume", metavar="MODEL.keras", help="continue a saved run"),
        flags.CLASS_WEIGHT,
        flags.PATIENCE,
        *flags.PLACEMENT,
    ],
    run=run_train,
)

AUGMENT = Command(
    "augment",
    help="draw a grid of augmented copies of a photo",
    description="Apply an augmentation spec (as 'imgrec train --augment' would) to one "
    "photo several times and draw the copies in a grid.",
    flags=[
        flags.IMAGE,
        flags.AUGMENT.but(required=True),
        flags.OUT.but(default="augment.png", help="the PNG to write"),
        flags.flag("--count", type=flags.positive_int, default=16, help="copies to draw"),
        flags.SEED.but(default=0, help=None),
    ],
    run=run_augment,
)
