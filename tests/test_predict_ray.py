"""``imgrec predict --engine ray``: Ray Data workers, results tables, ``--resume``.

The results tables (``imgrec.core.tables``) and the source listing are tested without
Ray. The tests that run Ray are marked slow: one local Ray (two CPUs) serves the whole
module, and MobileNetV2 is exported to ONNX once; each job still starts its own
workers (a few seconds). Expected answers are ImageNet facts about scikit-image's
photos: chelsea is an "Egyptian cat", coffee an "espresso".
"""

from __future__ import annotations

import csv
import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image

from imgrec.core.errors import ImgrecError
from imgrec.core.tables import ResultsFile, parts_folder, result_columns, result_row

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

GOOD = {"chelsea.jpg": "Egyptian cat", "coffee.png": "espresso"}
# Broken files, and a word of the error each must get.
BAD = {
    "broken.jpg": "not an image",
    "empty.png": "empty",
    "truncated.jpg": "truncated",
    "bomb.png": "too large",
}
SUBPROCESS_TIMEOUT_S = 300


def png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\0" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def photos(tmp_path_factory, chelsea_path, coffee_path) -> Path:
    """Two photos and four broken image files."""
    folder = tmp_path_factory.mktemp("photos")
    (folder / "chelsea.jpg").write_bytes(chelsea_path.read_bytes())  # PNG data, .jpg name
    (folder / "coffee.png").write_bytes(coffee_path.read_bytes())
    (folder / "broken.jpg").write_text("this is not a photo\n")
    (folder / "empty.png").write_bytes(b"")
    jpeg = io.BytesIO()
    with Image.open(coffee_path) as photo:
        photo.convert("RGB").save(jpeg, "JPEG")
    (folder / "truncated.jpg").write_bytes(jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    (folder / "bomb.png").write_bytes(png_claiming(100_000, 100_000))
    return folder


def row(image: str, top: int = 2, error: str | None = None) -> dict:
    """A table row for ``image``: two made-up classes, or an error."""
    if error:
        return result_row({"image": image, "error": error}, top)
    ranked = [{"class": "=cat", "probability": 0.75}, {"class": "dog", "probability": 0.25}]
    return result_row({"image": image, "top": ranked, "time_ms": 1.5}, top)


def images_in(path: Path) -> list[str]:
    """The image column of a results table, in its order."""
    if path.suffix == ".parquet":
        return pq.read_table(path)["image"].to_pylist()
    if path.suffix == ".csv":
        with path.open(newline="") as f:
            return [r["image"] for r in csv.DictReader(f)]
    return [json.loads(line)["image"] for line in path.read_text().splitlines()]


# --- Results tables, without Ray -------------------------------------------------------


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_text_tables_drop_a_row_cut_short_and_resume(tmp_path, suffix):
    """A killed run's last row, cut short, is dropped and its image counts as missing;
    whole rows count as done (the CSV compares names as written, formula guard included)."""
    out = tmp_path / f"r{suffix}"
    table = ResultsFile(out, 2)
    table.write([row("=a.jpg"), row("b.jpg", error="b.jpg: not an image")])
    table.close()
    whole = out.read_bytes()
    out.write_bytes(whole + whole.splitlines(keepends=True)[-1][:9])  # a kill mid-row
    resumed = ResultsFile(out, 2, resume=True)
    assert resumed.rows_before == 2
    assert resumed.missing(["=a.jpg", "b.jpg", "c.jpg"]) == ["c.jpg"]
    assert out.read_bytes() == whole
    resumed.write([row("c.jpg")])
    resumed.close()
    assert images_in(out) == ["'=a.jpg" if suffix == ".csv" else "=a.jpg", "b.jpg", "c.jpg"]


def test_parquet_parts_of_a_killed_run_are_kept_and_merged(tmp_path):
    """Rows go to atomic part files while the run lasts: a run that never closes keeps
    them; the next run resumes from them and merges everything into one file."""
    out = tmp_path / "r.parquet"
    table = ResultsFile(out, 2)
    table.write([row("a.jpg"), row("b.jpg", error="b.jpg: truncated")])
    table.flush()  # then the process is killed: close() never runs
    assert not out.exists() and len(list(parts_folder(out).iterdir())) == 1
    with pytest.raises(ImgrecError, match="--resume"):
        ResultsFile(out, 2)
    resumed = ResultsFile(out, 2, resume=True)
    assert resumed.missing(["a.jpg", "b.jpg", "c.jpg"]) == ["c.jpg"]
    resumed.write([row("c.jpg")])
    resumed.close()
    assert not parts_folder(out).exists()
    merged = pq.read_table(out)
    assert merged.schema.names == result_columns(2)
    assert merged["image"].to_pylist() == ["a.jpg", "b.jpg", "c.jpg"]
    assert merged["error"].to_pylist() == [None, "b.jpg: truncated", None]
    assert merged["class_1"].to_pylist() == ["=cat", None, "=cat"]


def test_tables_refuse_overwriting_other_columns_and_formats(tmp_path):
    out = tmp_path / "r.csv"
    ResultsFile(out, 2).close()
    assert out.read_bytes() == (",".join(result_columns(2)) + "\r\n").encode()
    with pytest.raises(ImgrecError, match="exists: --resume"):
        ResultsFile(out, 2)
    with pytest.raises(ImgrecError, match="--top 3"):
        ResultsFile(out, 3, resume=True)
    with pytest.raises(ImgrecError, match=r"parquet, \.csv or \.jsonl"):
        ResultsFile(tmp_path / "r.xlsx", 2)


def test_sources_folder_glob_list_file_and_uri(photos, tmp_path):
    from imgrec.prediction.ray_batch import list_images

    everything = sorted(str(p) for p in photos.iterdir())
    assert list_images(photos) == everything
    assert list_images(f"file://{photos}") == [f"file://{p}" for p in everything]
    assert list_images(str(photos / "*.png")) == sorted(str(p) for p in photos.glob("*.png"))
    listing = photos.parent / "list.txt"
    listing.write_text(f"# photos\n{photos.name}/coffee.png\n\n{photos / 'chelsea.jpg'}\n")
    assert list_images(listing) == [str(photos / "coffee.png"), str(photos / "chelsea.jpg")]
    assert list_images([listing, photos / "coffee.png"]) == list_images(listing)


def test_without_ray_the_engine_says_what_to_install(monkeypatch, photos, tmp_path):
    from imgrec.prediction.ray_batch import predict_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ImgrecError, match=r"pip install 'imgrec\[ray\]'"):
        predict_ray(photos, out=tmp_path / "r.csv")
    assert not (tmp_path / "r.csv").exists()


