"""Teach's time to a model: upload samples to a server, press Train, get a model.

Usage: python bench/teach_time_to_model.py [--size 160] [--epochs 50] [--scenarios 2x50,10x100]

A real `imgrec serve --projects TMP` on loopback, started (and warmed up by one tiny
project) before anything is timed, as a page that is already open. For each
scenario (classes x samples per class; the samples are distinct random crops, half
of them mirrored, of scikit-image's photos, one photo per class):

- upload: the samples sent 10 to a request, as the page sends them (the server
  computes each sample's features in the background meanwhile);
- train: from "Train" to the run's end (its server-sent events say "end");
- time to model: upload + train, the wall time a person waits;
- retrain: Train again on the same samples (every feature cached);
- baseline: `imgrec train PROJECT --arch mobilenet_v2 --transfer head` on the same
  project folder, a fresh process, as without the page (the same backbone, input
  size and epochs; its own held-out split of 10 %).

Prints seconds, the held-out accuracy, and the baseline's time over each.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = (
    "chelsea.png", "coffee.png", "astronaut.png", "rocket.jpg", "brick.png",
    "camera.png", "coins.png", "grass.png", "gravel.png", "hubble_deep_field.jpg",
)  # fmt: skip


def crops(photo: str, count: int, seed: int) -> list[bytes]:
    from importlib import resources

    from imgrec.core.images import load_image

    image = load_image(Path(str(resources.files("skimage").joinpath("data", photo))))
    rng = np.random.default_rng(seed)
    out = []
    for index in range(count):
        height, width = image.shape[:2]
        side = int(min(height, width) * rng.uniform(0.4, 0.9))
        top, left = rng.integers(0, height - side + 1), rng.integers(0, width - side + 1)
        part = image[top : top + side, left : left + side]
        part = part[:, ::-1] if index % 2 else part
        buffer = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(part)).save(buffer, format="JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def follow(http, project: str) -> dict:
    run, event = {}, ""
    with http.stream("GET", f"/api/projects/{project}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: ") and event in ("run", "end"):
                run = json.loads(line[6:])
    return run


def make_project(http, classes: int, per_class: int, size: int) -> tuple[str, float]:
    project = http.post("/api/projects", json={"name": "bench", "image_size": size}).json()["id"]
    photos = [crops(PHOTOS[c], per_class, seed=c) for c in range(classes)]
    start = time.perf_counter()
    for c, images in enumerate(photos):
        for i in range(0, len(images), 10):
            files = [("file", (f"{j}.jpg", d)) for j, d in enumerate(images[i : i + 10])]
            answer = http.post(f"/api/projects/{project}/classes/class{c}/samples", files=files)
            answer.raise_for_status()
    return project, time.perf_counter() - start


def train(http, project: str, epochs: int) -> tuple[float, dict]:
    start = time.perf_counter()
    http.post(f"/api/projects/{project}/train", json={"epochs": epochs}).raise_for_status()
    run = follow(http, project)
    assert run["state"] == "done", run
    return time.perf_counter() - start, run


def baseline(folder: Path, size: int, epochs: int) -> float:
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "imgrec", "train", str(folder), "--arch", "mobilenet_v2",
             "--transfer", "head", "--image-size", str(size), "--epochs", str(epochs),
             "--out", str(Path(out) / "m.keras"), "--quiet"],
            check=True, capture_output=True,
        )  # fmt: skip
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--scenarios", default="2x50,10x100")
    args = parser.parse_args()
    import httpx2

    scenarios = [tuple(int(n) for n in s.split("x")) for s in args.scenarios.split(",")]
    print(f"MobileNetV2 at {args.size} px, {args.epochs} epochs; {os.cpu_count()} CPUs")
    print(
        f"{'samples':>9} {'upload s':>9} {'train s':>8} {'to model s':>11} {'retrain s':>10} "
        f"{'held-out':>9} {'baseline s':>11} {'x to model':>11} {'x retrain':>10}",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as folder:
        projects = Path(folder) / "projects"
        server = subprocess.Popen(
            [sys.executable, "-m", "imgrec", "serve", "--port", "0", "--json",
             "--projects", str(projects)],
            stdout=subprocess.PIPE, text=True, env=os.environ | {"PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        try:
            url = json.loads(server.stdout.readline())["url"]
            with httpx2.Client(base_url=url, timeout=3600) as http:
                warm, _ = make_project(http, 2, 2, args.size)  # loads TF and the backbone
                train(http, warm, 1)
                for classes, per_class in scenarios:
                    project, upload = make_project(http, classes, per_class, args.size)
                    seconds, run = train(http, project, args.epochs)
                    again, _ = train(http, project, args.epochs)
                    base = baseline(projects / project, args.size, args.epochs)
                    report(classes, per_class, upload, seconds, again, base, run)
        finally:
            server.terminate()
            server.wait(timeout=60)


def report(
    classes: int, per_class: int, upload: float, seconds: float, again: float, base: float,
    run: dict,
) -> None:  # fmt: skip
    total = upload + seconds
    accuracy = run["metrics"]["accuracy"]
    print(
        f"{classes:>3} x {per_class:<3} {upload:9.1f} {seconds:8.1f} {total:11.1f} "
        f"{again:10.1f} {accuracy:9.1%} {base:11.1f} {base / total:11.1f} {base / again:10.1f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
