"""What an interrupted run leaves: a model that loads, holding every finished epoch.

A tiny folder of JPEGs (two colours of ball, 24 x 24) trains the chapter's CIFAR-10
network in a fraction of a second per epoch, so that runs can be stopped at many
moments: Ctrl-C in the middle of an epoch, ``kill -9`` at any time, ``kill -9`` in the
middle of a save. The training record (``TrainingRecord``) reads back from the dict
form older files hold.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image, ImageDraw

from imgrec.core.storage import atomic_path
from imgrec.datasets import load_dataset
from imgrec.models.loading import load_keras_file
from imgrec.models.metadata import model_info
from imgrec.training import checkpoints as checkpoints_module
from imgrec.training import companion_path, train
from imgrec.training.held_out import load_held_out
from imgrec.training.record import DatasetRef, SplitSettings, TrainingRecord

# Trains, exports or runs subprocesses for seconds a test: left out of `make check`.
pytestmark = pytest.mark.slow

# Finished epochs in Keras's log: its last line of an epoch carries the validation loss.
EPOCH_LINE = re.compile(r"val_loss: ")
COMMON = {"epochs": 40, "batch_size": 4, "image_size": (32, 32), "patience": 0, "verbose": 0}


@pytest.fixture(scope="module")
def balls(tmp_path_factory) -> Path:
    """Two classes of 12 JPEGs each, in class subfolders."""
    root = tmp_path_factory.mktemp("balls")
    rng = np.random.default_rng(0)
    for kind, colour in (("blue", (20, 20, 230)), ("red", (230, 20, 20))):
        (root / kind).mkdir()
        for i in range(12):
            image = Image.fromarray(rng.integers(0, 90, (24, 24, 3), dtype=np.uint8))
            x, y = rng.integers(1, 10, 2)
            ImageDraw.Draw(image).ellipse((x, y, x + 10, y + 10), fill=colour)
            image.save(root / kind / f"{i}.jpg")
    return root


@pytest.fixture(scope="module")
def data(balls):
    return load_dataset(balls, image_size=(32, 32), val_split=0.25, seed=0, progress=False)


def _record(path: Path) -> TrainingRecord:
    return TrainingRecord.from_json(model_info(load_keras_file(path)).training)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- the record ------------------------------------------------------------------


OLD_RECORD = {  # as imgrec wrote it before limit_per_class existed
    "architecture": "cifar-cnn",
    "augment": "flip",
    "batch_size": 16,
    "seed": 3,
    "val_split": 0.2,
    "dataset": {"name": "shapes", "source": "/data/shapes", "fingerprint": "ab12"},
    "epochs_asked": 10,
    "epochs_done": 2,
    "history": {"loss": [0.9, 0.5], "val_loss": [0.8, 0.6]},
    "a_key_from_a_newer_version": [1, 2],
}


def test_record_reads_the_old_dict_form_and_writes_it_back():
    record = TrainingRecord.from_json(OLD_RECORD)
    assert record.architecture == "cifar-cnn" and record.batch_size == 16
    assert record.split == SplitSettings(val_split=0.2, seed=3, limit_per_class=None)
    assert record.dataset == DatasetRef("shapes", "/data/shapes", "ab12")
    assert (record.epochs_done, record.epochs_asked) == (2, 10)
    assert record.best_loss(has_validation=True) == 0.6
    again = record.to_json()
    assert again == OLD_RECORD | {"limit_per_class": None}
    assert TrainingRecord.from_json(json.loads(json.dumps(again))) == record
    # a record from before precision was written trained in float32; bfloat16 travels
    assert record.precision == "float32" and "precision" not in again
    bf16 = dataclasses.replace(record, precision="bfloat16")
    assert bf16.to_json()["precision"] == "bfloat16"
    assert TrainingRecord.from_json(json.loads(json.dumps(bf16.to_json()))) == bf16
    # so do alternating flips, written only when a run has them
    assert not record.alternate_flips and "alternate_flips" not in again
    alternating = dataclasses.replace(record, alternate_flips=True)
    assert TrainingRecord.from_json(json.loads(json.dumps(alternating.to_json()))) == alternating


def test_record_after_an_epoch_leaves_the_original_alone():
    record = TrainingRecord.from_json(OLD_RECORD)
    later = record.after_epoch({"loss": 0.4, "val_loss": 0.5})
    assert later.epochs_done == 3 and later.history["loss"] == [0.9, 0.5, 0.4]
    assert record.epochs_done == 2 and record.history["loss"] == [0.9, 0.5]


def test_held_out_split_comes_from_either_record_form(balls):
    record = TrainingRecord.from_json(OLD_RECORD | {"val_split": 0.25, "seed": 5})
    from_record = load_held_out(balls, (32, 32, 3), record, progress=False)
    from_dict = load_held_out(balls, (32, 32, 3), record.to_json(), progress=False)
    expected = load_dataset(balls, image_size=(32, 32), val_split=0.25, seed=5).val
    np.testing.assert_array_equal(from_record.val.images, expected.images)
    np.testing.assert_array_equal(from_dict.val.images, expected.images)


# --- in-process runs ---------------------------------------------------------------


class _AtBatch(keras.callbacks.Callback):
    """Call ``action`` at one batch of one epoch (imgrec's own callbacks run first)."""

    def __init__(self, epoch: int, batch: int, action) -> None:
        super().__init__()
        self.epoch, self.batch, self.action = epoch, batch, action
        self.current = -1
        self.epoch_ends: list[int] = []

    def on_epoch_begin(self, epoch, logs=None):
        self.current = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.current, batch) == (self.epoch, self.batch):
            self.action()

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_ends.append(epoch)