def test_help_and_the_worker_import_neither_ray_nor_keras():
    """``imgrec predict --help`` imports no Ray or pyarrow; a batch worker starts without
    TensorFlow or Keras (it runs ONNX Runtime from bytes)."""
    code = "\n".join(
        [
            "import json, sys",
            "from imgrec.cli import main",
            "try:",
            "    main(['predict', '--help'])",
            "except SystemExit:",
            "    pass",
            "heavy = ('tensorflow', 'keras', 'ray', 'pyarrow')",
            "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))",
            "import imgrec.deploy.batch_worker",
            "print(json.dumps(sorted(m for m in heavy[:3] if m in sys.modules)))",
        ]
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--engine" in result.stdout
    assert [json.loads(line) for line in result.stdout.splitlines()[-2:]] == [[], []]


# --- Ray -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_cluster(isolated_environment):
    """One local Ray for the module: predict_ray uses it as it is (and stops none)."""
    ray = pytest.importorskip("ray")
    import logging

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def onnx_model(isolated_environment) -> Path:
    """MobileNetV2 exported to ONNX once (the exports cache of the test session)."""
    from imgrec.deploy.export_cache import load_runtime

    return load_runtime("mobilenet_v2", "onnx", verbose=False).path


def check_rows(rows: list[dict], photos: Path) -> None:
    """One row per file of ``photos``, right classes for the photos, errors as rows."""
    by_name = {Path(r["image"]).name: r for r in rows}
    assert len(rows) == len(by_name) == len(GOOD) + len(BAD)
    for name, expected in GOOD.items():
        assert by_name[name]["class_1"] == expected, by_name[name]
        assert by_name[name]["error"] in (None, "")
        assert float(by_name[name]["time_ms"]) > 0
    for name, word in BAD.items():
        error = by_name[name]["error"]
        assert word in error and name in error, (name, error)
        assert by_name[name]["class_1"] in (None, "")


@pytest.mark.slow
def test_ray_folder_with_broken_files_to_parquet(ray_cluster, onnx_model, photos, tmp_path):
    """Every file gets one row, the same classes and probabilities as the local engine."""
    import imgrec
    from imgrec.prediction.ray_batch import predict_ray

    out = tmp_path / "r.parquet"
    summary = predict_ray(photos, onnx_model, out=out, workers=2, batch_size=2, verbose=False)
    assert (summary["classified"], summary["failed"], summary["skipped"]) == (2, 4, 0)
    assert (summary["workers"], summary["runtime"]) == (2, "onnx")
    table = pq.read_table(out)
    assert table.schema == pa.schema(
        [(c, pa.float64() if c[:2] in ("pr", "ti") else pa.string()) for c in result_columns(5)]
    )
    rows = table.to_pylist()
    check_rows(rows, photos)
    local = {r["image"]: r for r in imgrec.predict(photos, onnx_model, top=5, verbose=False)}
    for got in rows:
        if got["error"] is None:
            expected = local[got["image"]]["top"]
            assert [got[f"class_{k}"] for k in range(1, 6)] == [c["class"] for c in expected]
            for k, c in enumerate(expected, start=1):
                assert got[f"probability_{k}"] == pytest.approx(c["probability"], abs=1e-5)


@pytest.mark.slow
def test_ray_glob_and_list_file_to_csv(ray_cluster, onnx_model, photos, tmp_path):
    """Sources mix: a glob and a text file of paths (one missing); CSV cells as --csv."""
    from imgrec.prediction.ray_batch import predict_ray

    listing = tmp_path / "list.txt"
    listing.write_text(f"{photos / 'chelsea.jpg'}\n{photos / 'broken.jpg'}\nnowhere.jpg\n")
    out = tmp_path / "r.csv"
    sources = [str(photos / "*.png"), listing]
    summary = predict_ray(sources, onnx_model, out=out, top=2, workers=2, verbose=False)
    with out.open(newline="") as f:
        rows = {Path(r["image"]).name: r for r in csv.DictReader(f)}
    expected = {"coffee.png", "empty.png", "bomb.png", "chelsea.jpg", "broken.jpg", "nowhere.jpg"}
    assert set(rows) == expected and summary["images"] == len(expected)
    assert list(next(iter(rows.values()))) == result_columns(2)
    assert rows["coffee.png"]["class_1"] == "espresso"
    assert (
        0
        < float(rows["chelsea.jpg"]["probability_2"])
        < float(rows["chelsea.jpg"]["probability_1"])
    )
    assert "no such file" in rows["nowhere.jpg"]["error"]
    assert rows["bomb.png"]["class_1"] == rows["bomb.png"]["time_ms"] == ""


@pytest.mark.slow
def test_ray_resume_adds_only_the_missing_rows(ray_cluster, onnx_model, photos, tmp_path):
    """A partial output (two whole rows and one cut short by a kill): the resumed run
    keeps the two rows as they are and adds one row for each other file."""
    from imgrec.prediction.ray_batch import predict_ray

    out = tmp_path / "r.jsonl"
    kept = [row(str(photos / "chelsea.jpg"), top=5), row(str(photos / "broken.jpg"), top=5)]
    out.write_text("".join(json.dumps(r) + "\n" for r in kept) + '{"image": "/x/coffee.png", "cl')
    summary = predict_ray(photos, onnx_model, out=out, resume=True, workers=2, verbose=False)
    assert summary["skipped"] == 2 and summary["classified"] + summary["failed"] == 4
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[:2] == kept  # not classified again: the made-up classes are still there
    added = {Path(r["image"]).name: r for r in rows[2:]}
    assert sorted(added) == ["bomb.png", "coffee.png", "empty.png", "truncated.jpg"]
    assert added["coffee.png"]["class_1"] == "espresso" and added["coffee.png"]["error"] is None
    for name in ("bomb.png", "empty.png", "truncated.jpg"):
        assert BAD[name] in added[name]["error"] and added[name]["class_1"] is None


@pytest.mark.slow
def test_cli_ray_engine_resumes_a_killed_parquet_run(ray_cluster, onnx_model, photos, tmp_path):
    """``imgrec predict FOLDER --engine ray --workers 2 --out r.parquet --resume`` in its own
    process, joining the module's Ray by --address, after a run killed with one part
    written: one row per file, errors as rows, no duplicates; exit code 1 (broken files)."""
    out = tmp_path / "r.parquet"
    first = ResultsFile(out, 5)
    first.write([row(str(photos / "coffee.png"), top=5)])
    first.flush()  # killed here: a part file, no merged table
    address = ray_cluster.get_runtime_context().gcs_address
    argv = [sys.executable, "-m", "imgrec", "predict", photos, "--engine", "ray"]
    argv += ["--workers", "2", "--out", out, "--resume", "--model", onnx_model]
    argv += ["--address", address, "--json"]
    result = subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        env={**os.environ, "RAY_ADDRESS": ""},
        check=False,
    )
    assert result.returncode == 1, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["skipped"], summary["classified"], summary["failed"]) == (1, 1, 4)
    assert not parts_folder(out).exists()
    rows = pq.read_table(out).to_pylist()
    assert rows[0]["class_1"] == "=cat"  # the killed run's row, kept as it was
    assert sorted(Path(r["image"]).name for r in rows) == sorted([*GOOD, *BAD])
    check_rows([{**rows[0], "class_1": "espresso"}, *rows[1:]], photos)


