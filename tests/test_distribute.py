"""Training on several devices and processes (``--devices``, ``--coordinator``).

The several-device runs need their devices before JAX or TensorFlow starts, so each
runs in a subprocess with its environment set: JAX simulates two CPU devices with
``XLA_FLAGS=--xla_force_host_platform_device_count=2``; TensorFlow is given two
logical CPU devices with ``tf.config.set_logical_device_configuration``. Two
processes train together on loopback through ``--coordinator 127.0.0.1:PORT``
(JAX's CPU collectives, gloo).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

import imgrec
from imgrec.cli import main
from imgrec.core.errors import ImgrecError
from imgrec.models.metadata import model_info
from imgrec.training import train
from imgrec.training.distribute import Placement, plan_placement

SRC = Path(__file__).resolve().parents[1] / "src"
TWO_CPUS = "--xla_force_host_platform_device_count=2"

# Weight agreement, one device against two, after the same steps on the same data.
# Data parallelism splits the sum over a batch's 64 images into two sums of 32, added
# by an all-reduce: the same numbers added in another order. In float32 each order
# rounds differently by about 1e-7 of the gradient (float32's epsilon is 1.2e-7);
# Adam divides the gradient by its own running size, so each update (at most the
# learning rate, 1e-3) changes by about 1e-7 of itself, and the weights (about 0.1)
# end a few roundings apart: 3e-8 measured here, on JAX and TensorFlow alike. A
# tolerance of 1e-6 leaves room for 30 times that, and is 1/8000 of how far 8 steps
# move the weights (8e-3): any change of data, order or seed moves them by 1e-3 in
# one step. The test checks that the weights did move by more than 100 times it.
WEIGHT_ATOL = 1e-6

pytestmark = pytest.mark.slow


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(SRC), **extra}
    env.pop("XLA_FLAGS", None)
    return env | extra


def _start(command: list[str], env: dict[str, str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def _finish(process: subprocess.Popen, timeout: int = 900) -> str:
    """Wait for ``process`` and return its output; fail with its errors if it failed."""
    try:
        out, err = process.communicate(timeout=timeout)
    finally:
        process.kill()
    assert process.returncode == 0, err[-3000:]
    return out


def _script(script: str) -> list[str]:
    return [sys.executable, "-c", textwrap.dedent(script)]


# One Python with two simulated devices: the CLI's run on both, then the API's on one,
# on the same data, seed and steps; then what the process refuses.
JAX_RUNS = """
import contextlib
import io
import json
import keras
import imgrec
from imgrec.cli import main
from imgrec.core.errors import ImgrecError
from imgrec.models.loading import load_keras_file