def _sigint() -> None:
    os.kill(os.getpid(), signal.SIGINT)


def test_checkpoint_after_every_epoch_holds_that_epoch(data, tmp_path):
    out = tmp_path / "every.keras"
    seen = []

    class Check(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            record = _record(companion_path(out, ".last.keras"))
            history = json.loads(companion_path(out, ".history.json").read_text())
            seen.append((record.epochs_done, len(record.history["loss"]), len(history["loss"])))

    result = train(data, "cifar-cnn", out=out, **COMMON | {"epochs": 4}, callbacks=[Check()])
    assert seen == [(1, 1, 1), (2, 2, 2), (3, 3, 3), (4, 4, 4)]
    assert result["epochs_done"] == 4 and Path(result["model"]).is_file()


def test_ctrl_c_mid_epoch_does_not_count_the_partial_epoch(data, tmp_path):
    out = tmp_path / "ctrl-c.keras"
    last = companion_path(out, ".last.keras")
    digests = []
    saver = _AtBatch(epoch=2, batch=1, action=_sigint)
    recorder = _AtBatch(epoch=-1, batch=-1, action=None)
    recorder.on_epoch_end = lambda epoch, logs=None: digests.append(_digest(last))
    result = train(data, "cifar-cnn", out=out, **COMMON, callbacks=[recorder, saver])
    assert result["interrupted"]
    assert result["epochs_done"] == 2  # epochs 1 and 2 finished; the third was cut
    record = _record(last)
    assert record.epochs_done == 2 and len(record.history["loss"]) == 2
    assert len(json.loads(Path(result["history"]).read_text())["loss"]) == 2
    # The file holds the state at the end of epoch 2, not the partly trained weights.
    assert _digest(last) == digests[1]


def test_ctrl_c_in_the_first_epoch_reports_no_files(data, tmp_path):
    out = tmp_path / "early.keras"
    saver = _AtBatch(epoch=0, batch=1, action=_sigint)
    result = train(data, "cifar-cnn", out=out, **COMMON, callbacks=[saver])
    assert result["interrupted"] and result["epochs_done"] == 0
    assert result["model"] is None and result["last"] is None
    assert not out.exists() and not companion_path(out, ".last.keras").exists()


def test_slow_saves_are_spaced_out_and_the_end_is_saved(data, tmp_path, monkeypatch):
    """Where a save takes longer than an epoch, it waits until as much training ran."""
    real = checkpoints_module.save_model
    calls = []

    def slow_save(model, path):
        calls.append(path)
        time.sleep(1.0)
        return real(model, path)

    monkeypatch.setattr(checkpoints_module, "save_model", slow_save)
    out = tmp_path / "slow.keras"
    result = train(data, "cifar-cnn", out=out, **COMMON | {"epochs": 8})
    assert result["epochs_done"] == 8
    saved_last = [p for p in calls if p.name.endswith(".last.keras")]
    assert 2 <= len(saved_last) < 8  # the first epoch, some in between, the end
    record = _record(companion_path(out, ".last.keras"))
    assert record.epochs_done == 8 and len(record.history["loss"]) == 8
    best = _record(out)  # the best model carries the record of its own epoch
    assert len(best.history["val_loss"]) == best.epochs_done
    assert min(record.history["val_loss"]) == best.history["val_loss"][-1]


def test_stale_temporary_files_are_removed_and_others_kept(data, tmp_path):
    out = tmp_path / "m.keras"
    stale = [tmp_path / ".m-a1b2c3d_.keras", tmp_path / ".m.last-zz99yy88.last.keras"]
    kept = [tmp_path / ".m-2-a1b2c3d4.keras", tmp_path / "notes.txt", tmp_path / ".m-x.keras"]
    for path in stale + kept:
        path.write_bytes(b"half a file")
    with atomic_path(tmp_path / "m.keras") as tmp:  # the names atomic_path makes
        assert re.fullmatch(r"\.m-[a-z0-9_]{8}\.keras", tmp.name)
        tmp.write_bytes(b"an older model")
    train(data, "cifar-cnn", out=out, **COMMON | {"epochs": 1})
    assert not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)


