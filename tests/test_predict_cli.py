"""``imgrec.predict`` and ``imgrec predict``: what users rely on, from Python and the shell.

The network is loaded once per session (conftest's ``mobilenet``); the command line is
run in-process through ``imgrec.cli.main`` except where the process itself is the
subject (the console script, ``python -m imgrec``, start-up imports, exit status).
Expected answers are ImageNet facts about scikit-image's photos: chelsea is an
"Egyptian cat" (class 285), coffee an "espresso" (class 967).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import keras
import numpy as np
import pytest
from PIL import Image

import imgrec
from imgrec.cli import main
from imgrec.core.errors import ModelError
from imgrec.core.images import load_image
from imgrec.models.metadata import ModelInfo, attach_info, model_info
from imgrec.models.preprocessing import Preprocessing
from imgrec.models.zoo import ZOO

EGYPTIAN_CAT = ("Egyptian cat", 285)
ESPRESSO = ("espresso", 967)

# The photo folder of ``photo_folder``: what a folder scan must pick up, and how.
GOOD = {"chelsea.jpg": EGYPTIAN_CAT, "coffee.png": ESPRESSO}
BAD = {"broken.jpg": "not an image", "empty.png": "empty", "truncated.jpg": "truncated"}
SUBPROCESS_TIMEOUT_S = 300


def top1(record: dict) -> tuple[str, int]:
    return record["top"][0]["class"], record["top"][0]["index"]


def probabilities(record: dict) -> list[float]:
    return [c["probability"] for c in record["top"]]


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str, str]:
    """``imgrec predict ARGS`` in this process: exit code, stdout, stderr."""
    capsys.readouterr()
    code = main(["predict", *(str(a) for a in args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_process(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(a) for a in args],
        capture_output=True,
        text=True,
        env=env,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory, chelsea_path, coffee_path) -> Path:
    """Two photos, three broken image files, and files a scan must skip."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "chelsea.jpg").write_bytes(chelsea_path.read_bytes())  # PNG data, .jpg name
    (folder / "coffee.png").write_bytes(coffee_path.read_bytes())
    (folder / "broken.jpg").write_text("this is not a photo\n")
    (folder / "empty.png").write_bytes(b"")
    jpeg = io.BytesIO()
    with Image.open(coffee_path) as photo:
        photo.convert("RGB").save(jpeg, "JPEG")
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (folder / ".hidden.jpg").write_bytes(chelsea_path.read_bytes())  # a valid image, hidden
    (folder / "README.txt").write_text("photos for the tests\n")
    return folder


@pytest.fixture(scope="module")
def saved_model_path(tmp_path_factory, mobilenet) -> Path:
    path = tmp_path_factory.mktemp("saved") / "mobilenet_v2.keras"
    imgrec.save_model(mobilenet, path)
    return path


# --- Python API --------------------------------------------------------------------------


@pytest.mark.slow
def test_api_top_classes_probabilities_and_timing(mobilenet, chelsea_path, coffee_path):
    """The right classes, ranked by a full probability distribution, and a usable timing."""
    class_names = model_info(mobilenet).class_names
    full = imgrec.predict([chelsea_path, coffee_path], mobilenet, top=1000)
    assert [r["image"] for r in full] == [str(chelsea_path), str(coffee_path)]
    for record, expected in zip(full, (EGYPTIAN_CAT, ESPRESSO), strict=True):
        assert "error" not in record
        assert record["model"] == model_info(mobilenet).name
        assert top1(record) == expected
        assert [c["rank"] for c in record["top"]] == list(range(1, 1001))
        assert sorted(c["index"] for c in record["top"]) == list(range(1000))
        assert all(class_names[c["index"]] == c["class"] for c in record["top"])
        probs = probabilities(record)
        assert probs == sorted(probs, reverse=True)
        assert sum(probs) == pytest.approx(1.0, abs=1e-4)
        assert record["time_ms"] > 0
        assert record["fps"] == pytest.approx(1000 / record["time_ms"], rel=1e-6)

    short = imgrec.predict([chelsea_path, coffee_path], mobilenet, top=3)
    for few, every in zip(short, full, strict=True):
        assert [c["rank"] for c in few["top"]] == [1, 2, 3]
        assert [c["index"] for c in few["top"]] == [c["index"] for c in every["top"][:3]]
        assert probabilities(few) == pytest.approx(probabilities(every)[:3], abs=1e-6)


