"""``imgrec generate``: draw images from a generative model: the AC-GAN's digits of a class,
or the points of a VAE's latent plane.

The model's kind is read from its training record (``imgrec.models.loading.
stored_architecture``, without loading it): a ``conv-vae`` decodes ``--z`` or a ``--grid``
(``imgrec.models.conv_vae.generate``); anything else is taken for an AC-GAN generator
(``imgrec.models.acgan.generate_files``, which names a file that is not one). A flag of
the other kind is refused, naming the kind, rather than ignored.
"""

from __future__ import annotations

import argparse

from imgrec.cli import flags
from imgrec.cli.shell import Command, print_json
from imgrec.core.errors import ImgrecError

# The flags of each kind, by dest, as typed.
ACGAN_FLAGS = {"digit": "--class", "n": "--n", "seed": "--seed", "columns": "--columns"}
VAE_FLAGS = {"z": "--z", "grid": "--grid", "extent": "--extent"}
# The AC-GAN's defaults (None on the command line: a flag given is a flag meant).
ACGAN_IMAGES = 16
ACGAN_SEED = 0


def run_generate(args: argparse.Namespace) -> int:
    """Generate with the model's kind; write the PNG(s) and say where they went."""
    from imgrec.models.conv_vae import ARCHITECTURE as VAE
    from imgrec.models.loading import stored_architecture

    vae = stored_architecture(args.model) == VAE
    given = [flag for dest, flag in (ACGAN_FLAGS if vae else VAE_FLAGS).items()
             if getattr(args, dest) is not None]  # fmt: skip
    if given and vae:
        raise ImgrecError(
            f"{args.model}: a {VAE} model takes no {', '.join(given)} (AC-GAN generators do)"
        )
    if given:
        raise ImgrecError(f"{', '.join(given)}: only for {VAE} models, and {args.model} is not one")
    return _run_vae(args) if vae else _run_acgan(args)


def _run_vae(args: argparse.Namespace) -> int:
    from imgrec.models.conv_vae import PLANE_EXTENT, generate

    extent = PLANE_EXTENT if args.extent is None else args.extent
    result = generate(args.model, args.out, z=args.z, grid=args.grid, extent=extent)
    if args.json:
        return print_json(result)
    what = f"a {result['grid']} x {result['grid']} grid" if result["grid"] else "one image"
    print(f"wrote {result['out']} ({what}, {result['width']} x {result['height']} pixels)")
    return 0


def _run_acgan(args: argparse.Namespace) -> int:
    from imgrec.models.acgan import generate_files

    n = ACGAN_IMAGES if args.n is None else args.n
    seed = ACGAN_SEED if args.seed is None else args.seed
    result = generate_files(
        args.model, args.digit, n, out=args.out, seed=seed, columns=args.columns
    )
    if args.json:
        return print_json(result)
    files = result["files"]
    what = "a grid of " if len(files) == 1 and n > 1 else ""
    classes = sorted(set(result["classes"]), key=result["classes"].index)
    where = files[0] if len(files) == 1 else f"{files[0]} ... {files[-1]}"
    print(f"wrote {what}{n} image{'s' if n > 1 else ''} of class {', '.join(classes)}: {where}")
    return 0


COMMAND = Command(
    "generate",
    help="draw images from a generative model (AC-GAN digits of a class; a VAE's latent plane)",
    description="An AC-GAN generator (imgrec train mnist --arch acgan) draws --n images of "
    "the class --class, from noise seeded by --seed: the same seed draws the same images; "
    "--out FILE.png writes one grid, --out DIR/ one PNG per image. A VAE (imgrec train "
    "mnist --arch conv-vae) decodes one point of its latent plane (--z X,Y) or an N x N "
    "grid over the plane (--grid N).",
    flags=[
        flags.MODEL.but(metavar="MODEL.keras", help="the generator or VAE (a .keras file)"),
        flags.flag(
            "--class",
            dest="digit",
            type=int,
            metavar="C",
            help="AC-GAN: the class to draw (0-9 for digits; default: each class in turn)",
        ),
        flags.flag("--n", type=flags.positive_int, help="AC-GAN: how many images (16)"),
        flags.SEED.but(default=None, help="AC-GAN: seeds the noise (default 0)"),
        flags.flag("--columns", type=flags.positive_int, help="AC-GAN: images per row of the grid"),
        flags.flag(
            "--z",
            metavar="X,Y",
            help="VAE: the latent point to decode, e.g. 0.5,-0.2 (write --z=-0.5,0.2 when it "
            "starts with a minus)",
        ),
        flags.flag(
            "--grid",
            type=flags.positive_int,
            metavar="N",
            help="VAE: decode an N x N grid over the latent plane instead (N up to 64)",
        ),
        flags.flag(
            "--extent",
            type=float,
            help="VAE, with --grid: the plane spans [-E, E] on both axes (default 1)",
        ),
        flags.OUT.but(
            default="generated.png",
            help="a .png (AC-GAN: one grid), or for the AC-GAN a folder ending in / for one "
            "PNG per image (default generated.png)",
        ),
    ],
    run=run_generate,
)
