"""``imgrec generate``: draw images from a generative model (the AC-GAN's digits)."""

from __future__ import annotations

import argparse

from imgrec.cli import flags
from imgrec.cli.shell import Command, print_json


def run_generate(args: argparse.Namespace) -> int:
    """Generate, write the grid or the files, and say where they went."""
    from imgrec.models.acgan import generate_files

    result = generate_files(
        args.model, args.digit, args.n, out=args.out, seed=args.seed, columns=args.columns
    )
    if args.json:
        return print_json(result)
    files = result["files"]
    what = "a grid of " if len(files) == 1 and args.n > 1 else ""
    classes = sorted(set(result["classes"]), key=result["classes"].index)
    where = files[0] if len(files) == 1 else f"{files[0]} ... {files[-1]}"
    print(
        f"wrote {what}{args.n} image{'s' if args.n > 1 else ''} of class "
        f"{', '.join(classes)}: {where}"
    )
    return 0


COMMAND = Command(
    "generate",
    help="draw images from a generator (the AC-GAN: digits of the class you choose)",
    description="Draw --n images from an AC-GAN generator (imgrec train mnist --arch acgan) "
    "of the class --class, from noise seeded by --seed: the same seed draws the same "
    "images. --out FILE.png writes one grid; --out DIR/ writes one PNG per image.",
    flags=[
        flags.MODEL.but(metavar="MODEL.keras", help="the generator (a .keras file)"),
        flags.flag(
            "--class",
            dest="digit",
            type=int,
            metavar="C",
            help="the class to draw (0-9 for digits; default: each class in turn)",
        ),
        flags.flag("--n", type=flags.positive_int, default=16, help="how many images (16)"),
        flags.SEED.but(default=0, help="seeds the noise (default 0)"),
        flags.flag("--columns", type=flags.positive_int, help="images per row of the grid"),
        flags.OUT.but(
            default="generated.png",
            help="a .png for one grid, or a folder ending in / for one PNG per image "
            "(default generated.png)",
        ),
    ],
    run=run_generate,
)
