"""Hostile ``.keras`` files, and converters that crash: refused, or survived, with a message.

Each hostile file is a real ``.keras`` zip made here from a small model, with its
``config.json`` (or another member) edited: objects that are not Keras's own where
they stand (an "activation" naming ``keras.utils.plot_model``, initializers,
regularizers, constraints, losses, metrics, optimizers, code-running layers,
arbitrary modules and registered names, inside nested models too), declared shapes
beyond the caps or not positive, zip bombs, weights files that claim more than they
hold. Each must be refused by ``load_model`` and ``load_runtime`` with the right
error type, and by the command line with exit code 1 and one line, never a
traceback or a signal.

A converter that really crashes is simulated by the child process of
``imgrec.deploy.converter_process`` killing itself with SIGSEGV (its test hook,
``IMGREC_TEST_CONVERTER_SIGNAL``): no honest model is known that crashes
TensorFlow's converter once the declared shapes are checked.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import subprocess
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import keras
import pytest
from warm_imgrec import shared

import imgrec.deploy.exporter
from imgrec.core.errors import ModelError, UnsafeFileError
from imgrec.core.samples import sample_path
from imgrec.deploy import converter_process
from imgrec.deploy.converter_process import CRASH_HOOK
from imgrec.deploy.export_cache import load_runtime
from imgrec.deploy.exporter import export
from imgrec.deploy.runtime import KerasRuntime
from imgrec.models.chapter import build_chapter_network
from imgrec.models.file_check import check_model_shapes
from imgrec.models.loading import load_model, save_model
from imgrec.models.metadata import ModelInfo, attach_info
from imgrec.models.preprocessing import Preprocessing
from imgrec.training.augment import augmentation_layer

SRC = Path(__file__).resolve().parents[1] / "src"
CLASSES = ("a", "b", "c")


def function(module: str, name: str) -> dict:
    return {
        "module": module,
        "class_name": "function",
        "config": name,
        "registered_name": "function",
    }


def obj(module: str, class_name: str, config: dict | None = None) -> dict:
    entry = {"module": module, "class_name": class_name, "config": config or {}}
    return {**entry, "registered_name": None}


def layers(cfg: dict, class_name: str) -> list[dict]:
    return [layer for layer in cfg["config"]["layers"] if layer["class_name"] == class_name]


def dense(cfg: dict) -> dict:
    return layers(cfg, "Dense")[-1]


def dense_config(cfg: dict) -> dict:
    return dense(cfg)["config"]


def compiled(cfg: dict) -> dict:
    return cfg["compile_config"]


def image_input(cfg: dict) -> dict:
    return layers(cfg, "InputLayer")[0]["config"]


def nested(cfg: dict) -> dict:
    (augmentation,) = layers(cfg, "Sequential")
    return augmentation


def setter(where: Callable[[dict], dict], key: str, value: object) -> Callable[[dict], None]:
    def edit(cfg: dict) -> None:
        where(cfg)[key] = copy.deepcopy(value)

    return edit


def replace_shape(shape: list) -> Callable[[dict], None]:
    return setter(image_input, "batch_shape", shape)


def input_shape_without_batch(cfg: dict) -> None:
    config = image_input(cfg)
    del config["batch_shape"]
    config["shape"] = [60000, 60000, 3]


def as_lambda(cfg: dict) -> None:
    layer = dense(cfg)
    layer["class_name"] = "Lambda"
    layer["config"] = {"name": "fc", "function": function("keras.activations", "relu")}


def as_tfsm_layer(cfg: dict) -> None:
    layer = dense(cfg)
    layer["class_name"] = "TFSMLayer"
    layer["config"] = {"name": "fc", "filepath": "/", "call_endpoint": "serve"}


def from_module(module: str, class_name: str) -> Callable[[dict], None]:
    def edit(cfg: dict) -> None:
        dense(cfg).update(module=module, class_name=class_name)

    return edit


def nested_layer_class(cfg: dict) -> None:
    inner = nested(cfg)["config"]["layers"][0]
    inner.update(module="keras.utils", class_name="Progbar", config={"target": 1})


def keras_tensor_shape(cfg: dict) -> None:
    dense(cfg)["inbound_nodes"][0]["args"][0]["config"]["shape"] = [None, 10**10]


PLOT_MODEL = function("keras.utils", "plot_model")

# name: (edit of config.json, the error expected)
CONFIG_EDITS: dict[str, tuple[Callable[[dict], None], type[Exception]]] = {
    # Objects that are not Keras's own for the place they stand in.
    "activation-plot_model": (setter(dense_config, "activation", PLOT_MODEL), UnsafeFileError),
    "activation-string": (setter(dense_config, "activation", "plot_model"), UnsafeFileError),
    "activation-a-loss": (
        setter(dense_config, "activation", function("builtins", "sparse_categorical_crossentropy")),
        UnsafeFileError,
    ),
    "activation-os-system": (
        setter(dense_config, "activation", function("os", "system")),
        UnsafeFileError,
    ),
    "activation-a-layer": (
        setter(dense_config, "activation", obj("keras.layers", "Dense", {"units": 1})),
        UnsafeFileError,
    ),
    "initializer-a-function": (
        setter(dense_config, "kernel_initializer", function("keras.utils", "get_file")),
        UnsafeFileError,
    ),
    "initializer-a-class": (
        setter(dense_config, "kernel_initializer", obj("keras.utils", "Progbar", {"target": 1})),
        UnsafeFileError,
    ),
    "regularizer": (
        setter(dense_config, "kernel_regularizer", obj("keras.callbacks", "TensorBoard")),
        UnsafeFileError,
    ),
    "constraint": (setter(dense_config, "bias_constraint", PLOT_MODEL), UnsafeFileError),
    "dtype": (setter(dense_config, "dtype", PLOT_MODEL), UnsafeFileError),
    "loss": (setter(compiled, "loss", function("keras.utils", "get_file")), UnsafeFileError),
    "metric": (setter(compiled, "metrics", [PLOT_MODEL]), UnsafeFileError),
    "optimizer": (
        setter(compiled, "optimizer", obj("keras.layers", "Dense", {"units": 1})),
        UnsafeFileError,
    ),
    "lambda-layer": (as_lambda, UnsafeFileError),
    "tfsm-layer": (as_tfsm_layer, UnsafeFileError),
    "module-subprocess": (from_module("subprocess", "Popen"), UnsafeFileError),
    "module-keras-utils": (from_module("keras.utils", "Progbar"), UnsafeFileError),
    "registered-name": (setter(dense, "registered_name", "evil>Dense"), UnsafeFileError),
    "nested-model-layer": (nested_layer_class, UnsafeFileError),
    "nested-model-activation": (
        setter(lambda c: nested(c)["config"]["layers"][0]["config"], "dtype", PLOT_MODEL),
        UnsafeFileError,
    ),
    # Declared shapes beyond the caps, or not positive whole numbers.
    "input-60000-squared": (replace_shape([None, 60000, 60000, 3]), ModelError),
    "input-channels": (replace_shape([None, 16, 16, 100000]), ModelError),
    "input-batch": (replace_shape([10**9, 16, 16, 3]), ModelError),
    "input-zero": (replace_shape([None, 0, 16, 3]), ModelError),
    "input-negative": (replace_shape([None, -16, 16, 3]), ModelError),
    "input-fraction": (replace_shape([None, 16.5, 16, 3]), ModelError),
    "input-3d": (replace_shape([None, 10**9, 3]), ModelError),
    "input-5d": (replace_shape([None, 2000, 2000, 2000, 3]), ModelError),
    "input-shape-without-batch": (input_shape_without_batch, ModelError),
    "build-shape": (
        setter(lambda c: dense(c)["build_config"], "input_shape", [None, 10**10]),
        ModelError,
    ),
    "keras-tensor-shape": (keras_tensor_shape, ModelError),
    "nested-build-shape": (
        setter(lambda c: nested(c)["build_config"], "input_shape", [None, 60000, 60000, 3]),
        ModelError,
    ),
    # Layer sizes whose weights would fill the memory: 3 billion numbers (12 GB as float32)
    # in the last Dense, or a convolution's 10 million filters feeding the next one.
    "dense-units-12GB": (setter(dense_config, "units", 37_500_000), ModelError),
    "conv-filters": (
        setter(lambda c: layers(c, "Conv2D")[0]["config"], "filters", 10_000_000),
        ModelError,
    ),
}


def rewrite(source: Path, out: Path, **members: Callable[[bytes], bytes]) -> Path:
    """``source`` with some members' bytes rewritten; the others copied as they are."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(out, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            edit = members.get(info.filename)
            zout.writestr(info, edit(data) if edit else data)
    return out


