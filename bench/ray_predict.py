"""Batch inference: ``imgrec predict --engine ray`` against the local engine, on the same cores.

Usage: python bench/ray_predict.py [--images 5000] [--workers 2] [--batch-size 32]

Makes a folder of JPEGs (random crops, sizes and flips of the sample photos, written
with Pillow; kept for the next run), then classifies it with MobileNetV2 on ONNX
Runtime two ways, in this one process:

- local: ``predict_many(folder, batch_size=32)``, decoding threads and ONNX Runtime's
  threads on every core;
- ray: ``predict_ray(folder, workers=2, batch_size=32)``: a local Ray with as many
  CPUs as the machine has, each worker one CPU, one ONNX Runtime thread and its
  decoding threads, rows written to a Parquet file as they come.

Both are given the same exported ONNX file, so neither pays the export. Printed:
images/s of each, their ratio (from the job's start, and steady once the workers
run), and Ray's start-up cost apart: starting Ray, and the job's first rows (workers
start, receive the model and load it). Run it on an idle machine if you can; the
numbers in docs/guides/scale-ray.md say under what load they were taken.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from imgrec.core.samples import SAMPLES, sample_path
from imgrec.deploy.export_cache import load_runtime
from imgrec.prediction import predict_many
from imgrec.prediction.ray_batch import predict_ray


def make_folder(folder: Path, count: int, seed: int = 0) -> Path:
    """``count`` JPEGs from the sample photos: random crops, 160 to 640 px, some flipped."""
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    photos = []
    for name in SAMPLES:
        with Image.open(sample_path(name)) as photo:
            photos.append(photo.convert("RGB"))
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = (int(s * rng.uniform(0.5, 1.0)) for s in (w, h))
        left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
        side = int(rng.integers(160, 641))
        crop = photo.crop((left, top, left + cw, top + ch))
        crop = crop.resize((side, max(1, round(side * ch / cw))), Image.Resampling.BILINEAR)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        crop.save(folder / f"{i:06d}.jpg", "JPEG", quality=90)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--folder", type=Path, help="default: a folder in the temp dir")
    args = parser.parse_args()

    folder = args.folder or Path(tempfile.gettempdir()) / f"imgrec-ray-bench-{args.images}"
    started = time.perf_counter()
    make_folder(folder, args.images)
    print(f"{args.images} JPEGs in {folder} ({time.perf_counter() - started:.1f} s)")
    engine = load_runtime(args.model, "onnx")
    cores = os.cpu_count()
    print(f"{engine.info.name} on ONNX Runtime ({engine.path}); {cores} cores; load {_load()}")

    local = predict_many(folder, engine, batch_size=args.batch_size, verbose=False)
    local_rate = local["images_per_second"]
    print(
        f"local: {local['images']} images in {local['seconds']:.1f} s, {local_rate:.1f} img/s "
        f"(batch {args.batch_size}, {local['threads']} decoding threads); load {_load()}"
    )

    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "results.parquet"
        ray = predict_ray(
            folder,
            engine.path,
            out=out,
            workers=args.workers,
            batch_size=args.batch_size,
            verbose=False,
        )
    start_up = ray["ray_start_seconds"] + ray["first_rows_seconds"]
    print(
        f"ray:   {ray['classified'] + ray['failed']} images in {ray['seconds']:.1f} s from the "
        f"job's start, {ray['images_per_second']:.1f} img/s; steady "
        f"{ray['steady_images_per_second']:.1f} img/s ({ray['workers']} workers, batch "
        f"{args.batch_size}); load {_load()}"
    )
    print(
        f"ray start-up: {start_up:.1f} s = starting Ray {ray['ray_start_seconds']:.1f} s "
        f"+ first rows {ray['first_rows_seconds']:.1f} s (workers start, load the model)"
    )
    print(
        f"throughput ratio ray/local: {ray['images_per_second'] / local_rate:.2f} from the "
        f"job's start, {ray['steady_images_per_second'] / local_rate:.2f} steady; "
        f"per worker steady: {ray['steady_images_per_second'] / ray['workers']:.1f} img/s"
    )


def _load() -> str:
    """The machine's 1-minute load average (other work on the same cores)."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "n/a"


if __name__ == "__main__":
    main()
