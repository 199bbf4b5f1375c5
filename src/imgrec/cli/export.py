"""``imgrec export``: a model as ONNX, TFLite or a SavedModel, checked against Keras."""

from __future__ import annotations

import argparse

from imgrec.cli import flags
from imgrec.cli.shell import Command, api_arguments, print_json


def run_export(args: argparse.Namespace) -> int:
    """Export; print the file, the check against Keras and, with --val, the accuracies."""
    from imgrec.deploy.exporter import export

    result = export(**api_arguments(args))
    if args.json:
        return print_json(result)
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


EXPORT = Command(
    "export",
    help="export a model as ONNX, TFLite or a SavedModel, checked against Keras",
    description="Convert a model for deployment, run the export beside the Keras model "
    "on sample inputs (and with --val on a data set) and print how far apart they are. "
    "A JSON sidecar beside the export holds the class names and the preprocessing.",
    flags=[
        flags.MODEL,
        flags.EXPORT_FORMAT,
        flags.OUT.but(required=True, metavar="PATH", help="the .onnx or .tflite file, or a folder"),
        flags.QUANTIZE,
        flags.flag(
            "--val",
            metavar="DATASET",
            help="measure both models' accuracy on this data set (the model's classes)",
        ),
        flags.WEIGHTS,
    ],
    run=run_export,
)