def with_config_edit(source: Path, out: Path, edit: Callable[[dict], None]) -> Path:
    def apply(data: bytes) -> bytes:
        cfg = json.loads(data)
        edit(cfg)
        return json.dumps(cfg).encode()

    return rewrite(source, out, **{"config.json": apply})


def with_weights_edit(
    source: Path, out: Path, tmp: Path, edit: Callable[[h5py.File], None]
) -> Path:
    def apply(data: bytes) -> bytes:
        weights = tmp / "weights.h5"
        weights.write_bytes(data)
        with h5py.File(weights, "a") as f:
            edit(f)
        return weights.read_bytes()

    return rewrite(source, out, **{"model.weights.h5": apply})


@pytest.fixture(scope="module")
def base_file(tmp_path_factory) -> Path:
    """A small compiled cifar-cnn with a nested augmentation model, saved by imgrec."""
    keras.utils.set_random_seed(0)
    augmentation = augmentation_layer("flip", seed=0)
    model = build_chapter_network("cifar-cnn", (16, 16, 3), len(CLASSES), augmentation=augmentation)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    attach_info(model, ModelInfo("base", CLASSES, Preprocessing(size=(16, 16)), "random"))
    return save_model(model, tmp_path_factory.mktemp("base") / "base.keras")


@pytest.fixture(scope="module")
def hostile_files(base_file, tmp_path_factory) -> dict[str, tuple[Path, type[Exception]]]:
    """Every hostile file, by name, with the error it must raise."""
    folder = tmp_path_factory.mktemp("hostile")
    files = {
        name: (with_config_edit(base_file, folder / f"{name}.keras", edit), error)
        for name, (edit, error) in CONFIG_EDITS.items()
    }

    bomb_file = folder / "zip-bomb.keras"
    rewrite(base_file, bomb_file)
    with zipfile.ZipFile(bomb_file, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("assets/padding.bin", bytes(16 << 20))  # 16 MiB of zeros: ~16 KiB
    files["zip-bomb"] = (bomb_file, UnsafeFileError)

    def claim_terabytes(f: h5py.File) -> None:
        f.create_dataset("extra/claim", shape=(10**6, 10**6), dtype="f4", chunks=(1, 1024))

    def external_data(f: h5py.File) -> None:
        outside = [("/etc/hostname", 0, 16)]
        f.create_dataset("extra/outside", shape=(16,), dtype="u1", external=outside)

    scratch = tmp_path_factory.mktemp("scratch")
    files["weights-claim"] = (
        with_weights_edit(base_file, folder / "weights-claim.keras", scratch, claim_terabytes),
        UnsafeFileError,
    )
    files["weights-external"] = (
        with_weights_edit(base_file, folder / "weights-external.keras", scratch, external_data),
        UnsafeFileError,
    )
    return files


def test_the_base_file_loads(base_file):
    """The files below differ from a file that loads only in what they were edited for."""
    model = load_model(base_file, compile=True)
    assert model.input_shape == (None, 16, 16, 3)


@pytest.mark.parametrize("name", [*CONFIG_EDITS, "zip-bomb", "weights-claim", "weights-external"])
def test_load_model_and_load_runtime_refuse_each_hostile_file(name, hostile_files):
    path, error = hostile_files[name]
    with pytest.raises(error, match=re.escape(path.name)):
        load_model(path)
    with pytest.raises(error, match=r"\.keras"):
        load_model(path, compile=True)
    with pytest.raises(error):
        load_runtime(path, "auto", verbose=False)


def test_a_layer_that_makes_a_huge_tensor_is_refused_once_built(tmp_path):
    """A Resizing to 20000 x 20000 inside the model: its declared input is small."""
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Resizing(20000, 20000)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(x))
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    attach_info(model, ModelInfo("resize", CLASSES, Preprocessing(size=(16, 16)), "test"))
    path = save_model(model, tmp_path / "resize.keras")
    # The config's build shapes give it away before Keras builds anything...
    with pytest.raises(ModelError, match=r"\[None, 20000, 20000, 3\]: 400000000 pixels"):
        load_model(path)
    # ...and a built model is checked layer by layer, whatever its config said.
    with pytest.raises(ModelError, match=r"output of layer 'resizing'.*400000000 pixels"):
        check_model_shapes(path, model)


