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

from imgrec.core.errors import ImgrecError
from imgrec.core.storage import write_bytes_atomic

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
        help="a zoo name (see 'imgrec zoo'), a .keras file, or an .onnx file from "
        "'imgrec export' (default: mobilenet_v2)",
    )
    predict.add_argument("--weights", metavar="PATH", help="weights file for a zoo network")
    predict.add_argument(
        "--top", type=_positive_int, default=5, metavar="K", help="classes per image"
    )
    predict.add_argument("--csv", metavar="OUT", help="also write one CSV row per image")
    predict.add_argument(
        "--batch-size",
        type=_positive_int,
        default=1,
        metavar="N",
        help="images per forward pass; 32 classifies folders faster (default 1: each "
        "image timed alone)",
    )
    predict.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto", help=RUNTIME_HELP)
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
    evaluate.add_argument("--runtime", choices=RUNTIME_CHOICES, default="auto", help=RUNTIME_HELP)
    evaluate.set_defaults(run=_run_evaluate)

    serve = verbs.add_parser(
        "serve",
        parents=[common],
        help="serve the web page: classify, explain and look inside photos in a browser",
        description="Serve the page and its JSON API (/api/..., documented at /docs) until "
        "Ctrl-C. The page offers the zoo networks with weights on this machine and the "
        ".keras files in --models.",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: this machine only)"
    )
    serve.add_argument("--port", type=int, default=8000, help="TCP port, 0 for a free one")
    serve.add_argument("--models", metavar="DIR", help="a folder of .keras models to offer")
    serve.add_argument(
        "--allow-host",
        action="append",
        default=[],
        metavar="HOST",
        help="a host, address or network (10.0.0.0/8) that image URLs may reach although "
        "it is not public; repeat for more (default: none)",
    )
    serve.add_argument(
        "--upload-limit",
        type=float,
        default=10,
        metavar="MB",
        help="largest upload or image URL body, in MiB (default 10)",
    )
    serve.add_argument(
        "--cache-size", type=_positive_int, default=4, metavar="N", help="models kept loaded"
    )
    serve.add_argument(
        "--runtime",
        choices=RUNTIME_CHOICES,
        default="auto",
        help=RUNTIME_HELP + "; class activation maps and feature maps always run on keras",
    )
    serve.set_defaults(run=_run_serve)

    explain = verbs.add_parser(
        "explain",
        parents=[common],
        help="draw a Class Activation Map: where in a photo the network saw its class",
        description="Compute a Class Activation Map (CAM, Grad-CAM or Grad-CAM++) for the "
        "top class (or --class K) and write the photo beside the map's overlay as a PNG.",
    )
    explain.add_argument("model", metavar="MODEL", help="a zoo name or a .keras file")
    explain.add_argument("image", metavar="IMAGE")
    explain.add_argument(
        "--method", choices=["cam", "gradcam", "gradcam++"], default="gradcam", help="CAM method"
    )
    explain.add_argument("--layer", metavar="NAME", help="feature map layer (default: the last)")
    explain.add_argument(
        "--class", dest="class_index", type=int, metavar="K", help="class index to explain"
    )
    explain.add_argument(
        "--colormap", default="jet", help="jet, turbo, viridis, inferno, magma, ... (default jet)"
    )
    explain.add_argument("--alpha", type=float, default=0.5, help="the map's weight, 0 to 1")
    explain.add_argument("--out", required=True, metavar="PNG", help="the PNG to write")
    explain.set_defaults(run=_run_explain)

    layers = verbs.add_parser(
        "layers",
        parents=[common],
        help="list a network's layers; with a photo, draw every layer's feature maps",
        description="Print the layers (nested models opened) with output shapes and "
        "parameters. With IMAGE, write one PNG grid of feature maps per 4-D layer and "
        "an index.json into --out.",
    )
    layers.add_argument("model", metavar="MODEL", help="a zoo name or a .keras file")
    layers.add_argument("image", metavar="IMAGE", nargs="?")
    layers.add_argument("--out", metavar="DIR", help="folder for the PNGs and index.json")
    layers.add_argument(
        "--channels", type=_positive_int, default=16, help="channels drawn per layer"
    )
    layers.set_defaults(run=_run_layers)

    localize = verbs.add_parser(
        "localize",
        parents=[common],
        help="box and mask of the object a network recognised, from its CAM",
        description="Weakly supervised localisation (Zhou et al. 2016): threshold the "
        "class activation map, keep its largest region, and write the photo with box and "
        "mask, the mask, and a JSON with the box into --out.",
    )
    localize.add_argument("model", metavar="MODEL", help="a zoo name or a .keras file")
    localize.add_argument("image", metavar="IMAGE")
    localize.add_argument("--out", required=True, metavar="DIR", help="folder for the results")
    localize.add_argument(
        "--threshold", type=float, default=0.2, help="fraction of the map's maximum (0.2)"
    )
    localize.add_argument(
        "--method", choices=["cam", "gradcam", "gradcam++"], default="gradcam", help="CAM method"
    )
    localize.add_argument(
        "--class", dest="class_index", type=int, metavar="K", help="class index to localise"
    )
    localize.set_defaults(run=_run_localize)

    classic = verbs.add_parser(
        "classic",
        help="the traditional pipeline: hand-made features and a scikit-learn classifier",
    )
    classic_verbs = classic.add_subparsers(dest="classic_verb", required=True, metavar="VERB")
    classic_train = classic_verbs.add_parser(
        "train",
        parents=[common, _dataset_flags()],
        help="extract features, fit a classifier, save it as a .joblib file",
        description="Extract features (HOG, LBP, colour histograms, raw pixels) from a data "
        "set in parallel, scale them, optionally select some, fit a classifier and save the "
        "scikit-learn pipeline to --out, with its SHA-256 and metadata in <out>.json. "
        "'imgrec evaluate MODEL.joblib DATASET' reports on it like on a network. A .joblib "
        "file is a pickle: imgrec loads only files whose digest matches; load only your own.",
    )
    classic_train.add_argument(
        "--features",
        default="hog",
        metavar="LIST",
        help="comma-separated hog, lbp, color-hist, raw, each with :option=value parts "
        "(hog:cell=4:block=2:orientations=9, lbp:radius=1:points=8:grid=4, "
        "color-hist:bins=16, raw:size=16) (default: hog)",
    )
    classic_train.add_argument(
        "--select",
        default="none",
        metavar="SPEC",
        help="none, kbest:K (the K best features by ANOVA F) or pca:N (default: none)",
    )
    classic_train.add_argument(
        "--classifier",
        default="svm",
        metavar="SPEC",
        help="svm[:C=10:gamma=scale], linear-svm[:C=1], rf[:trees=200:depth=D], knn[:k=5] "
        "or logreg[:C=1] (default: svm, an RBF SVM)",
    )
    classic_train.add_argument(
        "--image-size", type=_image_size, help="N or HxW for photos (default 64x64)"
    )
    classic_train.add_argument(
        "--jobs", type=_positive_int, help="processes for feature extraction (default: cores)"
    )
    classic_train.add_argument("--out", default="model.joblib", help="the .joblib file to write")
    classic_train.set_defaults(run=_run_classic_train)

    compare = verbs.add_parser(
        "compare",
        parents=[common, _dataset_flags()],
        help="train a CNN and a traditional pipeline on the same split and compare them",
        description="Train --cnn with 'imgrec train' and the --classic pipeline on the same "
        "split, test both on the same images, and write compare.json, compare.md and bar "
        "charts of accuracy, training time and inference speed into --out.",
    )
    compare.add_argument("--cnn", default="cifar-cnn", metavar="ARCH", help="as train --arch")
    compare.add_argument(
        "--classic",
        default="hog+svm",
        metavar="SPEC",
        help="FEATURES+CLASSIFIER or FEATURES+SELECTION+CLASSIFIER, each part written as for "
        "'classic train' (hog+svm, hog,lbp+pca:100+svm:C=10) (default: hog+svm)",
    )
    compare.add_argument("--epochs", type=_positive_int, help="the CNN's epochs (its recipe's)")
    compare.add_argument("--batch-size", type=_positive_int, help="the CNN's batch size (64)")
    compare.add_argument(
        "--image-size", type=_image_size, help="N or HxW for photos (default: the CNN's)"
    )
    compare.add_argument(
        "--jobs", type=_positive_int, help="processes for feature extraction (default: cores)"
    )
    compare.add_argument("--out", default="compare", metavar="DIR", help="folder for the results")
    compare.set_defaults(run=_run_compare)

    detect = verbs.add_parser(
        "detect",
        parents=[common],
        help="find faces, eyes or cat faces in a photo with OpenCV's Haar cascades",
        description="Run one of OpenCV's Haar cascades over a photo; list the boxes and "
        "optionally draw them on a PNG.",
    )
    detect.add_argument("image", metavar="IMAGE")
    detect.add_argument(
        "--detector", choices=["face", "eyes", "cat-face"], default="face", help="what to find"
    )
    detect.add_argument("--out", metavar="PNG", help="write the photo with the boxes drawn")
    detect.add_argument(
        "--scale-factor",
        type=_above_one,
        default=1.1,
        help="window growth between scales; nearer 1 finds more, slower (default 1.1)",
    )
    detect.add_argument(
        "--min-neighbors",
        type=_non_negative_int,
        default=3,
        help="hits needed per detection; more means fewer false ones (default 3)",
    )
    detect.set_defaults(run=_run_detect)

    export = verbs.add_parser(
        "export",
        parents=[common],
        help="export a model as ONNX, TFLite or a SavedModel, checked against Keras",
        description="Convert a model for deployment, run the export beside the Keras model "
        "on sample inputs (and with --val on a data set) and print how far apart they are. "
        "A JSON sidecar beside the export holds the class names and the preprocessing.",
    )
    export.add_argument("model", metavar="MODEL", help="a zoo name or a .keras file")
    export.add_argument("--format", choices=EXPORT_FORMATS, default="onnx", help="default onnx")
    export.add_argument(
        "--out", required=True, metavar="PATH", help="the .onnx or .tflite file, or a folder"
    )
    export.add_argument(
        "--quantize",
        choices=EXPORT_QUANTIZATIONS,
        help="fp16: half-precision weights; int8: 8-bit weights and activations, "
        "calibrated on --val's training images (else on sample photos)",
    )
    export.add_argument(
        "--val",
        metavar="DATASET",
        help="measure both models' accuracy on this data set (the model's classes)",
    )
    export.add_argument("--weights", metavar="PATH", help="weights file for a zoo network")
    export.set_defaults(run=_run_export)
    return parser