def test_resume_without_out_writes_beside_the_resumed_file(data, tmp_path, monkeypatch):
    run = tmp_path / "runs" / "x.keras"
    train(data, "cifar-cnn", out=run, **COMMON | {"epochs": 2})
    monkeypatch.chdir(tmp_path)
    result = train(data, resume=run.with_name("x.last.keras"), epochs=3, verbose=0)
    assert result["model"] == str(run) and result["last"] == str(run.with_name("x.last.keras"))
    assert _record(run.with_name("x.last.keras")).epochs_done == 3
    assert not (tmp_path / "model.keras").exists()
    assert not (tmp_path / "model.last.keras").exists()


def test_resume_to_a_new_out_always_reports_a_best_model_that_exists(data, tmp_path):
    run = tmp_path / "y.keras"
    train(data, "cifar-cnn", out=run, **COMMON | {"epochs": 2})
    # Ctrl-C in the first resumed epoch: nothing new finished, yet --out names a model.
    saver = _AtBatch(epoch=2, batch=0, action=_sigint)
    new = tmp_path / "elsewhere" / "z.keras"
    result = train(
        data, resume=companion_path(run, ".last.keras"), out=new, epochs=5, verbose=0,
        callbacks=[saver],
    )  # fmt: skip
    assert result["interrupted"] and result["epochs_done"] == 2
    assert result["model"] == str(new)
    assert _digest(new) == _digest(run)  # the run's best so far
    for key in ("last", "history", "curves"):  # every file it names is there
        assert Path(result[key]).parent == new.parent and Path(result[key]).is_file(), key
    assert _record(Path(result["last"])).epochs_done == 2
    assert result["best_val_accuracy"] is not None


def _rewrite_record(path: Path, change) -> None:
    """Rewrite the training record inside a ``.keras`` file, as another version wrote it."""
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    metadata = json.loads(members["imgrec.json"])
    metadata["training"] = change(metadata["training"])
    members["imgrec.json"] = json.dumps(metadata).encode()
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)


def test_a_file_with_the_old_record_form_resumes(data, tmp_path):
    out = tmp_path / "old.keras"
    train(data, "cifar-cnn", out=out, **COMMON | {"epochs": 2})
    last = companion_path(out, ".last.keras")

    def older(training):  # before limit_per_class; plus a key from a newer version
        del training["limit_per_class"]
        return training | {"a_key_from_a_newer_version": "kept"}

    _rewrite_record(last, older)
    result = train(data, resume=last, epochs=3, verbose=0)
    assert result["epochs_done"] == 3
    training = model_info(load_keras_file(last)).training
    assert training["epochs_done"] == 3 and len(training["history"]["loss"]) == 3
    assert training["a_key_from_a_newer_version"] == "kept"
    assert training["limit_per_class"] is None