class First(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = self.model.get_weights()

# 56 digits a class: 500 training and 60 validation images, both even, so that two
# devices leave none out; 8 steps of 64 (the last of 52).
common = ["--epochs", "1", "--batch-size", "64", "--limit-per-class", "56", "--seed", "3",
          "--patience", "0", "--quiet"]
with contextlib.redirect_stdout(io.StringIO()) as printed:
    assert main(["train", "digits", "--arch", "cifar-cnn", "--devices", "2",
                 "--out", "two.keras", "--json", *common]) == 0
two = json.loads(printed.getvalue())
first = First()
one = imgrec.train("digits", "cifar-cnn", out="one.keras", epochs=1, batch_size=64,
                   limit_per_class=56, seed=3, patience=0, verbose=0, callbacks=[first])
errors = {}
for name, kwargs in {
    "too_many": {"devices": 3},
    "transfer": {"devices": 2, "arch": "mobilenet_v2"},
    "batch": {"devices": 2, "batch_size": 63},
}.items():
    try:
        imgrec.train("digits", **{"arch": "cifar-cnn", "out": "x.keras", **kwargs})
    except ImgrecError as e:
        errors[name] = str(e)
weights = {
    name: [w.tolist() for w in load_keras_file(name + ".last.keras").get_weights()]
    for name in ("one", "two")
}
weights["initial"] = [w.tolist() for w in first.weights]
# Resumed on the same two devices: one more epoch, into files of its own.
resumed = imgrec.train("digits", resume="two.last.keras", epochs=2, devices=2, verbose=0,
                       out="resumed.keras")
# fast-cnn's flips alternate on two devices; a one-device run resumed on two goes on so.
settings = dict(epochs=1, batch_size=64, limit_per_class=56, seed=3, patience=0, verbose=0)
flips = {"two": imgrec.train("digits", "fast-cnn", out="flips_two.keras", devices=2,
                             **settings)}
imgrec.train("digits", "fast-cnn", out="flips.keras", **settings)
flips["resumed"] = imgrec.train("digits", resume="flips.last.keras", epochs=2, devices=2,
                                verbose=0, out="flips2.keras")
print(json.dumps({"one": one, "two": two, "resumed": resumed, "errors": errors,
                  "weights": weights, "flips": flips}))
"""


@pytest.fixture(scope="module")
def started(request, tmp_path_factory) -> dict[str, tuple[Path, list[subprocess.Popen]]]:
    """The subprocesses that the selected tests need, all started at once.

    Most of their time is start-up, compilation and waiting on each other, so they
    overlap well; each test then waits for its own.
    """
    needed = {
        name
        for item in request.session.items
        if item.module is request.module
        for name in getattr(item, "fixturenames", ())
    }
    runs = {}
    if "jax_runs" in needed:
        folder = tmp_path_factory.mktemp("jax_devices")
        env = _env(KERAS_BACKEND="jax", XLA_FLAGS=TWO_CPUS)
        runs["jax"] = folder, [_start(_script(JAX_RUNS), env, folder)]
    if "tf_runs" in needed:
        folder = tmp_path_factory.mktemp("tf_devices")
        runs["tf"] = folder, [_start(_script(TF_RUNS), _env(KERAS_BACKEND="tensorflow"), folder)]
    if "hosts_run" in needed:
        folder = tmp_path_factory.mktemp("two_processes")
        env = _env(KERAS_BACKEND="jax")
        command = [*TWO_PROCESSES, "--coordinator", f"127.0.0.1:{_free_port()}"]
        runs["hosts"] = (
            folder,
            [_start([*command, "--process-id", str(index)], env, folder) for index in (0, 1)],
        )
    yield runs
    for _, processes in runs.values():
        for process in processes:
            process.kill()


@pytest.fixture(scope="module")
def jax_runs(started) -> tuple[Path, dict]:
    folder, (process,) = started["jax"]
    return folder, json.loads(_finish(process).strip().splitlines()[-1])


# TensorFlow: two logical CPU devices, a MirroredStrategy over both; then one device.
TF_RUNS = """
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import imgrec
from imgrec.models.loading import load_keras_file

settings = dict(epochs=1, batch_size=64, limit_per_class=56, seed=3, patience=0, verbose=0)
two = imgrec.train("digits", "cifar-cnn", out="two.keras", devices=2, **settings)
one = imgrec.train("digits", "cifar-cnn", out="one.keras", **settings)
weights = {
    name: [w.tolist() for w in load_keras_file(name + ".last.keras").get_weights()]
    for name in ("one", "two")
}
print(json.dumps({"one": one, "two": two, "weights": weights}))
"""


@pytest.fixture(scope="module")
def tf_runs(started) -> dict:
    _, (process,) = started["tf"]
    return json.loads(_finish(process).strip().splitlines()[-1])


# Two processes of one CPU device each, joined through a coordinator on loopback.
TWO_PROCESSES = [
    sys.executable, "-m", "imgrec", "train", "digits", "--arch", "cifar-cnn", "--epochs", "1",
    "--batch-size", "64", "--limit-per-class", "56", "--seed", "3", "--out", "model.keras",
    "--json", "--quiet", "--num-processes", "2",
]  # fmt: skip


@pytest.fixture(scope="module")
def hosts_run(started) -> tuple[Path, list[dict]]:
    folder, processes = started["hosts"]
    outputs = [_finish(process) for process in processes]
    # gloo prints a line of its own on stdout ("[Gloo] Rank 0 is connected to 1 peer
    # ranks..."), before imgrec's JSON.
    return folder, [json.loads(out[out.index("{\n") :]) for out in outputs]


def _assert_weights_agree(weights: dict, initial: list | None = None) -> None:
    one = [np.asarray(w) for w in weights["one"]]
    two = [np.asarray(w) for w in weights["two"]]
    assert [w.shape for w in one] == [w.shape for w in two]
    for a, b in zip(one, two, strict=True):
        np.testing.assert_allclose(b, a, rtol=0, atol=WEIGHT_ATOL)
    if initial is not None:
        moved = max(np.abs(a - np.asarray(w)).max() for a, w in zip(one, initial, strict=True))
        assert moved > 100 * WEIGHT_ATOL


def test_two_jax_devices_reach_the_weights_of_one(jax_runs):
    _, runs = jax_runs
    assert runs["two"]["distribution"] == {
        "devices": 2,
        "processes": 1,
        "process_id": 0,
        "images_left_out": {"train": 0, "val": 0},
    }
    assert "distribution" not in runs["one"]
    _assert_weights_agree(runs["weights"], runs["weights"]["initial"])
    assert runs["two"]["best_val_loss"] == pytest.approx(runs["one"]["best_val_loss"], abs=1e-5)


def test_cli_run_on_two_devices_saves_a_model_that_loads_and_evaluates(jax_runs, capsys):
    folder, runs = jax_runs
    assert runs["two"]["model"] == "two.keras"
    model = imgrec.load_model(folder / "two.keras")
    record = model_info(model).training
    assert record["devices"] == 2 and record["batch_size"] == 64 and record["epochs_done"] == 1
    assert "devices" not in model_info(imgrec.load_model(folder / "one.keras")).training
    assert json.loads((folder / "two.history.json").read_text())["val_loss"]
    assert main(["evaluate", str(folder / "two.keras"), "digits", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert 0 <= report["accuracy"] <= 1


def test_a_run_on_two_devices_resumes_on_two(jax_runs):
    folder, runs = jax_runs
    resumed = runs["resumed"]
    assert resumed["epochs_done"] == 2 and resumed["model"] == "resumed.keras"
    assert resumed["distribution"]["devices"] == 2
    first_epoch = json.loads((folder / "two.history.json").read_text())
    history = json.loads((folder / "resumed.history.json").read_text())
    assert len(first_epoch["loss"]) == 1 and len(history["loss"]) == 2
    assert history["loss"][0] == first_epoch["loss"][0]
    record = model_info(imgrec.load_model(folder / "resumed.last.keras")).training
    assert record["epochs_done"] == 2 and record["devices"] == 2


def test_flips_alternate_on_two_devices_and_after_a_resume_onto_two(jax_runs):
    folder, runs = jax_runs
    assert runs["flips"]["two"]["distribution"]["devices"] == 2
    two = imgrec.load_model(folder / "flips_two.keras")
    record = model_info(two).training
    assert record["alternate_flips"] and record["devices"] == 2
    assert "augmentation" not in [layer.name for layer in two.layers]  # no RandomFlip layer
    resumed_run = runs["flips"]["resumed"]
    assert resumed_run["epochs_done"] == 2 and resumed_run["distribution"]["devices"] == 2
    first = model_info(imgrec.load_model(folder / "flips.last.keras")).training
    resumed = model_info(imgrec.load_model(folder / "flips2.last.keras")).training
    assert first["alternate_flips"] and "devices" not in first
    assert resumed["alternate_flips"] and resumed["devices"] == 2
    assert resumed["augment"] == first["augment"] == "flip"
    assert resumed["history"]["loss"][0] == first["history"]["loss"][0]
    assert len(resumed["history"]["loss"]) == 2


def test_jax_refuses_what_it_cannot_do(jax_runs):
    _, runs = jax_runs
    errors = runs["errors"]
    assert "--devices 3: this process has 2 CPU devices" in errors["too_many"]
    assert "transfer learning (mobilenet_v2)" in errors["transfer"]
    assert "--batch-size 63 does not split evenly among 2 devices" in errors["batch"]


def test_tensorflow_mirrored_strategy_on_two_logical_cpus(tf_runs):
    assert tf_runs["two"]["distribution"]["devices"] == 2
    assert tf_runs["two"]["model"] == "two.keras"
    _assert_weights_agree(tf_runs["weights"])
    assert tf_runs["two"]["best_val_loss"] == pytest.approx(tf_runs["one"]["best_val_loss"])


# ------------------------------------------------------------- checked in this process


def test_placement_shards_each_process_evenly():
    images, labels = np.arange(23), np.arange(23) * 10
    shards = [
        Placement("jax", local_devices=2, processes=3, process_id=i).shard(images, labels)
        for i in range(3)
    ]
    assert [len(x) for x, _ in shards] == [6, 6, 6]  # 23 // 3 = 7, cut to a multiple of 2
    assert list(shards[1][0]) == [1, 4, 7, 10, 13, 16]
    assert all((y == x * 10).all() for x, y in shards)
    assert Placement("jax", 2, 3, 0).left_out(23) == 5
    assert Placement("jax", 2, 3, 0).local_batch_size(60) == 20
    # TensorFlow's MirroredStrategy splits the global batch itself.
    mirrored = Placement("tensorflow", local_devices=2)
    assert mirrored.shard(images, labels)[0] is images
    assert mirrored.local_batch_size(64) == 64
    with pytest.raises(ImgrecError, match="--batch-size 30 does not split evenly among 4"):
        Placement("jax", 2, 2, 0).check_batch_size(30)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"devices": 0}, "--devices must be at least 1 or 'all', got 0"),
        ({"devices": "two"}, "--devices must be a number or 'all', got 'two'"),
        pytest.param(
            {"devices": 99},
            "--devices 99: TensorFlow sees 1 CPU device",
            marks=pytest.mark.skipif(
                keras.backend.backend() != "tensorflow", reason="TensorFlow's message"
            ),
        ),
        ({"coordinator": "127.0.0.1:1234"}, "missing --num-processes, --process-id"),
        (
            {"coordinator": "127.0.0.1", "num_processes": 2, "process_id": 0},
            "--coordinator must be HOST:PORT, got '127.0.0.1'",
        ),
        (
            {"coordinator": "127.0.0.1:1234", "num_processes": 2, "process_id": 2},
            "--process-id must be 0 to 1 for 2 processes, got 2",
        ),
        pytest.param(
            {"coordinator": "127.0.0.1:1234", "num_processes": 2, "process_id": 1},
            "need KERAS_BACKEND=jax; tensorflow's multi-worker strategy",
            marks=pytest.mark.skipif(
                keras.backend.backend() != "tensorflow", reason="TensorFlow's message"
            ),
        ),
    ],
)
def test_device_settings_are_checked_before_anything_runs(settings, message, tmp_path):
    with pytest.raises(ImgrecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        plan_placement(**settings)
    with pytest.raises(ImgrecError):
        train("digits", out=tmp_path / "m.keras", **settings)
    assert not any(tmp_path.iterdir())


def test_one_device_changes_nothing():
    assert not plan_placement().distributed
    assert not plan_placement(devices=1).distributed
    assert plan_placement(devices="all").devices >= 1


# ------------------------------------------------------------- two processes on loopback


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_processes_train_together_through_a_coordinator(hosts_run):
    """Two JAX processes of one CPU device each, joined on 127.0.0.1 (gloo collectives).

    Each reads its half of the data, and the all-reduce makes them one run: the same
    validation loss in both (the metrics are reduced over both halves), one set of files,
    written by process 0.
    """
    tmp_path, (first, second) = hosts_run
    for index, result in enumerate((first, second)):
        assert result["distribution"] == {
            "devices": 2,
            "processes": 2,
            "process_id": index,
            "images_left_out": {"train": 0, "val": 0},
        }
        assert result["epochs_done"] == 1
    assert second["best_val_loss"] == first["best_val_loss"]
    assert first["model"] == "model.keras" and second["model"] is None
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "model.curves.png",
        "model.history.json",
        "model.keras",
        "model.last.keras",
    ]
    record = model_info(imgrec.load_model(tmp_path / "model.keras")).training
    assert record["devices"] == 2 and record["batch_size"] == 64


def test_cli_flags_reach_train_as_typed():
    from imgrec.cli import build_parser

    parser = build_parser()
    args = parser.parse_args(["train", "digits", "--devices", "all"])
    assert args.devices == "all" and args.coordinator is None
    hosts = ["--coordinator", "127.0.0.1:8476", "--num-processes", "4", "--process-id", "3"]
    args = parser.parse_args(["train", "digits", "--devices", "2", *hosts])
    assert (args.devices, args.coordinator, args.num_processes, args.process_id) == (
        2,
        "127.0.0.1:8476",
        4,
        3,
    )
    for bad in (["--devices", "0"], ["--devices", "two"], ["--process-id", "-1"]):
        with pytest.raises(SystemExit):
            parser.parse_args(["train", "digits", *bad])
