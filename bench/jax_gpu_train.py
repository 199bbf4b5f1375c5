"""Training speed and accuracy on a GPU machine that has JAX but no TensorFlow.

Usage (imgrec and its pure-Python needs on the path, Keras on JAX):

    KERAS_BACKEND=jax python bench/jax_gpu_train.py /path/to/fashion-mnist \\
        [--arch vgg-bn] [--epochs 15] [--batch-size 256] [--devices N|all]

The folder holds Fashion-MNIST's four IDX files (train/t10k images and labels,
gzipped or not). It trains with `imgrec.train` exactly as on a laptop and prints
the device, images per second (training steps only, first epoch left out) and the
test accuracy, as one JSON line at the end. With --devices it trains data-parallel
on that many of the machine's GPUs (`all`: every one); the batch size stays the
global one, so compare images per second at the same --batch-size.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fashion_mnist", help="folder with the Fashion-MNIST IDX files")
    parser.add_argument("--arch", default="vgg-bn")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--limit-per-class", type=int, help="for a quick smoke run")
    parser.add_argument("--devices", default="1", help="N devices, or all (default 1)")
    args = parser.parse_args()

    import keras
    from step_timer import steady_images_per_second, step_timer

    from imgrec.datasets import load_dataset
    from imgrec.evaluation.report import evaluate
    from imgrec.training.fit import train

    data = load_dataset(args.fashion_mnist, limit_per_class=args.limit_per_class, progress=False)
    timer = step_timer()
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "model.keras"
        result = train(
            data,
            args.arch,
            out=out,
            epochs=args.epochs,
            batch_size=args.batch_size,
            verbose=2,
            callbacks=[timer],
            devices=args.devices,
        )
        metrics = evaluate(out, data)
    left_out = (result.get("distribution") or {}).get("images_left_out", {}).get("train", 0)
    trained = len(data.train.labels) - left_out
    report = {
        "backend": keras.backend.backend(),
        "device": _device(),
        "arch": args.arch,
        "epochs": result["epochs_done"],
        "batch_size": args.batch_size,
        "devices": (result.get("distribution") or {}).get("devices", 1),
        "train_images_per_s": steady_images_per_second(timer.seconds, trained),
        "test_accuracy": metrics["accuracy"],
        "wall_s": result["seconds"],
    }
    print(json.dumps(report))


def _device() -> str:
    if os.environ.get("KERAS_BACKEND") == "jax":
        import jax

        devices = jax.devices()
        return f"{devices[0]} (of {len(devices)})"
    return "cpu"


if __name__ == "__main__":
    main()