# --- killed runs --------------------------------------------------------------------


def _start(args: list[str]) -> subprocess.Popen:
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


class _Log:
    """A process's output, read as it comes."""

    def __init__(self, process: subprocess.Popen) -> None:
        self.text = ""
        self.thread = threading.Thread(target=self._read, args=(process,), daemon=True)
        self.thread.start()

    def _read(self, process):
        for chunk in iter(lambda: process.stdout.read(1), ""):
            self.text += chunk

    def epochs(self) -> int:
        return len(EPOCH_LINE.findall(self.text))

    def wait_for_epochs(self, count: int, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while self.epochs() < count:
            assert time.monotonic() < deadline, f"no {count} epochs in time:\n{self.text}"
            time.sleep(0.01)


@pytest.mark.parametrize(("after_epochs", "delay"), [(1, 0.0), (2, 0.13), (3, 0.29)])
def test_kill_9_at_any_moment_keeps_every_finished_epoch_but_the_last(
    balls, tmp_path, after_epochs, delay
):
    out = tmp_path / "killed.keras"
    process = _start([
        "-m", "imgrec", "train", str(balls), "--arch", "cifar-cnn", "--epochs", "200",
        "--batch-size", "4", "--image-size", "32", "--patience", "0", "--out", str(out),
    ])  # fmt: skip
    log = _Log(process)
    try:
        log.wait_for_epochs(after_epochs)
        time.sleep(delay)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        log.thread.join(timeout=10)
    logged = log.epochs()
    assert logged >= after_epochs
    record = _record(companion_path(out, ".last.keras"))
    assert record.epochs_done >= logged - 1, log.text
    assert len(record.history["loss"]) == record.epochs_done
    history = json.loads(companion_path(out, ".history.json").read_text())
    assert record.epochs_done - 1 <= len(history["loss"]) <= record.epochs_done
    best = _record(out)
    assert 1 <= best.epochs_done <= record.epochs_done


KILLED_IN_SAVE = """
import json, sys, time
from pathlib import Path
import keras
from imgrec.models.metadata import model_info
from imgrec.training.fit import train

real = keras.Model.save
calls = []

def save(self, path, *args, **kwargs):
    calls.append(model_info(self).training["epochs_done"])
    real(self, path, *args, **kwargs)
    if len(calls) == 3:  # the third checkpoint: half written when killed
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])
        # the marker appears whole (written, then renamed): the test kills on sight
        marker = Path(sys.argv[3] + ".tmp")
        marker.write_text(json.dumps({"path": str(path), "epochs": calls}))
        marker.rename(sys.argv[3])
        time.sleep(600)

keras.Model.save = save
train(sys.argv[1], "cifar-cnn", out=sys.argv[2], epochs=50, batch_size=4,
      image_size=(32, 32), patience=0, verbose=0)
"""


def test_kill_9_during_a_save_keeps_the_previous_checkpoint(balls, data, tmp_path):
    out, marker = tmp_path / "saving.keras", tmp_path / "saving-now"
    process = _start(["-c", KILLED_IN_SAVE, str(balls), str(out), str(marker)])
    log = _Log(process)
    deadline = time.monotonic() + 180
    while not marker.exists():
        assert process.poll() is None, log.text
        assert time.monotonic() < deadline, log.text
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    saving = json.loads(marker.read_text())
    half_written = Path(saving["path"])
    assert half_written.exists() and half_written.parent == tmp_path

    last = companion_path(out, ".last.keras")
    previous, killed = saving["epochs"][1:]
    assert previous < killed
    assert _record(last).epochs_done == previous
    result = train(data, resume=last, epochs=previous + 1, verbose=0)
    assert not half_written.exists()
    assert result["epochs_done"] == previous + 1 and result["model"] == str(out)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
