"""The ``imgrec`` command: one verb per task, the same flags across verbs.

A thin shell over the Python API: it parses arguments, calls one API function,
and prints the result for people (tables) or machines (``--json``). It imports
nothing heavy at start-up, so ``imgrec --help`` and ``imgrec zoo`` never load
TensorFlow.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Sequence

from imgrec.errors import ImgrecError
from imgrec.storage import write_bytes_atomic

BAR_WIDTH = 24


def _common_flags() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="print results as JSON")
    common.add_argument("--quiet", "-q", action="store_true", help="print only the results")
    return common


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imgrec",
        description="Image recognition with Keras: pretrained networks, training, CAM, export.",
    )
    parser.add_argument("--version", action="version", version=f"imgrec {_version()}")
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")
    common = _common_flags()

    predict = verbs.add_parser(
        "predict",
        parents=[common],
        help="classify photos with a pretrained or trained network",
        description="Print the top-K classes of each image with probabilities and the "
        "network's inference time. A folder means every image in it.",
    )
    predict.add_argument("images", nargs="+", metavar="IMAGE", help="image files or folders")
    predict.add_argument(
        "--model",
        default="mobilenet_v2",
        help="a zoo name (see 'imgrec zoo') or a .keras file (default: mobilenet_v2)",
    )
    predict.add_argument("--weights", metavar="PATH", help="weights file for a zoo network")
    predict.add_argument(
        "--top", type=_positive_int, default=5, metavar="K", help="classes per image"
    )
    predict.add_argument("--csv", metavar="OUT", help="also write one CSV row per image")
    predict.set_defaults(run=_run_predict)

    zoo = verbs.add_parser(
        "zoo",
        parents=[common],
        help="list the pretrained networks and where their weights would come from",
        description="The Keras Applications table: size, accuracy, parameters, depth, "
        "input size, and where each network's ImageNet weights would come from now.",
    )
    zoo.add_argument(
        "--refresh", action="store_true", help="count parameters again instead of using the cache"
    )
    zoo.set_defaults(run=_run_zoo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit code (0 ok, 1 failed, 2 bad usage)."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ImgrecError as err:
        print(f"imgrec: error: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("imgrec: interrupted", file=sys.stderr)
        return 130


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _version() -> str:
    from imgrec import __version__

    return __version__


def _run_predict(args: argparse.Namespace) -> int:
    from imgrec.prediction import predict

    results = predict(args.images, args.model, top=args.top, weights=args.weights)
    if not results:
        raise ImgrecError(f"no images found in {' '.join(args.images)}")
    if args.csv:
        write_bytes_atomic(args.csv, _predictions_csv(results, args.top).encode())
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        classified = [r for r in results if "error" not in r]
        if classified and not args.quiet:
            print(f"{classified[0]['model']}, weights: {classified[0]['weights']}\n")
        for result in results:
            _print_prediction(result)
    failed = [r for r in results if "error" in r]
    if failed and not args.quiet:
        print(f"{len(failed)} of {len(results)} images could not be classified", file=sys.stderr)
    return 1 if failed else 0


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


def _predictions_csv(results: list[dict], top: int) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    header = ["image"]
    for rank in range(1, top + 1):
        header += [f"class_{rank}", f"probability_{rank}"]
    writer.writerow([*header, "time_ms", "error"])
    for result in results:
        row = [result["image"]]
        for c in result.get("top", []):
            row += [c["class"], f"{c['probability']:.6f}"]
        row += [""] * (len(header) - len(row))
        time_ms = f"{result['time_ms']:.3f}" if "time_ms" in result else ""
        writer.writerow([*row, time_ms, result.get("error", "")])
    return out.getvalue()


def _run_zoo(args: argparse.Namespace) -> int:
    from imgrec.models.zoo import zoo_table

    rows = zoo_table(refresh=args.refresh)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    columns = [
        ("Model", "model", "{}"),
        ("Size (MB)", "size_mb", "{:g}"),
        ("Top-1", "top1", "{:.1f}"),
        ("Top-5", "top5", "{:.1f}"),
        ("Parameters", "parameters", "{:,}"),
        ("Depth", "depth", "{}"),
        ("Input", "input_size", "{0}x{0}"),
        ("Weights now", "weights", "{}"),
    ]
    cells = [
        [fmt.format(row[key]) if row[key] is not None else "-" for _, key, fmt in columns]
        for row in rows
    ]
    titles = [title for title, _, _ in columns]
    widths = [max(len(title), *(len(r[i]) for r in cells)) for i, title in enumerate(titles)]
    for line in [titles, *cells]:
        padded = [
            cell.ljust(w) if i in (0, len(line) - 1) else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(line, widths, strict=True))
        ]
        print("  ".join(padded).rstrip())
    if not args.quiet and any(row["weights"] == "unavailable" for row in rows):
        print(
            "\nunavailable: no internet and no file in the Keras cache; "
            "'imgrec predict --model NAME' names the file to get."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
