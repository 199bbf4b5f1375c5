"""``imgrec evaluate`` and ``imgrec compare``: how good a model is, alone or against another."""

from __future__ import annotations

import argparse

from imgrec.cli import flags, upscale
from imgrec.cli.shell import Command, api_arguments, print_json, progress_level


def run_evaluate(args: argparse.Namespace) -> int:
    """Print accuracy, top-K accuracy, macro F1 and the per-class table."""
    if upscale.is_super_resolution_file(args.model):
        return upscale.run_evaluate_super_resolution(args)
    from imgrec.evaluation.report import evaluate

    result = evaluate(**api_arguments(args, rename={"top": "top_k"}))
    if args.json:
        return print_json(result)
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
        flags.DATASET.but(help=None),
        flags.flag("--report", metavar="DIR", help="write metrics.json and PNGs here"),
        flags.TOP,
        flags.RUNTIME,
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
