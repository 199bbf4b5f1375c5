"""``imgrec generate``: pictures from a generative model (the Keras.js demos' networks).

The model's kind is read from its training record (``imgrec.models.loading.
stored_architecture``) and the verb hands over to that kind's ``generate`` in
:data:`GENERATORS`, with the flags that were given. A flag the kind does not take is a
usage error that names the kind.
"""

from __future__ import annotations

import argparse
import importlib
import inspect

from imgrec.cli import flags
from imgrec.cli.shell import Command, api_arguments, print_json
from imgrec.core.errors import ImgrecError

# Architecture (as the training record names it) -> the module whose ``generate`` runs it.
GENERATORS = {"conv-vae": "imgrec.models.conv_vae"}
# Flag dest -> the flag as typed, for messages.
_FLAG_NAMES = {"z": "--z", "grid": "--grid", "extent": "--extent"}


def run_generate(args: argparse.Namespace) -> int:
    """Generate with the model's kind; print the PNG written."""
    from imgrec.models.loading import stored_architecture

    architecture = stored_architecture(args.model)
    if architecture not in GENERATORS:
        kinds = ", ".join(GENERATORS)
        raise ImgrecError(
            f"{args.model}: not a generative model imgrec trained (its architecture: "
            f"{architecture or 'unknown'}); generate takes {kinds} models, e.g. from: "
            "imgrec train mnist --arch conv-vae --out vae.keras"
        )
    generate = importlib.import_module(GENERATORS[architecture]).generate
    accepted = inspect.signature(generate).parameters
    given = {key: value for key, value in api_arguments(args).items() if value is not None}
    refused = [_FLAG_NAMES.get(key, key) for key in given if key not in accepted]
    if refused:
        raise ImgrecError(f"{args.model}: a {architecture} model takes no {', '.join(refused)}")
    result = generate(**given)
    if args.json:
        return print_json(result)
    what = f"a {result['grid']} x {result['grid']} grid" if result.get("grid") else "one image"
    print(f"wrote {result['out']} ({what}, {result['width']} x {result['height']} pixels)")
    return 0


GENERATE = Command(
    "generate",
    help="draw pictures with a generative model (the VAE's latent plane)",
    description="Decode points of a variational autoencoder's latent plane into images: one "
    "point (--z X,Y) or an N x N grid over the plane (--grid N). The model comes from "
    "'imgrec train mnist --arch conv-vae --out vae.keras'.",
    flags=[
        flags.flag("model", metavar="MODEL.keras", help="a generative model imgrec trained"),
        flags.OUT.but(default="generated.png", help="the PNG to write (default generated.png)"),
        flags.flag(
            "--z",
            metavar="X,Y",
            help="the latent point to decode, e.g. 0.5,-0.2 (write --z=-0.5,0.2 when it starts "
            "with a minus)",
        ),
        flags.flag(
            "--grid",
            type=flags.positive_int,
            metavar="N",
            help="decode an N x N grid over the latent plane instead (N up to 64)",
        ),
        flags.flag(
            "--extent",
            type=float,
            help="with --grid: the plane spans [-E, E] on both axes (default 1)",
        ),
    ],
    run=run_generate,
)
