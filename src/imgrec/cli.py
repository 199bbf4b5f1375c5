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

    datasets = verbs.add_parser(
        "datasets",
        parents=[common],
        help="list the built-in data sets, whether each is here, and how to get it",
    )
    datasets.set_defaults(run=_run_datasets)

    summary = verbs.add_parser(
        "summary",
        parents=[common],
        help="print Keras's summary of an architecture, a zoo network or a .keras file",
    )
    summary.add_argument("model", metavar="ARCH|MODEL.keras")
    summary.set_defaults(run=_run_summary)

    augment = verbs.add_parser(
        "augment",
        parents=[common],
        help="draw a grid of augmented copies of a photo",
        description="Apply an augmentation spec (as 'imgrec train --augment' would) to one "
        "photo several times and draw the copies in a grid.",
    )
    augment.add_argument("image", metavar="IMAGE")
    augment.add_argument("--augment", required=True, metavar="SPEC", help=AUGMENT_HELP)
    augment.add_argument("--out", default="augment.png", help="the PNG to write")
    augment.add_argument("--count", type=_positive_int, default=16, help="copies to draw")
    augment.add_argument("--seed", type=int, default=0)
    augment.set_defaults(run=_run_augment)

    train = verbs.add_parser(
        "train",
        parents=[common, _dataset_flags()],
        help="train a network on a data set, with augmentation, checkpoints and resume",
        description="Train a network on a folder, an archive or a built-in data set. The "
        "best model goes to --out; the latest state to <out>.last.keras. Ctrl-C saves and "
        "stops; --resume continues.",
    )
    train.add_argument(
        "--arch",
        default="cifar-cnn",
        help="a seed network (cifar-cnn, catdog-cnn, mnist-cnn, vgg-bn) or a zoo network "
        "for transfer learning (mobilenet_v2, efficientnet_lite0, ...)",
    )
    train.add_argument(
        "--transfer",
        choices=["head", "finetune", "scratch"],
        help="with a zoo network: train a new head on frozen features (default), "
        "fine-tune the upper layers too, or train the architecture from scratch",
    )
    train.add_argument("--freeze", type=int, metavar="N", help="finetune: keep N layers frozen")
    train.add_argument(
        "--unfreeze-from", metavar="LAYER", help="finetune: train from this layer on"
    )
    train.add_argument("--epochs", type=_positive_int, help="total epochs (default: the recipe's)")
    train.add_argument(
        "--batch-size", type=_positive_int, help="images per step (default 64; on resume the run's)"
    )
    train.add_argument("--lr", type=float, help="learning rate (default: the recipe's)")
    train.add_argument(
        "--image-size", type=_image_size, help="N or HxW for photos (default: the network's)"
    )
    train.add_argument("--augment", default="", metavar="SPEC", help=AUGMENT_HELP)
    train.add_argument("--out", default="model.keras", help="where the best model goes")
    train.add_argument("--resume", metavar="MODEL.keras", help="continue a saved run")
    train.add_argument("--class-weight", choices=["balanced"], help="weigh rare classes up")
    train.add_argument(
        "--patience", type=int, default=5, help="epochs without progress before stopping"
    )
    train.set_defaults(run=_run_train)

    evaluate = verbs.add_parser(
        "evaluate",
        parents=[common],
        help="accuracy, per-class metrics, confusion matrix and mistakes of a model",
    )
    evaluate.add_argument("model", metavar="MODEL")
    evaluate.add_argument("dataset", metavar="DATASET")
    evaluate.add_argument("--report", metavar="DIR", help="write metrics.json and PNGs here")
    evaluate.add_argument("--top", type=_positive_int, default=5, metavar="K", help="top-K")
    evaluate.set_defaults(run=_run_evaluate)
    return parser


AUGMENT_HELP = (
    "comma-separated: flip, rotate=DEGREES, zoom=F, shift=F, brightness=F, contrast=F "
    "(e.g. flip,rotate=15,zoom=0.1)"
)


def _dataset_flags() -> argparse.ArgumentParser:
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument("dataset", metavar="DATASET", help="a folder, archive or built-in name")
    flags.add_argument(
        "--val-split", type=float, help="validation fraction (default 0.1; on resume the run's)"
    )
    flags.add_argument("--limit-per-class", type=_positive_int, help="at most N images a class")
    flags.add_argument(
        "--seed",
        type=int,
        help="seeds split, shuffling and weights (default 0; on resume the run's)",
    )
    return flags


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


def _image_size(text: str) -> tuple[int, int]:
    parts = text.lower().split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}") from None
    if len(sizes) not in (1, 2) or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"expected N or HxW, got {text!r}")
    return (sizes[0], sizes[-1])


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


def _run_datasets(args: argparse.Namespace) -> int:
    from imgrec.datasets import list_datasets

    rows = list_datasets()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(row["name"]) for row in rows)
    for row in rows:
        state = f"here: {row['where']}" if row["present"] else f"missing: {row['how_to_get']}"
        print(f"{row['name']:<{width}}  {row['description']}\n{'':<{width}}  {state}")
    return 0


def _run_summary(args: argparse.Namespace) -> int:
    from imgrec.summaries import summary

    print(summary(args.model))
    return 0


def _run_augment(args: argparse.Namespace) -> int:
    from imgrec.augment import augment_grid

    path = augment_grid(args.image, args.augment, args.out, count=args.count, seed=args.seed)
    print(json.dumps({"grid": str(path)}) if args.json else f"wrote {path}")
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from imgrec.training import train

    result = train(
        args.dataset,
        args.arch,
        out=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        image_size=args.image_size,
        augment=args.augment,
        resume=args.resume,
        class_weight=args.class_weight,
        val_split=args.val_split,
        limit_per_class=args.limit_per_class,
        seed=args.seed,
        patience=args.patience,
        verbose=0 if args.quiet or args.json else 1,
        transfer=args.transfer,
        freeze=args.freeze,
        unfreeze_from=args.unfreeze_from,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
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
    if result["interrupted"]:
        print(
            f"interrupted after epoch {result['epochs_done']} of {result['epochs_asked']}; "
            f"continue with: imgrec train {args.dataset} --resume {result['last']}"
        )
    best = result["best_val_accuracy"]
    accuracy = f" (validation accuracy {best:.2%})" if best is not None else ""
    print(
        f"{result['epochs_done']} epochs in {result['seconds']:.0f} s; "
        f"best model: {result['model']}{accuracy}"
    )
    print(f"history: {result['history']}\ncurves: {result['curves']}")
    return 0


def _run_evaluate(args: argparse.Namespace) -> int:
    from imgrec.evaluation import evaluate

    result = evaluate(args.model, args.dataset, report=args.report, top_k=args.top)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['images']} images ({result['split']} split)")
    print(f"accuracy       {result['accuracy']:.2%}")
    print(f"top-{result['top_k']} accuracy {result['top_k_accuracy']:.2%}")
    print(f"macro F1       {result['macro_f1']:.4f}\n")
    width = max(len(name) for name in result["per_class"])
    print(f"{'class':<{width}}  precision  recall     F1  support")
    for name, m in result["per_class"].items():
        print(
            f"{name:<{width}}  {m['precision']:9.3f}  {m['recall']:6.3f}  "
            f"{m['f1']:5.3f}  {m['support']:7d}"
        )
    if args.report:
        print(f"\nreport: {args.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
