"""bench/gpu_fast_cnn.py: the fast-cnn recipe in a pure JAX loop, run here on CPU JAX.

One subprocess with KERAS_BACKEND=jax (the suite's own Keras runs on TensorFlow) serves
both slow tests: it checks that the bench's on-device steps do what Keras's own ``fit``
does with the recipe, then runs the bench end to end on a tiny Fashion-MNIST subset. The
ablation flags are checked in this process.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imgrec.models.registry import create_model, get_model_entry

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
def test_bench_trains_fast_cnn_on_cpu_jax(jax_run):
    report = jax_run["bench"]
    assert report["backend"] == "jax" and report["device"]
    assert report["arch"] == "fast-cnn"
    assert report["flips"] == "alternate"  # the recipe's, as imgrec train makes them
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
# Then, where the data set is here, the bench end to end in the same process (one start
# of JAX and Keras for both tests).
if len(sys.argv) > 2:
    print(json.dumps(bench.run(bench.parse_args(sys.argv[2:]))))
"""
# The end-to-end run: 100 training images, 2 epochs of 2 steps, 200 test images.
BENCH_ARGS = [
    *(str(FASHION_MNIST), "--epochs", "2", "--limit-per-class", "10", "--batch-size", "50"),
    *("--test-limit", "200", "--target", "0.15", "--unroll", "2"),
]


@pytest.fixture(scope="module")
def jax_run() -> dict:
    """The parity check's result and, with Fashion-MNIST here, the bench's report."""
    with_bench = BENCH_ARGS if FASHION_MNIST.is_dir() else []
    done = _run_jax(["-c", PARITY, str(BENCH), *with_bench], timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [json.loads(line) for line in done.stdout.strip().splitlines()[-2:]]
    return {"parity": lines[0], "bench": lines[1] if with_bench else None}


@pytest.mark.slow
def test_bench_steps_match_keras_fit(jax_run):
    result = jax_run["parity"]
    # The recipe smooths labels, so both sides train on one-hot targets.
    assert result["one_hot"] is True
    # Two steps with the recipe's warm-up moved the weights (the first step's rate is 0)...
    assert result["moved"] > 1e-3
    # ...and the bench's steps moved them exactly as fit did, BatchNorm's statistics too.
    assert result["trainable_gap"] < 1e-4
    assert result["non_trainable_gap"] < 1e-4


def _bench_module():
    spec = importlib.util.spec_from_file_location("gpu_fast_cnn", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_ablation_flag_changes_its_one_trick():
    bench = _bench_module()
    architecture = get_model_entry("fast-cnn").chapter
    model = create_model("fast-cnn", input_shape=(16, 16, 1), num_classes=4)
    args = bench.parse_args(["data", "--whiten", "off", "--label-smoothing", "0"])
    args.bn_momentum, args.logit_scale, args.augment = 0.99, 1.0, "none"
    args.flips = "random"
    changed = bench.ablate(model, architecture, args)
    assert architecture.alternate_flips and not changed.alternate_flips
    assert model.get_layer("whiten").trainable and changed.prepare is None
    assert {layer.momentum for layer in model.layers if "_bn" in layer.name} == {0.99}
    assert model.get_layer("logit_scale").scale == 1.0
    assert (changed.label_smoothing, changed.augment) == (0.0, "none")
    assert (changed.learning_rate, changed.epochs) == (
        architecture.learning_rate,
        architecture.epochs,
    )
    # No flags: the recipe as it is, its whitening frozen and prepared.
    untouched = create_model("fast-cnn", input_shape=(16, 16, 1), num_classes=4)
    same = bench.ablate(untouched, architecture, bench.parse_args(["data"]))
    assert same == architecture and not untouched.get_layer("whiten").trainable


def test_the_device_flips_alternate_as_imgrec_train_s_do():
    import jax
    import jax.numpy as jnp
    import numpy as np

    bench = _bench_module()
    first, second, third = (
        np.asarray(bench.alternating_flips(3, 1000, jnp.int32(number))) for number in range(3)
    )
    # About half the images mirrored in the first epoch, the others in the second, and
    # the first epoch's again in the third: each image both ways every two epochs.
    assert 400 < first.sum() < 600
    assert np.array_equal(second, ~first) and np.array_equal(third, first)
    # The augmenter mirrors exactly the images it is told to.
    augment = bench.augmenter({"flip": True}, (2, 3, 1))
    batch = jnp.arange(12, dtype="float32").reshape(2, 2, 3, 1)
    out = np.asarray(augment(jax.random.PRNGKey(0), batch, jnp.array([True, False])))
    assert np.array_equal(out[0], np.asarray(batch)[0, :, ::-1])
    assert np.array_equal(out[1], np.asarray(batch)[1])
