"""``imgrec explain``, ``imgrec layers`` and ``imgrec localize``: look inside a network."""

from __future__ import annotations

import argparse

from imgrec.cli import flags
from imgrec.cli.shell import Command, api_arguments, print_json


def run_explain(args: argparse.Namespace) -> int:
    """Write the CAM overlay; print the class explained and the PNG."""
    from imgrec.explanation.cam import explain

    result = explain(**api_arguments(args))
    if args.json:
        return print_json(result)
    print(
        f"{result['image']}: {result['class']} (class {result['index']}, "
        f"{result['probability']:.2%}), {result['method']} on layer {result['layer']}"
    )
    print(f"wrote {result['overlay_png']}")
    return 0


def run_layers(args: argparse.Namespace) -> int:
    """Print the layer table (as ``model.summary()`` would); with a photo, the grids."""
    from imgrec.explanation.layer_view import layers_report

    result = layers_report(**api_arguments(args))
    if args.json:
        return print_json(result)
    rows = [
        (
            "  " * row["depth"] + f"{row['name'].rsplit('/', 1)[-1]} ({row['type']})",
            str(tuple(row["output_shape"])) if row["output_shape"] is not None else "?",
            f"{row['parameters']:,}",
        )
        for row in result["layers"]
    ]
    titles = ("Layer (type)", "Output Shape", "Param #")
    widths = [max(len(title), *(len(r[i]) for r in rows)) for i, title in enumerate(titles)]
    for name, shape, params in [titles, *rows]:
        print(f"{name:<{widths[0]}}  {shape:<{widths[1]}}  {params:>{widths[2]}}")
    total, trainable = result["parameters"], result["trainable_parameters"]
    print(f"\nTotal params: {total:,}")
    print(f"Trainable params: {trainable:,}\nNon-trainable params: {total - trainable:,}")
    if "feature_maps" in result:
        print(f"\n{len(result['feature_maps'])} feature-map grids in {args.out}")
    if "index" in result:
        print(f"index: {result['index']}")
    return 0


def run_localize(args: argparse.Namespace) -> int:
    """Write the box, the mask and their JSON; print the box."""
    from imgrec.explanation.localization import localize

    result = localize(**api_arguments(args))
    if args.json:
        return print_json(result)
    print(f"{result['image']}: {result['class']} ({result['probability']:.2%})")
    if result["box"] is None:
        print("the map is zero everywhere: nothing to localise")
    else:
        left, top, right, bottom = result["box"]
        print(
            f"box: left {left}, top {top}, right {right}, bottom {bottom} "
            f"({result['mask_fraction']:.1%} of the photo in the mask)"
        )
    print(f"wrote {result['localization_png']}, {result['mask_png']}, {result['json']}")
    return 0


EXPLAIN = Command(
    "explain",
    help="draw a Class Activation Map: where in a photo the network saw its class",
    description="Compute a Class Activation Map (CAM, Grad-CAM or Grad-CAM++) for the "
    "top class (or --class K) and write the photo beside the map's overlay as a PNG.",
    flags=[
        flags.MODEL,
        flags.IMAGE,
        flags.METHOD,
        flags.flag("--layer", metavar="NAME", help="feature map layer (default: the last)"),
        flags.CLASS_INDEX,
        flags.COLORMAP,
        flags.flag("--alpha", type=float, default=0.5, help="the map's weight, 0 to 1"),
        flags.OUT.but(required=True, metavar="PNG", help="the PNG to write"),
    ],
    run=run_explain,
)

LAYERS = Command(
    "layers",
    help="list a network's layers; with a photo, draw every layer's feature maps",
    description="Print the layers (nested models opened) with output shapes and "
    "parameters. With IMAGE, write one PNG grid of feature maps per 4-D layer and "
    "an index.json into --out.",
    flags=[
        flags.MODEL,
        flags.IMAGE.but(nargs="?"),
        flags.OUT.but(metavar="DIR", help="folder for the PNGs and index.json"),
        flags.flag(
            "--channels", type=flags.positive_int, default=16, help="channels drawn per layer"
        ),
    ],
    run=run_layers,
)

LOCALIZE = Command(
    "localize",
    help="box and mask of the object a network recognised, from its CAM",
    description="Weakly supervised localisation (Zhou et al. 2016): threshold the "
    "class activation map, keep its largest region, and write the photo with box and "
    "mask, the mask, and a JSON with the box into --out.",
    flags=[
        flags.MODEL,
        flags.IMAGE,
        flags.OUT.but(required=True, metavar="DIR", help="folder for the results"),
        flags.flag(
            "--threshold", type=float, default=0.2, help="fraction of the map's maximum (0.2)"
        ),
        flags.METHOD,
        flags.CLASS_INDEX.but(help="class index to localise"),
    ],
    run=run_localize,
)