@pytest.mark.slow
def test_api_folder_expansion_and_bad_images(mobilenet, photo_folder):
    """A folder means its image files, sorted; a bad file gets an error record, not a crash."""
    results = imgrec.predict(photo_folder, mobilenet, top=2)
    assert [r["image"] for r in results] == [str(photo_folder / n) for n in sorted(GOOD | BAD)]
    by_name = {Path(r["image"]).name: r for r in results}
    for name, expected in GOOD.items():  # chelsea.jpg holds PNG data: sniffed, not trusted
        assert "error" not in by_name[name]
        assert top1(by_name[name]) == expected
    for name, reason in BAD.items():
        record = by_name[name]
        assert set(record) == {"image", "error"}
        assert record["error"].startswith(f"{photo_folder / name}: ")
        assert reason in record["error"]


def test_api_accepts_arrays_and_single_inputs(mobilenet, chelsea_path, coffee_path):
    """A decoded uint8 photo classifies like its file; a lone path or array needs no list."""
    array = load_image(coffee_path)
    mixed = imgrec.predict([chelsea_path, array], mobilenet, top=5)
    assert [r["image"] for r in mixed] == [str(chelsea_path), "array[1]"]
    assert top1(mixed[0]) == EGYPTIAN_CAT
    assert top1(mixed[1]) == ESPRESSO

    (alone,) = imgrec.predict(array, mobilenet, top=5)
    (from_file,) = imgrec.predict(coffee_path, mobilenet, top=5)
    assert alone["image"] == "array[0]"
    assert [c["index"] for c in alone["top"]] == [c["index"] for c in from_file["top"]]
    assert probabilities(alone) == pytest.approx(probabilities(from_file), abs=1e-6)


# --- Command line, in-process ------------------------------------------------------------


