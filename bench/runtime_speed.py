"""Inference speed: imgrec's runtime against Keras and against raw ONNX Runtime.

Usage: python bench/runtime_speed.py [--rounds 30] [--models mobilenet_v2 cifar-cnn]

For MobileNetV2 (offline weights) and the chapter's cifar-cnn (random weights: speed
does not depend on them), four ways to run the same forward pass on the same
preprocessed float32 batch:

- ``keras predict()``: ``model.predict(x, verbose=0)``, what Keras users write;
- ``keras model(x)``: ``model(x, training=False)``, an eager call;
- ``imgrec runtime``: ``load_runtime(model, "auto").predict(x)`` (ONNX Runtime on
  imgrec's cached export, probabilities out);
- ``onnxruntime run``: a plain ``onnxruntime.InferenceSession`` on the same file,
  ``session.run``, the floor that imgrec's wrapper adds to.

Warm batch-1 latency (median) and batch-32 throughput (images/s from the median
batch time). The methods take turns, one sample each per round, forwards and
backwards, so that all of them see the same machine load. Targets: imgrec at least
1.5 times faster than Keras ``predict()`` at batch 1, and within 1.1 times of raw
ONNX Runtime.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import keras
import numpy as np
import onnxruntime

import imgrec
from imgrec.deploy.export_cache import load_runtime
from imgrec.deploy.runtime import OnnxRuntime
from imgrec.models.chapter import build_chapter_network
from imgrec.models.metadata import ModelInfo, attach_info
from imgrec.models.preprocessing import Preprocessing

WARM_UP_CALLS = 3
MIN_SAMPLE_S = 0.1
BATCHES = (1, 32)


def load(name: str) -> keras.Model:
    if name == "cifar-cnn":
        keras.utils.set_random_seed(0)  # the same weights each run: the export is reused
        model = build_chapter_network("cifar-cnn")
        names = tuple(f"class {i}" for i in range(10))
        return attach_info(model, ModelInfo("cifar-cnn", names, Preprocessing((32, 32)), "random"))
    return imgrec.load_model(name)


def methods(model: keras.Model) -> dict[str, Callable[[np.ndarray], object]]:
    runtime = load_runtime(model, "auto")
    if not isinstance(runtime, OnnxRuntime):
        raise SystemExit(f"{model.name}: the auto runtime is {runtime.name}, not onnx")
    session = onnxruntime.InferenceSession(str(runtime.path), providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    # ONNX Runtime's threads keep spinning a moment after a call, which slows a call
    # of the other session that comes right after: a Keras method sits between them.
    return {
        "imgrec runtime": runtime.predict,
        "keras predict()": lambda x: model.predict(x, verbose=0),
        "onnxruntime run": lambda x: session.run(None, {input_name: x}),
        "keras model(x)": lambda x: model(x, training=False),
    }


def median_seconds(
    calls: dict[str, Callable[[np.ndarray], object]], batch: np.ndarray, rounds: int
) -> dict[str, float]:
    """The median time of one call of each method on ``batch``.

    A sample is the mean of enough back-to-back calls to last ``MIN_SAMPLE_S``, so
    that sub-millisecond calls are not measured at the clock's and scheduler's grain.
    """
    repeats = {}
    for name, call in calls.items():
        for _ in range(WARM_UP_CALLS):
            start = time.perf_counter()
            call(batch)
            seconds = time.perf_counter() - start
        repeats[name] = max(1, math.ceil(MIN_SAMPLE_S / seconds))
    times: dict[str, list[float]] = {name: [] for name in calls}
    names = list(calls)
    for round_ in range(rounds):
        # Every other round backwards: no method always follows the same one.
        for name in names if round_ % 2 == 0 else names[::-1]:
            call = calls[name]
            start = time.perf_counter()
            for _ in range(repeats[name]):
                call(batch)
            times[name].append((time.perf_counter() - start) / repeats[name])
    return {name: statistics.median(samples) for name, samples in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30, help="timed calls per method")
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "cifar-cnn"])
    args = parser.parse_args()

    rng = np.random.default_rng(0)
    for name in args.models:
        model = load(name)
        calls = methods(model)
        print(f"\n{name}")
        print(f"{'method':<17} {'batch 1 ms':>11} {'batch 32 img/s':>15}")
        results = {}
        for size in BATCHES:
            batch = rng.normal(size=(size, *model.input_shape[1:])).astype(np.float32)
            results[size] = median_seconds(calls, batch, args.rounds)
        for method in calls:
            latency = results[1][method] * 1000
            throughput = BATCHES[-1] / results[BATCHES[-1]][method]
            print(f"{method:<17} {latency:11.2f} {throughput:15.0f}")
        for size in BATCHES:
            imgrec_s = results[size]["imgrec runtime"]
            speedup = results[size]["keras predict()"] / imgrec_s
            overhead = imgrec_s / results[size]["onnxruntime run"]
            print(
                f"batch {size:>2}: imgrec is {speedup:.2f}x as fast as keras predict() "
                f"(target >= 1.5 at batch 1), {overhead:.3f}x the time of raw onnxruntime "
                "(target <= 1.1)"
            )


if __name__ == "__main__":
    main()