# The export module imports Keras; the command line must not, to start fast.
EXPORT_FORMATS = ("onnx", "tflite", "savedmodel")
EXPORT_QUANTIZATIONS = ("fp16", "int8")
RUNTIME_CHOICES = ("auto", "keras", "onnx")
RUNTIME_HELP = (
    "what runs the network: onnx (ONNX Runtime, the model exported once and cached), "
    "keras, or auto (default): onnx when it is installed and the model exports, else keras"
)

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
    from imgrec.prediction import predict_many

    run = predict_many(
        args.images,
        args.model,
        top=args.top,
        weights=args.weights,
        runtime=args.runtime,
        batch_size=args.batch_size,
        verbose=not args.quiet,
    )
    results = run["results"]
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
        if len(results) > 1 and not args.quiet:
            print(
                f"{run['classified']} of {run['images']} images in {run['seconds']:.2f} s: "
                f"{run['images_per_second']:.1f} images/s ({run['runtime']} runtime, "
                f"batch size {run['batch_size']}, {run['threads']} decoding threads)"
            )
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
    from imgrec.models.summaries import summary

    print(summary(args.model))
    return 0


def _run_augment(args: argparse.Namespace) -> int:
    from imgrec.training.augment import augment_grid

    path = augment_grid(args.image, args.augment, args.out, count=args.count, seed=args.seed)
    print(json.dumps({"grid": str(path)}) if args.json else f"wrote {path}")
    return 0