@pytest.mark.slow
def test_cli_table_csv_and_failure_count(capsys, photo_folder, tmp_path):
    """The table names the classes, --csv has one row per image, and failures exit 1."""
    out_csv = tmp_path / "out.csv"
    code, out, err = run_cli(capsys, photo_folder, "--top", "2", "--csv", out_csv)
    assert code == 1
    assert "Egyptian cat" in out
    assert "espresso" in out
    for name in BAD:
        assert str(photo_folder / name) in out
    assert "3 of 5 images could not be classified" in err
    assert "Traceback" not in err

    with out_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    header = ["image", "class_1", "probability_1", "class_2", "probability_2", "time_ms", "error"]
    assert list(rows[0]) == header
    assert [Path(r["image"]).name for r in rows] == sorted(GOOD | BAD)
    for row in rows:
        name = Path(row["image"]).name
        if name in GOOD:
            assert row["class_1"] == GOOD[name][0]
            assert 0 < float(row["probability_2"]) <= float(row["probability_1"]) <= 1
            assert float(row["time_ms"]) > 0
            assert row["error"] == ""
        else:
            assert row["error"].startswith(row["image"])
            assert row["class_1"] == row["time_ms"] == ""


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def test_cli_csv_cells_never_start_a_formula(capsys, tmp_path, monkeypatch):
    """Files and classes named like spreadsheet formulas (``=1+2.jpg``, ``-y.png``, a class
    ``@SUM(A1)``) get a leading quote in the CSV; the numbers stay numbers."""
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(5, activation="softmax")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    classes = ("=cmd|' /C calc'!A0", "+plus", "-minus", "@SUM(A1)", "\ttab")
    preprocessing = Preprocessing(size=(8, 8), scale=1 / 255)
    attach_info(model, ModelInfo("formulas", classes, preprocessing, "test"))
    model_path = tmp_path / "formulas.keras"
    imgrec.save_model(model, model_path)

    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    names = ["=1+2.jpg", "+x.png", "-y.png", "@z.png"]
    for name in names:
        pixels = rng.integers(0, 256, (12, 10, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(photos / name, "JPEG" if name.endswith(".jpg") else "PNG")
    (photos / "=broken.jpg").write_text("not a photo")  # its error names the file
    monkeypatch.chdir(photos)  # `imgrec predict . --csv`: the names start the cells

    out_csv = tmp_path / "out.csv"
    args = (".", "--model", model_path, "--runtime", "keras", "--top", "5", "--csv", out_csv)
    code, _, err = run_cli(capsys, *args)
    assert code == 1, err  # the broken file
    with out_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(names) + 1
    for row in rows:
        for column, cell in row.items():
            assert not cell.startswith(FORMULA_STARTS), (column, cell)
    assert sorted(r["image"] for r in rows) == sorted(f"'{n}" for n in [*names, "=broken.jpg"])
    for row in rows:
        if row["error"]:
            assert row["image"] == "'=broken.jpg"
            assert row["error"].startswith("'=broken.jpg")
            continue
        assert sorted(row[f"class_{k}"] for k in range(1, 6)) == sorted(f"'{c}" for c in classes)
        probabilities = [float(row[f"probability_{k}"]) for k in range(1, 6)]
        assert sum(probabilities) == pytest.approx(1, abs=1e-4)
        assert float(row["time_ms"]) > 0


@pytest.mark.slow
def test_cli_json_matches_api_and_reports_missing_files(capsys, mobilenet, photo_folder, tmp_path):
    """--json prints what predict() returns; a missing file is an error record, not a crash."""
    missing = tmp_path / "missing.jpg"
    code, out, err = run_cli(capsys, photo_folder, missing, "--json", "--top", "3")
    assert code == 1
    assert "Traceback" not in err
    printed = json.loads(out)
    expected = imgrec.predict([photo_folder, missing], mobilenet, top=3)
    assert [r["image"] for r in printed] == [r["image"] for r in expected]
    assert printed[-1]["image"] == str(missing)
    assert printed[-1]["error"].startswith(f"{missing}: no such file")
    for got, want in zip(printed, expected, strict=True):
        assert got.get("error") == want.get("error")
        if "top" in want:
            assert [c["class"] for c in got["top"]] == [c["class"] for c in want["top"]]
            assert probabilities(got) == pytest.approx(probabilities(want), abs=1e-5)


@pytest.mark.slow
def test_cli_all_good_exits_zero(capsys, chelsea_path, coffee_path):
    """Every image classified: exit code 0 and nothing about failures."""
    code, out, err = run_cli(capsys, chelsea_path, coffee_path, "--top", "1", "--quiet")
    assert code == 0
    assert "Egyptian cat" in out
    assert "espresso" in out
    assert "error" not in out
    assert "could not be classified" not in err


def test_cli_rejects_top_below_one(capsys, chelsea_path):
    """--top 0 is a usage error (exit code 2), refused before any model is loaded."""
    with pytest.raises(SystemExit) as exit_info:
        run_cli(capsys, chelsea_path, "--top", "0")
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "--top: must be at least 1" in captured.err
    assert "Traceback" not in captured.err


def test_cli_bad_weights_path_and_unknown_model(capsys, chelsea_path, tmp_path):
    """A missing --weights file is named; an unknown network name lists the zoo."""
    weights = tmp_path / "nonexistent.h5"
    code, out, err = run_cli(capsys, chelsea_path, "--weights", weights)
    assert code == 1
    assert out == ""
    assert f"{weights}: no such weights file" in err

    code, out, err = run_cli(capsys, chelsea_path, "--model", "no_such_net")
    assert code == 1
    assert "'no_such_net'" in err
    assert all(entry.name in err for entry in ZOO)
    assert "Traceback" not in err


# --- Saved models ------------------------------------------------------------------------


@pytest.mark.slow
def test_saved_model_round_trip(mobilenet, saved_model_path, chelsea_path, coffee_path):
    """A saved .keras file carries imgrec's metadata and predicts exactly as before."""
    with zipfile.ZipFile(saved_model_path) as archive:
        metadata = json.loads(archive.read("imgrec.json"))
    assert metadata["class_names"][EGYPTIAN_CAT[1]] == EGYPTIAN_CAT[0]

    loaded = imgrec.load_model(saved_model_path)
    assert model_info(loaded) == model_info(mobilenet)
    photos = [chelsea_path, coffee_path]
    before = imgrec.predict(photos, mobilenet, top=5)
    after = imgrec.predict(photos, loaded, top=5)
    assert [top1(r) for r in after] == [EGYPTIAN_CAT, ESPRESSO]
    for old, new in zip(before, after, strict=True):
        assert [c["index"] for c in new["top"]] == [c["index"] for c in old["top"]]
        assert probabilities(new) == pytest.approx(probabilities(old), abs=1e-5)


@pytest.mark.slow
def test_cli_predicts_with_saved_model_file(capsys, saved_model_path, chelsea_path, coffee_path):
    """imgrec predict --model FILE.keras uses the file, with its class names."""
    code, out, _ = run_cli(
        capsys, chelsea_path, coffee_path, "--model", saved_model_path, "--json", "--top", "1"
    )
    assert code == 0
    assert [top1(r) for r in json.loads(out)] == [EGYPTIAN_CAT, ESPRESSO]


def _doubling_lambda_that_leaves_a_mark(marker: Path):
    marker_name = str(marker)
    # __import__: the deserialised lambda runs with Keras's globals, not this module's.
    return lambda x: (__import__("pathlib").Path(marker_name).touch(), x * 2)[1]


def test_unsafe_or_damaged_model_files_are_refused(tmp_path):
    """Random bytes and a Lambda layer's code are refused with ModelError; no code runs."""
    not_a_zip = tmp_path / "random.keras"
    not_a_zip.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(ModelError, match=re.escape(str(not_a_zip))):
        imgrec.load_model(not_a_zip)

    marker = tmp_path / "lambda-ran"
    inputs = keras.Input((2,))
    outputs = keras.layers.Lambda(_doubling_lambda_that_leaves_a_mark(marker))(inputs)
    lambda_file = tmp_path / "lambda.keras"
    keras.Model(inputs, outputs).save(lambda_file)
    assert marker.exists()  # building the model ran it: the mark works
    marker.unlink()

    with pytest.raises(ModelError, match=re.escape(str(lambda_file))) as refused:
        imgrec.load_model(lambda_file)
    assert "Lambda" in str(refused.value)
    assert not marker.exists()

    # Control: loading the same file unsafely does run the code, which the mark would show.
    keras.saving.load_model(lambda_file, safe_mode=False)
    assert marker.exists()


# --- Where the weights come from ---------------------------------------------------------


@pytest.mark.slow
def test_offline_without_cached_weights_says_what_to_fetch(tmp_path, chelsea_path):
    """Offline with an empty Keras cache: a one-line error naming the file and the folder."""
    home, keras_home = tmp_path / "home", tmp_path / "keras_home"
    home.mkdir()
    keras_home.mkdir()
    env = {**os.environ, "HOME": str(home), "KERAS_HOME": str(keras_home), "IMGREC_OFFLINE": "1"}
    result = run_process(
        sys.executable, "-m", "imgrec", "predict", chelsea_path, "--model", "resnet50", env=env
    )
    assert result.returncode != 0
    assert "resnet50_weights_tf_dim_ordering_tf_kernels.h5" in result.stderr
    assert str(keras_home / "models") in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


@pytest.mark.slow
def test_keras_cache_and_weights_flag_take_precedence(tmp_path, monkeypatch):
    """Keras weights in ~/.keras/models beat the offline package; --weights beats both.

    Keras-format weights mean Keras's own preprocessing ("tf": scale to [-1, 1]).
    """
    reference = keras.applications.MobileNetV2(weights=None)
    cache = tmp_path / "keras_home" / "models"
    cache.mkdir(parents=True)
    # Keras's published weights are legacy HDF5; model.save writes that format for .h5,
    # and Keras's loader reads weights out of a whole-model .h5 file.
    cached = cache / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224.h5"
    reference.save(tmp_path / "legacy.h5")
    (tmp_path / "legacy.h5").rename(cached)
    monkeypatch.setenv("KERAS_HOME", str(cache.parent))

    from_cache = imgrec.load_model("mobilenet_v2")
    info = model_info(from_cache)
    assert info.weights == f"Keras cache ({cached})"
    assert info.preprocessing.name == "keras:tf"
    for got, want in zip(from_cache.get_weights(), reference.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)

    user_file = tmp_path / "mine.weights.h5"
    reference.save_weights(user_file)
    from_flag = imgrec.load_model("mobilenet_v2", weights=user_file)
    assert model_info(from_flag).weights == f"Keras weights {user_file}"
    assert model_info(from_flag).preprocessing.name == "keras:tf"


# --- Entry points, as separate processes -------------------------------------------------


@pytest.mark.slow
def test_console_script_predicts(chelsea_path):
    """The installed ``imgrec`` command classifies a photo with the default network, and
    says nothing on stderr but imgrec's own lines (no TensorFlow or absl start-up notes)."""
    script = Path(sys.executable).parent / "imgrec"
    assert script.is_file(), f"console script missing beside {sys.executable}"
    env = {
        k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "IMGREC_VERBOSE")
    }
    result = run_process(script, "predict", chelsea_path, "--json", "--top", "3", env=env)
    assert result.returncode == 0, result.stderr
    foreign = [line for line in result.stderr.splitlines() if not line.startswith("imgrec: ")]
    assert foreign == [], result.stderr
    (record,) = json.loads(result.stdout)
    assert top1(record) == EGYPTIAN_CAT
    assert len(record["top"]) == 3


def test_python_m_imgrec_help():
    """``python -m imgrec --help`` works and lists the predict verb."""
    result = run_process(sys.executable, "-m", "imgrec", "--help")
    assert result.returncode == 0, result.stderr
    assert "predict" in result.stdout


def test_help_does_not_import_tensorflow():
    """``imgrec --help`` answers at once: neither TensorFlow nor Keras is imported."""
    code = "\n".join(
        [
            "import json, sys",
            "from imgrec.cli import main",
            "for argv in (['--help'], ['predict', '--help']):",
            "    try:",
            "        main(argv)",
            "    except SystemExit:",
            "        pass",
            "print(json.dumps(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules)))",
        ]
    )
    result = run_process(sys.executable, "-c", code)
    assert result.returncode == 0, result.stderr
    assert "--top" in result.stdout
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_api_bad_arrays_get_error_records_and_the_rest_goes_on(mobilenet, coffee_path):
    """A float, RGBA or oddly shaped array is reported like a bad file; grey is converted."""
    coffee = load_image(coffee_path)
    grey = load_image(coffee_path, mode="L")[..., 0]
    rgba = np.dstack([coffee, np.full(coffee.shape[:2], 255, np.uint8)])
    records = imgrec.predict(
        [coffee.astype(np.float32), np.zeros((4, 4, 2), np.uint8), rgba, grey, coffee],
        mobilenet,
        top=1,
    )
    assert "float32" in records[0]["error"] and records[0]["image"] == "array[0]"
    assert "shape" in records[1]["error"]
    assert top1(records[2]) == ESPRESSO  # opaque RGBA is the same photo
    assert "error" not in records[3]  # grey photos are classified, as RGB
    assert top1(records[4]) == ESPRESSO


@pytest.mark.slow
def test_api_grey_model_reads_photos_as_grey(tmp_path, chelsea_path):
    """A one-channel network (MNIST-style) gets H x W x 1 input from colour files."""
    inputs = keras.Input((28, 28, 1))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    preprocessing = Preprocessing(size=(28, 28), scale=1 / 255)
    attach_info(model, ModelInfo("grey", ("a", "b", "c"), preprocessing, "test"))
    (record,) = imgrec.predict(chelsea_path, model, top=3)
    assert sorted(c["class"] for c in record["top"]) == ["a", "b", "c"]
    assert sum(probabilities(record)) == pytest.approx(1, abs=1e-5)