# The command line, in a child process that runs every hostile file through
# ``imgrec predict`` in turn: if any of them killed it (a signal), the test fails.
CLI_LOOP = """
import contextlib, io, json, sys
from imgrec.cli import main
results = {}
for name, path in json.loads(sys.argv[1]).items():
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["predict", sys.argv[2], "--model", path])
    results[name] = [code, err.getvalue()]
print(json.dumps(results))
"""


def run_python(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """``python ARGS`` in a process of its own, as forked by tests/warm_imgrec.py's launcher.

    The fork runs the same code as a fresh interpreter would, without its 8 s import of
    TensorFlow; ``CRASH_HOOK`` is read only when a converter starts, so it may differ.
    """
    base = {**os.environ, "PYTHONPATH": str(SRC), "TF_CPP_MIN_LOG_LEVEL": "3"}
    python = shared("hostile-models", base, free=(CRASH_HOOK,)).bin / "python"
    return subprocess.run(
        [str(python), *args], capture_output=True, text=True, env=base | (env or {}), timeout=900
    )


def imgrec_error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("imgrec: error:")]


@pytest.mark.slow
def test_the_cli_refuses_each_hostile_file_in_one_line(hostile_files):
    paths = {name: str(path) for name, (path, _) in hostile_files.items()}
    done = run_python("-c", CLI_LOOP, json.dumps(paths), str(sample_path("chelsea")))
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(results) == set(paths)
    for name, (code, err) in results.items():
        assert code == 1, (name, err)
        assert "Traceback" not in err, (name, err)
        (line,) = imgrec_error_lines(err)
        assert paths[name] in line, (name, line)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["activation-plot_model", "input-60000-squared", "zip-bomb"])
