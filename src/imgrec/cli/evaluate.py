"""``imgrec evaluate`` and ``imgrec compare``: how good a model is, alone or against another."""

from __future__ import annotations

import argparse
import sys

from imgrec.cli import flags, upscale
from imgrec.cli.shell import Command, api_arguments, print_json, progress_level


def run_evaluate(args: argparse.Namespace) -> int:
    """Print accuracy, top-K accuracy, macro F1 and the per-class table."""
    from imgrec.core.errors import ImgrecError

    if args.tta is not None and (
        args.classifier is not None or upscale.is_super_resolution_file(args.model)
    ):
        raise ImgrecError(
            "--tta averages a classifier's answers over views of each image; "
            "it does not apply to --classifier or to an upscaling model"
        )
    if upscale.is_super_resolution_file(args.model):
        return upscale.run_evaluate_super_resolution(args)
    from imgrec.evaluation.report import evaluate

    if args.classifier is not None:
        return run_agreement(args)
    if args.dataset is None:  # a usage error, as when DATASET was a required argument
        print(
            "imgrec evaluate: error: the following arguments are required: dataset "
            "(or --classifier, when MODEL is a generator)",
            file=sys.stderr,
        )
        return 2
    if args.seed is not None:
        raise ImgrecError("--seed seeds the noise of --classifier; without it, it has no use")
    leave_out = ("classifier", "per_class", "seed")
    result = evaluate(**api_arguments(args, rename={"top": "top_k"}, leave_out=leave_out))
    if args.json:
        return print_json(result)
    tta = "" if result["tta"] == "none" else f", test-time augmentation {result['tta']}"
    print(f"{result['images']} images ({result['split']} split{tta})")
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


def run_agreement(args: argparse.Namespace) -> int:
    """A generator and ``--classifier``: print how often the classifier names the class asked."""
    from imgrec.core.errors import ImgrecError
    from imgrec.evaluation.agreement import agreement_table, generator_agreement

    if args.dataset is not None or args.report is not None:
        raise ImgrecError(
            "evaluate --classifier measures a generator: it takes no DATASET and no --report"
        )
    result = generator_agreement(
        args.model, args.classifier, per_class=args.per_class, seed=args.seed or 0,
        runtime=args.runtime,
    )  # fmt: skip
    if args.json:
        return print_json(result)
    print(
        f"{result['images']} generated images; the classifier named the class asked for "
        f"{result['agreement']:.1%} of them\n"
    )
    print(agreement_table(result))
    return 0


def run_compare(args: argparse.Namespace) -> int:
    """Train both pipelines, then print the comparison table and where it was written."""
    from imgrec.evaluation.comparison import compare, markdown_table

    result = compare(**api_arguments(args, verbose=progress_level(args)))
    if args.json:
        return print_json(result)
    print(markdown_table(result))
    print(f"wrote {result['markdown']}, {result['json']} and the charts in {args.out}")
    return 0


EVALUATE = Command(
    "evaluate",
    help="accuracy, per-class metrics, confusion matrix and mistakes of a model",
    flags=[
        flags.MODEL.but(help=None),
        flags.DATASET.but(nargs="?", help="the data set (not with --classifier)"),
        flags.flag("--report", metavar="DIR", help="write metrics.json and PNGs here"),
        flags.TOP,
        flags.RUNTIME,
        flags.TTA,
        flags.flag(
            "--classifier",
            metavar="MODEL",
            help="MODEL is a generator (imgrec train mnist --arch acgan): generate digits of "
            "every class and count how often this trained classifier (mnist-cnn) names "
            "the class asked for",
        ),
        flags.flag(
            "--per-class",
            type=flags.positive_int,
            default=100,
            metavar="N",
            help="with --classifier: images generated per class (100)",
        ),
        flags.SEED.but(help="with --classifier: seeds the noise (default 0)"),
    ],
    run=run_evaluate,
)

COMPARE = Command(
    "compare",
    help="train a CNN and a traditional pipeline on the same split and compare them",
    description="Train --cnn with 'imgrec train' and the --classic pipeline on the same "
    "split, test both on the same images, and write compare.json, compare.md and bar "
    "charts of accuracy, training time and inference speed into --out.",
    flags=[
        *flags.DATA,
        flags.flag("--cnn", default="cifar-cnn", metavar="ARCH", help="as train --arch"),
        flags.flag(
            "--classic",
            default="hog+svm",
            metavar="SPEC",
            help="FEATURES+CLASSIFIER or FEATURES+SELECTION+CLASSIFIER, each part written as "
            "for 'classic train' (hog+svm, hog,lbp+pca:100+svm:C=10) (default: hog+svm)",
        ),
        flags.EPOCHS.but(help="the CNN's epochs (its recipe's)"),
        flags.BATCH_SIZE.but(help="the CNN's batch size (64)"),
        flags.IMAGE_SIZE.but(help="N or HxW for photos (default: the CNN's)"),
        flags.JOBS,
        flags.OUT.but(default="compare", metavar="DIR", help="folder for the results"),
    ],
    run=run_compare,
)
