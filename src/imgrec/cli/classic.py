"""``imgrec classic train`` and ``imgrec detect``: the traditional pipeline and OpenCV."""

from __future__ import annotations

import argparse

from imgrec.cli import flags
from imgrec.cli.shell import Command, api_arguments, print_json


def run_classic_train(args: argparse.Namespace) -> int:
    """Fit the pipeline; print the skipped files, the timings and where it was saved."""
    from imgrec.classic.pipeline import classic_train

    result = classic_train(**api_arguments(args, progress=not (args.quiet or args.json)))
    if args.json:
        return print_json(result)
    for skipped in result["skipped"]:
        print(f"skipped {skipped['path']}: {skipped['reason']}")
    if result["skipped"]:
        print(f"{len(result['skipped'])} files skipped")
    seconds = result["seconds"]
    virtual = result["virtual_images"]
    print(
        f"{result['spec']}: {result['features']:,} features per image, "
        f"{result['train_images']:,} training images"
        + (f" and {virtual:,} virtual ones" if virtual else "")
    )
    print(
        f"features {seconds['features']:.1f} s, fit {seconds['fit']:.1f} s, "
        + (f"virtual {seconds['virtual']:.1f} s, " if virtual else "")
        + f"total {seconds['total']:.1f} s"
    )
    if result["val_accuracy"] is not None:
        print(f"validation accuracy {result['val_accuracy']:.2%}")
    print(f"model: {result['model']} (digest and metadata: {result['sidecar']})")
    return 0


def run_detect(args: argparse.Namespace) -> int:
    """Print the boxes found (and where the drawing went)."""
    from imgrec.classic.detection import detect

    result = detect(**api_arguments(args))
    if args.json:
        return print_json(result)
    boxes = result["boxes"]
    print(f"{result['image']}: {len(boxes)} {args.detector} box{'es' if len(boxes) != 1 else ''}")
    for box in boxes:
        print(f"  x {box['x']}, y {box['y']}, {box['width']} x {box['height']}")
    if result["out"]:
        print(f"wrote {result['out']}")
    return 0


CLASSIC_TRAIN = Command(
    "train",
    help="extract features, fit a classifier, save it as a .joblib file",
    description="Extract features (HOG, LBP, colour histograms, raw pixels) from a data "
    "set in parallel, scale them, optionally select some, fit a classifier and save the "
    "scikit-learn pipeline to --out, with its SHA-256 and metadata in <out>.json. "
    "'imgrec evaluate MODEL.joblib DATASET' reports on it like on a network. A .joblib "
    "file is a pickle: imgrec loads only files whose digest matches; load only your own.",
    flags=[
        *flags.DATA,
        flags.flag(
            "--features",
            default="hog",
            metavar="LIST",
            help="comma-separated hog, lbp, color-hist, raw, each with :option=value parts "
            "(hog:cell=4:block=2:orientations=9:sqrt=1, lbp:radius=1:points=8:grid=4, "
            "color-hist:bins=16, raw:size=16) (default: hog)",
        ),
        flags.flag(
            "--select",
            default="none",
            metavar="SPEC",
            help="none, kbest:K (the K best features by ANOVA F) or pca:N (default: none)",
        ),
        flags.flag(
            "--classifier",
            default="svm",
            metavar="SPEC",
            help="svm[:C=10:gamma=scale:virtual=1], linear-svm[:C=1], rf[:trees=200:depth=D], "
            "knn[:k=5] or logreg[:C=1] (default: svm, an RBF SVM; virtual=1 fits again with "
            "the support vectors moved a pixel each way)",
        ),
        flags.IMAGE_SIZE.but(help="N or HxW for photos (default 64x64)"),
        flags.JOBS,
        flags.OUT.but(default="model.joblib", help="the .joblib file to write"),
    ],
    run=run_classic_train,
)

CLASSIC = Command(
    "classic",
    help="the traditional pipeline: hand-made features and a scikit-learn classifier",
    verbs=[CLASSIC_TRAIN],
)

DETECT = Command(
    "detect",
    help="find faces, eyes or cat faces in a photo with OpenCV's Haar cascades",
    description="Run one of OpenCV's Haar cascades over a photo; list the boxes and "
    "optionally draw them on a PNG.",
    flags=[
        flags.IMAGE,
        flags.DETECTOR,
        flags.OUT.but(metavar="PNG", help="write the photo with the boxes drawn"),
        flags.flag(
            "--scale-factor",
            type=flags.above_one,
            default=1.1,
            help="window growth between scales; nearer 1 finds more, slower (default 1.1)",
        ),
        flags.flag(
            "--min-neighbors",
            type=flags.non_negative_int,
            default=3,
            help="hits needed per detection; more means fewer false ones (default 3)",
        ),
    ],
    run=run_detect,
)
