"""Training throughput of `imgrec train` against plain Keras `model.fit`, same run.

Usage: python bench/train_throughput.py [--epochs 3] [--folder-images 4000] [--repeats 1]

Two data sets, each trained both ways on the same network (cifar-cnn, adapted to
the data), batch 64, with the same validation data:
- Fashion-MNIST (the Debian package): imgrec.train("fashion-mnist") against
  model.fit on the arrays already in memory;
- a folder of JPEGs written from Fashion-MNIST training images (3 channels, 32x32):
  imgrec.train on the folder (its decode cache built beforehand: the target is the
  steady state) against model.fit on the decoded arrays.
Every variant runs in its own process, so that peak memory (max RSS) is its own.
Images per second count training images only; the first epoch (graph tracing) is
left out of both. With --repeats N the two ways take turns N times and each keeps
its best run, so that a noisy neighbour on a shared machine slows one run, not the
comparison. The ratio imgrec / Keras is what to compare across machines.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

BATCH = 64


def _measure(variant: str, dataset: str, epochs: int, limit: int | None) -> dict:
    """Runs in a child process: train one way and report images/s and peak memory."""
    import keras
    from step_timer import steady_images_per_second, step_timer

    import imgrec.training.fit as training
    from imgrec.datasets import load_dataset
    from imgrec.models.chapter import build_chapter_network

    size = (32, 32) if variant.endswith("folder") else None
    data = load_dataset(dataset, image_size=size, limit_per_class=limit)
    timer = step_timer()
    if variant.startswith("keras"):
        keras.utils.set_random_seed(0)
        x, y = (
            np.asarray(data.train.images),
            np.asarray(data.train.labels),
        )
        model = build_chapter_network("cifar-cnn", x.shape[1:], len(data.class_names))
        model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
        validation = (np.asarray(data.val.images), np.asarray(data.val.labels))
        model.fit(
            x,
            y,
            batch_size=BATCH,
            epochs=epochs,
            validation_data=validation,
            callbacks=[timer],
            verbose=0,
        )
    else:
        with tempfile.TemporaryDirectory() as folder:
            training.train(
                data,
                "cifar-cnn",
                out=Path(folder) / "m.keras",
                epochs=epochs,
                batch_size=BATCH,
                lr=1e-3,
                verbose=0,
                patience=0,
                callbacks=[timer],
            )
    return {
        "variant": variant,
        "images_per_s": steady_images_per_second(timer.seconds, len(data.train.labels)),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _write_folder(root: Path, count: int) -> None:
    from PIL import Image

    from imgrec.datasets import load_dataset

    data = load_dataset("fashion-mnist", val_split=0)
    for name in data.class_names:
        (root / name.replace("/", "-")).mkdir(parents=True, exist_ok=True)
    per_class = count // len(data.class_names)
    written = dict.fromkeys(range(len(data.class_names)), 0)
    for image, label in zip(data.train.images, data.train.labels, strict=True):
        if written[int(label)] >= per_class:
            continue
        name = data.class_names[int(label)].replace("/", "-")
        rgb = Image.fromarray(image[..., 0]).convert("RGB").resize((32, 32))
        rgb.save(root / name / f"{written[int(label)]:05d}.jpg", quality=90)
        written[int(label)] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--folder-images", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=1, help="turns each way takes")
    parser.add_argument(
        "--limit-per-class", type=int, help="Fashion-MNIST images per class (default: all)"
    )
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.child:
        variant, dataset, epochs, limit = args.child
        limit = int(limit) if limit != "all" else None
        print(json.dumps(_measure(variant, dataset, int(epochs), limit)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "jpegs"
        _write_folder(folder, args.folder_images)
        env = os.environ | {"PYTHONUNBUFFERED": "1"}
        # Build the folder's decode cache once, outside the measurement.
        subprocess.run(
            [
                sys.executable,
                "-c",
                f"from imgrec.datasets import load_dataset; load_dataset({str(folder)!r}, "
                "image_size=(32, 32), progress=False)",
            ],
            check=True,
            env=env,
        )
        print(f"{'data set':<15} {'variant':<8} {'images/s':>9} {'peak MB':>8} {'ratio':>6}")
        for dataset, suffix in (("fashion-mnist", ""), (str(folder), "-folder")):
            rows = {}
            for variant in ("keras", "imgrec") * args.repeats:
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        variant + suffix,
                        dataset,
                        str(args.epochs),
                        str(args.limit_per_class or "all"),
                    ],
                    check=True,
                    capture_output=True,
                    text=True,
                    env=env,
                ).stdout
                row = json.loads(out.strip().splitlines()[-1])
                if variant not in rows or row["images_per_s"] > rows[variant]["images_per_s"]:
                    rows[variant] = row
            ratio = rows["imgrec"]["images_per_s"] / rows["keras"]["images_per_s"]
            label = "fashion-mnist" if not suffix else "JPEG folder"
            for variant, row in rows.items():
                shown = f"{ratio:6.2f}" if variant == "imgrec" else ""
                print(
                    f"{label:<15} {variant:<8} {row['images_per_s']:9.0f} "
                    f"{row['peak_rss_mb']:8.0f} {shown:>6}"
                )


if __name__ == "__main__":
    main()
