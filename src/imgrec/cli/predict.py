"""``imgrec predict``: the top classes of photos, as a table, JSON, a CSV file or a results
table (``--out``), in this process or on Ray (``--engine ray``)."""

from __future__ import annotations

import argparse
import sys

from imgrec.cli import flags
from imgrec.cli.shell import Command, api_arguments, print_json
from imgrec.core.choices import ENGINES
from imgrec.core.errors import ImgrecError
from imgrec.core.storage import write_bytes_atomic

# The CSV layout lives with the other results tables; its names stay importable from here.
from imgrec.core.tables import FORMULA_STARTS, ResultsFile, predictions_csv, result_row, text_cell

__all__ = ["COMMAND", "FORMULA_STARTS", "predictions_csv", "run_predict", "text_cell"]

BAR_WIDTH = 24
# Images per forward pass when --batch-size is not given: each image timed alone here; a
# batch that keeps a Ray worker busy there.
DEFAULT_BATCH = {"local": 1, "ray": 32}
# Flags of the Ray engine alone; predict_many takes none of them.
RAY_ONLY = ("workers", "address")
ENGINE_FLAGS = ("engine", "out", "resume", "csv", *RAY_ONLY)


def run_predict(args: argparse.Namespace) -> int:
    """Classify ``args.images``; exit code 1 when any image could not be classified."""
    if args.resume and not args.out:
        raise ImgrecError("--resume needs --out: the results table to add the missing rows to")
    if args.batch_size is None:
        args.batch_size = DEFAULT_BATCH[args.engine]
    if args.engine == "ray":
        return _run_ray(args)
    given = [f"--{name}" for name in RAY_ONLY if getattr(args, name) is not None]
    if given:
        raise ImgrecError(f"{' and '.join(given)}: only with --engine ray")
    from imgrec.prediction import expand_inputs, predict_many

    table = ResultsFile(args.out, args.top, resume=args.resume) if args.out else None
    images = args.images
    if table is not None and args.resume:
        images = table.missing(str(item) for item in expand_inputs(args.images))
        if not images:
            print(f"every image is in {args.out} already", file=sys.stderr)
            return 0
    passed = api_arguments(args, leave_out=ENGINE_FLAGS, verbose=not args.quiet)
    batch = predict_many(**(passed | {"images": images}))
    results = batch["results"]
    if not results:
        raise ImgrecError(f"no images found in {' '.join(args.images)}")
    if args.csv:
        write_bytes_atomic(args.csv, predictions_csv(results, args.top).encode())
    if table is not None:
        table.write([result_row(result, args.top) for result in results])
        table.close()
    if args.json:
        print_json(results)
    else:
        _print_table(results, batch, quiet=args.quiet)
    failed = [r for r in results if "error" in r]
    if failed and not args.quiet:
        print(f"{len(failed)} of {len(results)} images could not be classified", file=sys.stderr)
    return 1 if failed else 0


def _run_ray(args: argparse.Namespace) -> int:
    """``--engine ray``: rows go to ``--out`` as they come; a summary is printed."""
    if not args.out:
        raise ImgrecError("--engine ray writes its rows to --out results.parquet (or .csv, .jsonl)")
    if args.csv:
        raise ImgrecError("--engine ray: give --out results.csv instead of --csv")
    from imgrec.prediction.ray_batch import predict_ray

    passed = api_arguments(args, leave_out=("engine", "images", "csv"), verbose=not args.quiet)
    summary = predict_ray(args.images, **passed)
    if args.json:
        print_json(summary)
    elif not args.quiet and summary["skipped"] == summary["images"]:
        print(f"every image is in {summary['out']} already")
    elif not args.quiet:
        print(_ray_summary(summary))
    return 1 if summary["failed"] else 0


def _ray_summary(summary: dict) -> str:
    """What a Ray run did, in one line: rows, time, start-up, rate once running."""
    steady = summary["steady_images_per_second"]
    tta = summary.get("tta", "none")
    return (
        f"{summary['classified']} classified, {summary['failed']} failed, "
        f"{summary['skipped']} already in {summary['out']}: {summary['seconds']:.1f} s on "
        f"{summary['workers']} Ray workers, the first rows after "
        f"{summary['first_rows_seconds']:.1f} s"
        + (f", then {steady:.1f} images/s" if steady else "")
        + f" ({summary['runtime']} runtime, batch size {summary['batch_size']}"
        + (f", test-time augmentation {tta}" if tta != "none" else "")
        + ")"
    )


def _print_table(results: list[dict], batch: dict, *, quiet: bool) -> None:
    classified = [r for r in results if "error" not in r]
    if classified and not quiet:
        tta = batch["tta"]
        tta = "" if tta == "none" else f", test-time augmentation {tta}"
        print(f"{classified[0]['model']}, weights: {classified[0]['weights']}{tta}\n")
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
            metavar="N",
            help="images per forward pass; 32 classifies folders faster (default 1: each "
            "image timed alone; 32 with --engine ray)",
        ),
        flags.RUNTIME,
        flags.TTA.but(
            help=flags.TTA.options["help"] + ". On every runtime, ONNX Runtime included, "
            "and with --engine ray; 'imgrec explain' still maps the image itself"
        ),
        flags.flag(
            "--engine",
            choices=ENGINES,
            default="local",
            help="local (default): this process; ray: a pool of Ray workers, each holding "
            "the model (pip install 'imgrec[ray]'); then IMAGE may also be a glob, a .txt "
            "file of paths or a URI (s3://, gs://)",
        ),
        flags.flag(
            "--workers",
            type=flags.positive_int,
            metavar="N",
            help="--engine ray: worker processes (default: one per CPU)",
        ),
        flags.flag(
            "--address",
            metavar="ADDR",
            help="--engine ray: the Ray cluster (default: $RAY_ADDRESS, else a local Ray)",
        ),
        flags.OUT.but(
            metavar="RESULTS",
            help="write one row per image to RESULTS.parquet, .csv or .jsonl (the --csv "
            "columns), as they come with --engine ray",
        ),
        flags.flag(
            "--resume",
            action="store_true",
            help="with --out: keep its rows and classify only the images it lacks",
        ),
    ],
    run=run_predict,
)