def test_imgrec_predict_exits_1_with_one_line(name, hostile_files):
    """``python -m imgrec predict --model X.keras``: the process itself, for three kinds."""
    path, _ = hostile_files[name]
    done = run_python("-m", "imgrec", "predict", str(sample_path("chelsea")), "--model", str(path))
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (line,) = imgrec_error_lines(done.stderr)
    assert str(path) in line


# --- A converter that crashes ------------------------------------------------------------


def tiny_file(path: Path, seed: int) -> Path:
    """A small model file of its own (exports are cached by content: a new one each)."""
    keras.utils.set_random_seed(seed)
    model = build_chapter_network("cifar-cnn", (16, 16, 3), len(CLASSES))
    attach_info(model, ModelInfo("base", CLASSES, Preprocessing(size=(16, 16)), "random"))
    return save_model(model, path)


@pytest.fixture
def crashing_converter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CRASH_HOOK, str(int(signal.SIGSEGV)))


@pytest.mark.slow
def test_a_crashing_converter_is_a_model_error_and_writes_nothing(
    base_file, tmp_path, crashing_converter
):
    out = tmp_path / "out" / "base.onnx"
    with pytest.raises(ModelError, match=r"base: the onnx export crashed \(signal 11, SIGSEGV\)"):
        export(base_file, out)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


@pytest.mark.slow
def test_auto_runs_keras_when_the_converter_crashes(tmp_path, crashing_converter, capsys):
    path = tiny_file(tmp_path / "crash.keras", seed=11)
    runtime = load_runtime(path, "auto")
    assert isinstance(runtime, KerasRuntime)
    assert "running Keras: base: the onnx export crashed (signal 11" in capsys.readouterr().err
    with pytest.raises(ModelError, match="crashed"):
        load_runtime(path, "onnx")


@pytest.mark.slow
def test_auto_isolates_a_model_loaded_from_a_file_too(tmp_path, crashing_converter, capsys):
    """The server exports the model it loaded from a user's file, in memory: that
    conversion is isolated too."""
    model = load_model(tiny_file(tmp_path / "loaded.keras", seed=3))
    runtime = load_runtime(model, "auto")
    assert isinstance(runtime, KerasRuntime)
    assert "base: the onnx export crashed" in capsys.readouterr().err


