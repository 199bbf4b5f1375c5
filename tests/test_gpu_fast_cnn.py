"""bench/gpu_fast_cnn.py: the fast-cnn recipe in a pure JAX loop, run here on CPU JAX.

Both tests start a subprocess with KERAS_BACKEND=jax (the suite's own Keras runs on
TensorFlow). The first runs the bench end to end on a tiny Fashion-MNIST subset; the second
checks that its on-device steps do what Keras's own ``fit`` does with the recipe.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "gpu_fast_cnn.py"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")


def _run_jax(args: list[str], timeout: int = 240) -> subprocess.CompletedProcess:
    env = os.environ | {"KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )


@pytest.mark.slow
@pytest.mark.fashion_mnist
def test_bench_trains_fast_cnn_on_cpu_jax():
    done = _run_jax(
        [
            *(str(BENCH), str(FASHION_MNIST), "--epochs", "2", "--limit-per-class", "10"),
            *("--batch-size", "50", "--test-limit", "200", "--target", "0.15", "--unroll", "2"),
        ]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["backend"] == "jax" and report["device"]
    assert report["arch"] == "fast-cnn"
    assert report["epochs"] == 2 and report["batch_size"] == 50
    assert report["train_images"] == 100 and report["test_images"] == 200
    assert report["steps_per_epoch"] == 2
    assert report["compile_s"] > 0
    assert [e["epoch"] for e in report["per_epoch"]] == [1, 2]
    for epoch in report["per_epoch"]:
        assert epoch["train_s"] > 0 and epoch["images_per_s"] > 0
        assert 0 <= epoch["test_accuracy"] <= 1 and 0 <= epoch["test_accuracy_tta"] <= 1
    assert report["train_images_per_s"] > 0
    # Ten classes: a model that learned nothing sits near 0.1.
    assert report["test_accuracy_tta"] > 0.15
    assert report["test_accuracy_tta"] == report["per_epoch"][-1]["test_accuracy_tta"]
    # The time to the target is the training time up to the first epoch that reached it.
    reached = [e for e in report["per_epoch"] if e["test_accuracy_tta"] >= 0.15]
    expected = sum(e["train_s"] for e in report["per_epoch"][: reached[0]["epoch"]])
    assert report["time_to_target_s"] == pytest.approx(expected, abs=1e-3)
    assert report["trainable_change"] > 0.001


# Run with KERAS_BACKEND=jax: the bench's on-device epoch (no shuffle, no augmentation)
# against Keras's fit with the recipe's compile, from the same weights on the same batches.
PARITY = r"""
import importlib.util, json, sys
import jax, keras, numpy as np
spec = importlib.util.spec_from_file_location("bench", sys.argv[1])
bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)
from imgrec.models.registry import create_model, get_model_entry
from imgrec.training.loop import wants_one_hot

architecture = get_model_entry("fast-cnn").chapter
rng = np.random.default_rng(0)
images = rng.integers(0, 256, (64, 16, 16, 1), dtype=np.uint8)
labels = np.arange(64, dtype=np.int32) % 4
batch, steps = 32, 2

def fresh():
    model = create_model("fast-cnn", input_shape=(16, 16, 1), num_classes=4)
    architecture.prepare(model, images)
    return model

keras.utils.set_random_seed(1)
ours = fresh()
initial = ours.get_weights()
before = [np.asarray(v.value) for v in ours.trainable_variables]
optimizer, loss = bench.recipe_optimizer(ours, architecture, steps, 2)
step = bench.make_train_step(ours, optimizer, loss, 4, one_hot=wants_one_hot(ours))
epoch = jax.jit(bench.make_epoch(step, batch, steps, None, shuffle=False))
(trainable, non_trainable, _), _ = epoch(
    bench._state(ours, optimizer), jax.random.PRNGKey(0), images, labels
)

theirs = fresh()
theirs.set_weights(initial)
bench.recipe_optimizer(theirs, architecture, steps, 2)
targets = keras.utils.to_categorical(labels, 4) if wants_one_hot(theirs) else labels
theirs.fit(images.astype("float32"), targets, batch_size=batch, epochs=1, shuffle=False, verbose=0)

def gap(a, b):
    return max(float(np.max(np.abs(np.asarray(x) - np.asarray(y)))) for x, y in zip(a, b))

print(json.dumps({
    "trainable_gap": gap(trainable, [v.value for v in theirs.trainable_variables]),
    "non_trainable_gap": gap(non_trainable, [v.value for v in theirs.non_trainable_variables]),
    "moved": gap(trainable, before),
    "one_hot": wants_one_hot(theirs),
}))
"""


@pytest.mark.slow
def test_bench_steps_match_keras_fit():
    done = _run_jax(["-c", PARITY, str(BENCH)])
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    # The recipe smooths labels, so both sides train on one-hot targets.
    assert result["one_hot"] is True
    # Two steps with the recipe's warm-up moved the weights (the first step's rate is 0)...
    assert result["moved"] > 1e-3
    # ...and the bench's steps moved them exactly as fit did, BatchNorm's statistics too.
    assert result["trainable_gap"] < 1e-4
    assert result["non_trainable_gap"] < 1e-4