def _run_train(args: argparse.Namespace) -> int:
    from imgrec.training.fit import train

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
    from imgrec.evaluation.report import evaluate

    result = evaluate(
        args.model, args.dataset, report=args.report, top_k=args.top, runtime=args.runtime
    )
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


def _run_serve(args: argparse.Namespace) -> int:
    from imgrec.web.server import serve

    if args.upload_limit <= 0:
        raise ImgrecError(f"--upload-limit must be above 0, got {args.upload_limit}")

    def announce(url: str) -> None:
        line = json.dumps({"url": url}) if args.json else f"imgrec: serving {url} (Ctrl-C stops)"
        print(line, flush=True)

    serve(
        args.host,
        args.port,
        models_dir=args.models,
        upload_limit=round(args.upload_limit * 2**20),
        allow_hosts=args.allow_host,
        cache_size=args.cache_size,
        runtime=args.runtime,
        log_level="warning" if args.quiet or args.json else "info",
        on_ready=announce,
    )
    return 0


def _run_explain(args: argparse.Namespace) -> int:
    from imgrec.explanation.cam import explain

    result = explain(
        args.model,
        args.image,
        method=args.method,
        layer=args.layer,
        class_index=args.class_index,
        colormap=args.colormap,
        alpha=args.alpha,
        out=args.out,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"{result['image']}: {result['class']} (class {result['index']}, "
        f"{result['probability']:.2%}), {result['method']} on layer {result['layer']}"
    )
    print(f"wrote {result['overlay_png']}")
    return 0