def test_local_engine_writes_out_and_resumes(photos, tmp_path, capsys):
    """``--out`` and ``--resume`` with the local engine: the same table, only missing rows
    added (a tiny Keras model: what is tested is the table, not the classes)."""
    import keras

    import imgrec
    from imgrec.cli import main
    from imgrec.models.metadata import ModelInfo, attach_info
    from imgrec.models.preprocessing import Preprocessing

    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, outputs)
    attach_info(
        model, ModelInfo("tiny", ("a", "b", "c"), Preprocessing((8, 8), scale=1 / 255), "-")
    )
    model_path = tmp_path / "tiny.keras"
    imgrec.save_model(model, model_path)
    out = tmp_path / "r.jsonl"
    args = ["predict", str(photos), "--model", str(model_path), "--runtime", "keras", "--top", "2"]
    assert main([*args, "--out", str(out), "--quiet"]) == 1  # the broken files
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(Path(r["image"]).name for r in rows) == sorted([*GOOD, *BAD])
    assert main([*args, "--out", str(out)]) != 0
    assert "--resume" in capsys.readouterr().err
    kept = [r for r in rows if Path(r["image"]).name not in ("coffee.png", "bomb.png")]
    out.write_text("".join(json.dumps(r) + "\n" for r in kept))
    assert main([*args, "--out", str(out), "--resume", "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert sorted(Path(r["image"]).name for r in printed) == ["bomb.png", "coffee.png"]
    again = [json.loads(line) for line in out.read_text().splitlines()]
    assert again[: len(kept)] == kept
    assert sorted(Path(r["image"]).name for r in again) == sorted([*GOOD, *BAD])


def test_cli_refuses_engine_flags_out_of_place(capsys):
    from imgrec.cli import main

    assert main(["predict", "a.jpg", "--resume"]) != 0
    assert "--resume needs --out" in capsys.readouterr().err
    assert main(["predict", "a.jpg", "--workers", "2"]) != 0
    assert "--workers: only with --engine ray" in capsys.readouterr().err
    assert main(["predict", "a.jpg", "--engine", "ray"]) != 0
    assert "--out results.parquet" in capsys.readouterr().err
