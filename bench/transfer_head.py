"""`--transfer head` on cached features against the frozen backbone inside the loop.

Usage: python bench/transfer_head.py [--limit-per-class 200] [--epochs 10] [--size 96]

Both train the same new classifier on MobileNetV2 (offline weights) over the same
Fashion-MNIST images and split, for the same epochs:
- imgrec: `imgrec.train(..., transfer="head")`: backbone features computed once
  and cached on disk, the head trained on them; timed with an empty feature cache
  (what a first run costs) and again with the cache built;
- in the loop: the same model built by imgrec, backbone frozen, `model.fit` on the
  images, so the backbone runs on every image of every epoch.
Prints the wall time and validation accuracy of each, and the speed-up.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit-per-class", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--size", type=int, default=96)
    args = parser.parse_args()

    import keras

    from imgrec.core.storage import imgrec_home
    from imgrec.datasets import load_dataset
    from imgrec.models.pretrained import load_backbone
    from imgrec.training import compile_classifier, train
    from imgrec.training.transfer import build_transfer_model

    data = load_dataset("fashion-mnist", limit_per_class=args.limit_per_class, seed=0)
    size = (args.size, args.size)
    shutil.rmtree(imgrec_home() / "features", ignore_errors=True)
    runs = {}
    with tempfile.TemporaryDirectory() as folder:
        for label in ("imgrec head, cold cache", "imgrec head, warm cache"):
            start = time.perf_counter()
            result = train(
                data, "mobilenet_v2", transfer="head", image_size=size, epochs=args.epochs,
                patience=0, out=Path(folder) / "head.keras", verbose=0, seed=0,
            )  # fmt: skip
            runs[label] = (time.perf_counter() - start, result["best_val_accuracy"])

        keras.utils.set_random_seed(0)
        start = time.perf_counter()
        backbone, preprocessing, _ = load_backbone("mobilenet_v2", (*size, 3))
        backbone.trainable = False
        model = build_transfer_model(
            backbone, preprocessing, data.train.images.shape[1:], len(data.class_names)
        )
        compile_classifier(model, 1e-3)
        history = model.fit(
            data.train.images, data.train.labels, batch_size=64, epochs=args.epochs,
            validation_data=(data.val.images, data.val.labels), verbose=0,
        )  # fmt: skip
        runs["frozen backbone in the loop"] = (
            time.perf_counter() - start,
            max(history.history["val_accuracy"]),
        )

    baseline = runs["frozen backbone in the loop"][0]
    print(f"{len(data.train.labels)} training images, {args.epochs} epochs, input {size}")
    print(f"{'run':<30} {'seconds':>8} {'val acc':>8} {'speed-up':>9}")
    for label, (seconds, accuracy) in runs.items():
        print(f"{label:<30} {seconds:8.1f} {accuracy:8.2%} {baseline / seconds:9.1f}")


if __name__ == "__main__":
    main()