def _run_layers(args: argparse.Namespace) -> int:
    from imgrec.explanation.layer_view import layers_report

    result = layers_report(args.model, args.image, args.out, channels=args.channels)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
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


def _run_localize(args: argparse.Namespace) -> int:
    from imgrec.explanation.localization import localize

    result = localize(
        args.model,
        args.image,
        method=args.method,
        threshold=args.threshold,
        class_index=args.class_index,
        out=args.out,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
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


def _run_classic_train(args: argparse.Namespace) -> int:
    from imgrec.classic.pipeline import classic_train

    result = classic_train(
        args.dataset,
        features=args.features,
        select=args.select,
        classifier=args.classifier,
        out=args.out,
        image_size=args.image_size,
        val_split=args.val_split,
        limit_per_class=args.limit_per_class,
        seed=args.seed,
        jobs=args.jobs,
        progress=not (args.quiet or args.json),
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    for skipped in result["skipped"]:
        print(f"skipped {skipped['path']}: {skipped['reason']}")
    if result["skipped"]:
        print(f"{len(result['skipped'])} files skipped")
    seconds = result["seconds"]
    print(
        f"{result['spec']}: {result['features']:,} features per image, "
        f"{result['train_images']:,} training images"
    )
    print(
        f"features {seconds['features']:.1f} s, fit {seconds['fit']:.1f} s, "
        f"total {seconds['total']:.1f} s"
    )
    if result["val_accuracy"] is not None:
        print(f"validation accuracy {result['val_accuracy']:.2%}")
    print(f"model: {result['model']} (digest and metadata: {result['sidecar']})")
    return 0


def _run_compare(args: argparse.Namespace) -> int:
    from imgrec.evaluation.comparison import compare, markdown_table

    result = compare(
        args.dataset,
        cnn=args.cnn,
        classic=args.classic,
        out=args.out,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        val_split=args.val_split,
        limit_per_class=args.limit_per_class,
        seed=args.seed,
        jobs=args.jobs,
        verbose=0 if args.quiet or args.json else 1,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(markdown_table(result))
    print(f"wrote {result['markdown']}, {result['json']} and the charts in {args.out}")
    return 0


def _above_one(text: str) -> float:
    value = float(text)
    if not value > 1:
        raise argparse.ArgumentTypeError(f"must be above 1, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _run_detect(args: argparse.Namespace) -> int:
    from imgrec.classic.detection import detect

    result = detect(
        args.image,
        args.detector,
        out=args.out,
        scale_factor=args.scale_factor,
        min_neighbors=args.min_neighbors,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    boxes = result["boxes"]
    print(f"{result['image']}: {len(boxes)} {args.detector} box{'es' if len(boxes) != 1 else ''}")
    for box in boxes:
        print(f"  x {box['x']}, y {box['y']}, {box['width']} x {box['height']}")
    if result["out"]:
        print(f"wrote {result['out']}")
    return 0


def _run_export(args: argparse.Namespace) -> int:
    from imgrec.deploy.exporter import export

    result = export(
        args.model,
        args.out,
        format=args.format,
        quantize=args.quantize,
        val=args.val,
        weights=args.weights,
    )
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    kind = f"{result['format']}, {result['quantize'] or 'float32'}"
    size = f"{result['bytes'] / 1e6:.1f} MB"
    print(f"wrote {result['path']} ({kind}, {size}) in {result['seconds']:.1f} s")
    print(f"sidecar: {result['sidecar']}")
    check = result["check"]
    bound = f" (bound {check['tolerance']:g})" if check["tolerance"] is not None else ""
    print(
        f"largest probability difference from Keras: {check['max_abs_diff']:.2g}{bound} "
        f"on {check['inputs']}; same top class on {check['top1_agreement']:.0%} of the photos"
    )
    if result["calibration"]:
        print(f"int8 calibration: {result['calibration']}")
    accuracy = result["accuracy"]
    if accuracy:
        print(
            f"accuracy on {accuracy['dataset']} ({accuracy['split']} split, "
            f"{accuracy['images']} images): Keras {accuracy['keras']:.2%}, export "
            f"{accuracy['exported']:.2%}, change {accuracy['change'] * 100:+.2f} points"
        )
    elif result["quantize"] and not args.quiet:
        print("accuracy not measured: give --val DATASET to compare on a validation set")
    return 0


if __name__ == "__main__":
    sys.exit(main())
