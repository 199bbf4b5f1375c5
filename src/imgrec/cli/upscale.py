"""``imgrec upscale``, and the super-resolution side of ``imgrec train`` and ``evaluate``.

``imgrec train PHOTOS --arch sr-cnn`` (or ``sr-resnet``) trains a 2x super-resolution
network on a folder of photos; ``imgrec evaluate SR.keras PHOTOS`` measures it against
bicubic upscaling (PSNR, SSIM); ``imgrec upscale photo.jpg --model SR.keras`` makes a
photo twice as large. ``train`` and ``evaluate`` hand such work here when the
architecture is of the registry's ``"super-resolution"`` kind, or the model file says it
holds one.
"""

from __future__ import annotations

import argparse

from imgrec.cli import flags
from imgrec.cli.shell import Command, print_json, progress_level
from imgrec.core.errors import ImgrecError

# train's flags that mean nothing to a super-resolution network, with their defaults.
_CLASSIFIER_ONLY = {
    "val_split": None,
    "limit_per_class": None,
    "transfer": None,
    "freeze": None,
    "unfreeze_from": None,
    "image_size": None,
    "augment": "",
    "resume": None,
    "class_weight": None,
    "devices": None,
    "coordinator": None,
    "num_processes": None,
    "process_id": None,
}


def is_super_resolution_arch(arch: str) -> bool:
    """Whether ``arch`` names a super-resolution network of the registry."""
    from imgrec.models.registry import SR_KIND, get_model_entry, is_model

    return is_model(arch) and get_model_entry(arch).kind == SR_KIND


def is_super_resolution_file(model: str) -> bool:
    """Whether ``model`` is a ``.keras`` file whose metadata says it upscales photos."""
    from imgrec.models.super_resolution import super_resolution_architecture

    return super_resolution_architecture(model) is not None


def run_train_super_resolution(args: argparse.Namespace) -> int:
    """``imgrec train PHOTOS --arch sr-...``: train, then print the result."""
    from imgrec.training.super_resolution import train_super_resolution

    given = [
        "--" + dest.replace("_", "-")
        for dest, unset in _CLASSIFIER_ONLY.items()
        if getattr(args, dest, unset) != unset
    ]
    if given:
        raise ImgrecError(
            f"{args.arch} is a super-resolution network: {', '.join(given)} apply to "
            "classifiers only"
        )
    result = train_super_resolution(
        args.dataset,
        args.arch,
        out=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=args.seed,
        verbose=progress_level(args),
    )
    if args.json:
        return print_json(result)
    for skipped in result["skipped"]:
        print(f"skipped {skipped['path']}: {skipped['reason']}")
    print(
        f"{result['arch']}: {result['epochs_done']} epochs ({result['steps']} steps) on "
        f"{len(result['photos'])} photos in {result['seconds']:.0f} s; "
        f"final loss {result['final_loss']:.6f}; model: {result['model']}"
    )
    return 0


def run_evaluate_super_resolution(args: argparse.Namespace) -> int:
    """``imgrec evaluate SR.keras PHOTOS``: PSNR and SSIM against bicubic, as a table."""
    from imgrec.training.super_resolution import evaluate_super_resolution

    if args.dataset is None:
        raise ImgrecError(f"{args.model} upscales photos: give the folder of photos to measure on")
    if getattr(args, "classifier", None) is not None or getattr(args, "seed", None) is not None:
        raise ImgrecError(
            f"{args.model} upscales photos: --classifier and --seed apply to generators"
        )
    result = evaluate_super_resolution(args.model, args.dataset, report=args.report)
    if args.json:
        return print_json(result)
    for skipped in result["skipped"]:
        print(f"skipped {skipped['path']}: {skipped['reason']}")
    print(markdown_table(result))
    if args.report:
        print(f"\nreport: {args.report}")
    return 0


def markdown_table(result: dict) -> str:
    """The evaluation as a Markdown table: one row per photo, then the mean."""
    arch = result["arch"] or "network"
    lines = [
        f"| photo | size | bicubic PSNR | {arch} PSNR | bicubic SSIM | {arch} SSIM |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    rows = [*result["photos"], {"photo": "mean", "size": None, **result["mean"]}]
    for row in rows:
        size = f"{row['size'][0]} x {row['size'][1]}" if row["size"] else ""
        lines.append(
            f"| {row['photo']} | {size} | {row['bicubic_psnr']:.2f} dB | {row['psnr']:.2f} dB "
            f"| {row['bicubic_ssim']:.4f} | {row['ssim']:.4f} |"
        )
    return "\n".join(lines)


def run_upscale(args: argparse.Namespace) -> int:
    """Upscale one photo 2x and print where it went."""
    from imgrec.models.super_resolution import upscale_file

    result = upscale_file(args.image, args.model, args.out, tile=args.tile)
    if args.json:
        return print_json(result)
    (w, h), (big_w, big_h) = result["size"], result["upscaled"]
    print(f"wrote {result['out']}: {big_w} x {big_h} from {w} x {h} in {result['seconds']:.2f} s")
    return 0


UPSCALE = Command(
    "upscale",
    help="make a photo twice as large with a super-resolution network",
    description="Upscale a photo 2x with a network from 'imgrec train PHOTOS --arch sr-cnn' "
    "(or sr-resnet), over overlapping tiles, so that any size works without seams. Grey "
    "photos stay grey; transparent pixels are composited over white.",
    flags=[
        flags.IMAGE,
        flags.flag("--model", required=True, metavar="MODEL.keras", help="the network"),
        flags.OUT.but(help="the PNG to write (default: IMAGE's name with _2x.png, beside it)"),
        flags.flag(
            "--tile",
            type=flags.positive_int,
            default=128,
            help="tile side in input pixels (default 128); any value gives the same photo",
        ),
    ],
    run=run_upscale,
)
