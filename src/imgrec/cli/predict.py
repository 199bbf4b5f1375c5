"""``imgrec predict``: the top classes of photos, as a table, JSON or a CSV file."""

from __future__ import annotations

import argparse
import csv
import io
import sys

from imgrec.cli import flags
from imgrec.cli.shell import Command, api_arguments, print_json
from imgrec.core.errors import ImgrecError
from imgrec.core.storage import write_bytes_atomic

BAR_WIDTH = 24

# A spreadsheet runs a cell that starts with one of these as a formula (OWASP, "CSV
# injection"): a file named "=1+2.jpg" must not become one.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def run_predict(args: argparse.Namespace) -> int:
    """Classify ``args.images``; exit code 1 when any image could not be classified."""
    from imgrec.prediction import predict_many

    batch = predict_many(**api_arguments(args, leave_out=["csv"], verbose=not args.quiet))
    results = batch["results"]
    if not results:
        raise ImgrecError(f"no images found in {' '.join(args.images)}")
    if args.csv:
        write_bytes_atomic(args.csv, predictions_csv(results, args.top).encode())
    if args.json:
        print_json(results)
    else:
        _print_table(results, batch, quiet=args.quiet)
    failed = [r for r in results if "error" in r]
    if failed and not args.quiet:
        print(f"{len(failed)} of {len(results)} images could not be classified", file=sys.stderr)
    return 1 if failed else 0


def _print_table(results: list[dict], batch: dict, *, quiet: bool) -> None:
    classified = [r for r in results if "error" not in r]
    if classified and not quiet:
        print(f"{classified[0]['model']}, weights: {classified[0]['weights']}\n")
    for result in results:
        _print_prediction(result)
    if len(results) > 1 and not quiet:
        print(
            f"{batch['classified']} of {batch['images']} images in {batch['seconds']:.2f} s: "
            f"{batch['images_per_second']:.1f} images/s ({batch['runtime']} runtime, "
            f"batch size {batch['batch_size']}, {batch['threads']} decoding threads)"
        )


def _print_prediction(result: dict) -> None:
    if "error" in result:
        print(f"{result['image']}\n  error: {result['error']}\n")
        return
    print(f"{result['image']}")
    print(f"  {result['model']}: {result['time_ms']:.1f} ms ({result['fps']:.1f} fps)")
    width = max(len(c["class"]) for c in result["top"])
    for c in result["top"]:
        bar = "#" * round(c["probability"] * BAR_WIDTH)
        print(f"  {c['rank']:>2}. {c['class']:<{width}}  {c['probability']:7.2%}  {bar}")
    print()


def text_cell(text: str) -> str:
    """``text`` for a CSV cell that no spreadsheet takes for a formula: a leading ``'``
    where it starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return."""
    return f"'{text}" if text.startswith(FORMULA_STARTS) else text


def predictions_csv(results: list[dict], top: int) -> str:
    """One CSV row per image: its top classes with probabilities, time and error.

    Text cells (image, class names, error) pass through :func:`text_cell`; numbers
    are written as numbers.
    """
    out = io.StringIO()
    writer = csv.writer(out)
    header = ["image"]
    for rank in range(1, top + 1):
        header += [f"class_{rank}", f"probability_{rank}"]
    writer.writerow([*header, "time_ms", "error"])
    for result in results:
        row = [text_cell(result["image"])]
        for c in result.get("top", []):
            row += [text_cell(c["class"]), f"{c['probability']:.6f}"]
        row += [""] * (len(header) - len(row))
        time_ms = f"{result['time_ms']:.3f}" if "time_ms" in result else ""
        writer.writerow([*row, time_ms, text_cell(result.get("error", ""))])
    return out.getvalue()


COMMAND = Command(
    "predict",
    help="classify photos with a pretrained or trained network",
    description="Print the top-K classes of each image with probabilities and the "
    "network's inference time. A folder means every image in it.",
    flags=[
        flags.flag("images", nargs="+", metavar="IMAGE", help="image files or folders"),
        flags.MODEL_OPTION,
        flags.WEIGHTS,
        flags.TOP.but(help="classes per image"),
        flags.flag("--csv", metavar="OUT", help="also write one CSV row per image"),
        flags.BATCH_SIZE.but(
            default=1,
            metavar="N",
            help="images per forward pass; 32 classifies folders faster (default 1: each "
            "image timed alone)",
        ),
        flags.RUNTIME,
    ],
    run=run_predict,
)