@pytest.mark.slow
def test_a_model_built_in_python_is_exported_in_process(tmp_path, monkeypatch):
    """The user's own code, like imgrec's zoo networks, needs no child process."""
    monkeypatch.setenv("IMGREC_HOME", str(tmp_path))  # an empty cache: an export is made

    def no_child(*args, **kwargs):
        raise AssertionError("converted in a child process")

    monkeypatch.setattr(imgrec.deploy.exporter, "convert_in_child", no_child)
    keras.utils.set_random_seed(4)
    model = build_chapter_network("cifar-cnn", (16, 16, 3), len(CLASSES))
    attach_info(model, ModelInfo("in-memory", CLASSES, Preprocessing(size=(16, 16)), "random"))
    runtime = load_runtime(model, "onnx", verbose=False)
    assert runtime.path.parent == tmp_path / "onnx"


@pytest.mark.slow
def test_the_cli_survives_a_crashing_converter(tmp_path):
    """``imgrec predict`` falls back to Keras; ``imgrec export`` fails in one line."""
    crash = {CRASH_HOOK: str(int(signal.SIGSEGV))}
    path = tiny_file(tmp_path / "crash.keras", seed=12)
    chelsea = str(sample_path("chelsea"))
    done = run_python("-m", "imgrec", "predict", chelsea, "--model", str(path), "--json", env=crash)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "running Keras: base: the onnx export crashed (signal 11" in done.stderr
    assert json.loads(done.stdout)[0]["runtime"] == "keras"

    out = tmp_path / "crash.onnx"
    done = run_python("-m", "imgrec", "export", str(path), "--out", str(out), env=crash)
    assert done.returncode == 1, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (line,) = imgrec_error_lines(done.stderr)
    assert "the onnx export crashed (signal 11, SIGSEGV)" in line
    assert not out.exists()


@pytest.mark.slow
def test_a_cached_export_starts_no_process(tmp_path, monkeypatch, capsys):
    """The first ``auto`` run converts in a child; later ones only open the cached file."""
    path = tiny_file(tmp_path / "warm.keras", seed=14)
    first = load_runtime(path, "auto")
    assert not isinstance(first, KerasRuntime), capsys.readouterr().err

    def no_process(*args, **kwargs):
        raise AssertionError("a process was started")

    monkeypatch.setattr(converter_process.subprocess, "run", no_process)
    monkeypatch.setattr(converter_process.subprocess, "Popen", no_process)
    second = load_runtime(path, "auto")
    assert second.path == first.path


@pytest.mark.slow
def test_a_zoo_network_named_by_name_is_exported_in_process(tmp_path, monkeypatch):
    """imgrec's own networks need no child process (it costs a TensorFlow start-up)."""
    monkeypatch.setenv("IMGREC_HOME", str(tmp_path))  # an empty cache: an export is made

    def no_child(*args, **kwargs):
        raise AssertionError("converted in a child process")

    monkeypatch.setattr(imgrec.deploy.exporter, "convert_in_child", no_child)
    runtime = load_runtime("mobilenet_v2", "onnx", verbose=False)
    assert runtime.path.parent == tmp_path / "onnx"


# --- The server -----------------------------------------------------------------------


@pytest.mark.slow
def test_the_server_refuses_hostile_files_and_survives_a_crashing_converter(
    hostile_files, tmp_path, crashing_converter
):
    """``imgrec serve --models``: 422 with the reason for each; a crash falls back to Keras."""
    from fastapi.testclient import TestClient

    from imgrec.web.app import create_app

    folder = tmp_path / "models"
    folder.mkdir()
    hostile = ("activation-plot_model", "input-60000-squared", "zip-bomb")
    for name in hostile:
        shutil.copy(hostile_files[name][0], folder / f"{name}.keras")
    tiny_file(folder / "crashy.keras", seed=13)
    client = TestClient(create_app(folder))
    for name in hostile:
        response = client.post("/api/predict", data={"model": f"{name}.keras", "sample": "chelsea"})
        assert response.status_code == 422, response.text
        assert f"{name}.keras" in response.json()["error"]
    response = client.post("/api/predict", data={"model": "crashy.keras", "sample": "chelsea"})
    assert response.status_code == 200, response.text
    assert response.json()["runtime"] == "keras"
    assert client.get("/api/models").status_code == 200  # still serving
