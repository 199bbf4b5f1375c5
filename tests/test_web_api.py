"""The web page's JSON API (imgrec.web.app), through FastAPI's test client.

Image URLs are fetched from a real HTTP server on loopback (tests/local_http.py) that the
allow-list admits; the hostile cases check each refusal's status and message, and that
the application keeps answering afterwards. The last test does the same through uvicorn
on a real socket (tests/test_web_browser.py runs ``imgrec serve`` itself).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from local_http import image_server
from PIL import Image

from imgrec.core.images import load_image
from imgrec.models.chapter import build_chapter_network
from imgrec.models.metadata import ModelInfo, attach_info
from imgrec.models.preprocessing import Preprocessing
from imgrec.web import ort_web
from imgrec.web.app import DEFAULT_UPLOAD_LIMIT, create_app
from imgrec.web.catalog import ModelCatalog
from imgrec.web.model_cache import ModelCache

TINY_CLASSES = ("circle", "square", "triangle")


def _png_bytes(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _decompression_bomb(width: int = 8000, height: int = 8000) -> bytes:
    """A valid grey PNG of ``width x height`` black pixels: 64 MB of pixels in 60 kB."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    rows = zlib.compress(bytes(height * (width + 1)), 9)  # filter byte 0, then zeros
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")
    )


def _decode_data_url(url: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :]))))


@pytest.fixture(scope="module")
def chelsea_png(chelsea_path) -> bytes:
    return Path(chelsea_path).read_bytes()


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """A models folder with one small grey network, a hidden file and a non-model."""
    import imgrec

    folder = tmp_path_factory.mktemp("models")
    model = build_chapter_network("mnist-cnn", input_shape=(28, 28, 1), num_classes=3)
    info = ModelInfo("tiny", TINY_CLASSES, Preprocessing(size=(28, 28)), "untrained, for tests")
    imgrec.save_model(attach_info(model, info), folder / "tiny.keras")
    (folder / ".hidden.keras").write_bytes(b"not listed")
    (folder / "notes.txt").write_text("not a model")
    return folder


@pytest.fixture(scope="module")
def server(chelsea_png):
    with image_server({"/chelsea.png": chelsea_png, "/cat.jpg": b"<html>no cat</html>"}) as running:
        yield running


@pytest.fixture(scope="module")
def client(models_dir, server) -> TestClient:
    """The application with its default limits, allowing the loopback test server."""
    return TestClient(create_app(models_dir, allow_hosts=["127.0.0.1"]))


@pytest.fixture(scope="module")
def strict_client() -> TestClient:
    """The application as ``imgrec serve`` starts it: no allow-list."""
    return TestClient(create_app())


def _predict(client: TestClient, **fields):
    files = fields.pop("files", None)
    return client.post("/api/predict", data={"model": "mobilenet_v2", **fields}, files=files)


# ---- the page and the documentation work offline ----------------------------------------


def test_the_page_and_everything_it_loads_come_from_the_server(client):
    page = client.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assets = re.findall(r'(?:src|href)="([^"#]+)"', page.text)
    assert "/static/app.js" in assets
    assert all(a.startswith(("/", "data:")) and not a.startswith("//") for a in assets), assets
    for asset in [a for a in assets if a.startswith("/")]:
        assert client.get(asset).status_code == 200, asset
    # app.js imports its sibling modules by relative path: they must all be there too.
    modules = re.findall(r'from "\./([\w.]+)"', client.get("/static/app.js").text)
    assert len(modules) >= 4
    for module in modules:
        assert client.get(f"/static/{module}").status_code == 200, module


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_the_api_pages_load_their_scripts_from_the_server(client, page):
    html = client.get(page).text
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets
    assert not [a for a in assets if a.startswith(("http:", "https:", "//"))]
    for asset in assets:
        assert client.get(asset).status_code == 200, asset
    assert "/openapi.json" in html


def test_openapi_describes_the_api(client):
    spec = client.get("/openapi.json").json()
    for path in ["/api/models", "/api/predict", "/api/explain", "/api/layers"]:
        assert path in spec["paths"]


# ---- models and samples --------------------------------------------------------------


def test_models_lists_offline_zoo_networks_and_the_folder_files(client):
    listing = client.get("/api/models").json()
    names = [m["name"] for m in listing["models"]]
    assert names[:2] == ["mobilenet_v2", "efficientnet_lite0"]  # the two offline packages
    assert names[2:] == ["tiny.keras"]
    assert listing["default"] == "mobilenet_v2"
    assert listing["upload_limit"] == DEFAULT_UPLOAD_LIMIT


def test_samples_are_listed_and_served(client, chelsea_png):
    samples = client.get("/api/samples").json()["samples"]
    chelsea = next(s for s in samples if s["name"] == "chelsea")
    assert client.get(chelsea["url"]).content == chelsea_png


# ---- predictions -----------------------------------------------------------------------


@pytest.mark.slow
def test_predict_a_sample(client):
    result = _predict(client, sample="chelsea").json()
    assert result["image"] == "chelsea"
    assert result["model"] == "MobileNetV2"
    assert [c["rank"] for c in result["top"]] == [1, 2, 3, 4, 5]
    assert result["top"][0]["class"] == "Egyptian cat"
    probabilities = [c["probability"] for c in result["top"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert result["time_ms"] > 0
    assert result["fps"] == pytest.approx(1000 / result["time_ms"])
    assert client.get("/api/models").json()["models"][0]["loaded"] is True


def test_an_upload_and_a_url_of_the_same_photo_give_the_same_answer(client, server, chelsea_png):
    by_sample = _predict(client, sample="chelsea").json()["top"]
    upload = _predict(client, files={"file": ("kitty.png", chelsea_png, "image/png")}).json()
    by_url = _predict(client, url=f"{server.base}/chelsea.png").json()
    assert upload["image"] == "kitty.png"
    assert upload["top"] == by_sample
    assert by_url["top"] == by_sample


def test_a_url_that_redirects_within_allowed_hosts_is_followed(client, server):
    result = _predict(client, url=f"{server.base}/redirect?to=/chelsea.png").json()
    assert result["top"][0]["class"] == "Egyptian cat"


@pytest.mark.slow
def test_predict_with_a_grey_model_from_the_folder(client, chelsea_png):
    response = _predict(client, model="tiny.keras", top=3, sample="coffee")
    assert response.status_code == 200
    result = response.json()
    assert result["model"] == "tiny"
    assert sorted(c["class"] for c in result["top"]) == sorted(TINY_CLASSES)
    assert sum(c["probability"] for c in result["top"]) == pytest.approx(1, abs=1e-5)


def test_predict_reports_the_runtime_that_ran(client, models_dir):
    # create_app's default is "auto": ONNX Runtime on the model's cached export.
    assert _predict(client, sample="chelsea").json()["runtime"] == "onnx"
    keras_app = TestClient(create_app(models_dir, runtime="keras"))
    result = _predict(keras_app, model="tiny.keras", sample="coffee").json()
    assert result["runtime"] == "keras"
    with pytest.raises(ValueError, match="unknown runtime 'tflite'"):
        create_app(runtime="tflite")


# ---- in-browser inference: the ONNX export and onnxruntime-web -------------------------


def test_the_onnx_export_is_the_model_the_server_runs(client, chelsea_path):
    """The file and recipe a browser gets reproduce the server's answer in ONNX Runtime."""
    import onnxruntime

    description = client.get("/api/models/mobilenet_v2/onnx.json")
    assert description.status_code == 200
    description = description.json()
    assert description["onnx"] == "/api/models/mobilenet_v2/onnx"
    assert description["input"]["shape"] == [None, 224, 224, 3]
    assert len(description["class_names"]) == 1000
    exported = client.get(description["onnx"])
    assert exported.status_code == 200
    assert exported.headers["content-type"] == "application/octet-stream"
    assert len(exported.content) == description["bytes"]
    assert hashlib.sha256(exported.content).hexdigest() == description["sha256"]

    session = onnxruntime.InferenceSession(exported.content)
    recipe = Preprocessing.from_config(description["preprocessing"])
    batch = recipe([load_image(chelsea_path)])
    (probabilities,) = session.run(None, {session.get_inputs()[0].name: batch})[0]
    server = _predict(client, sample="chelsea").json()["top"]
    order = np.argsort(probabilities)[::-1][:5]
    assert [description["class_names"][i] for i in order] == [c["class"] for c in server]
    assert probabilities[order] == pytest.approx([c["probability"] for c in server], abs=1e-5)


@pytest.mark.slow
def test_a_keras_server_still_hands_out_the_onnx_export(models_dir):
    keras_app = TestClient(create_app(models_dir, runtime="keras"))
    description = keras_app.get("/api/models/tiny.keras/onnx.json").json()
    assert description["label"] == "tiny"
    assert description["class_names"] == list(TINY_CLASSES)
    assert description["input"]["shape"] == [None, 28, 28, 1]
    exported = keras_app.get("/api/models/tiny.keras/onnx").content
    assert hashlib.sha256(exported).hexdigest() == description["sha256"]


def test_the_onnx_export_of_an_unknown_model_is_404(client):
    for suffix in ["onnx", "onnx.json"]:
        for name in ["resnet50", "TINY.keras", "..tiny.keras"]:
            response = client.get(f"/api/models/{name}/{suffix}")
            assert response.status_code == 404
            assert response.json()["error"].startswith(f"unknown model {name!r}")
        # A name with a slash in it matches no route at all.
        response = client.get(f"/api/models/..%2Fmodels%2Ftiny.keras/{suffix}")
        assert response.status_code == 404
        assert "error" in response.json()


def test_onnxruntime_web_is_served_from_a_fixed_list(client):
    runtime = client.get("/api/browser").json()
    assert runtime["available"] is True, runtime["message"]
    assert runtime["version"] == ort_web.VERSION
    dist = ort_web.package_dir() / "dist"
    for module in [runtime["wasm"], runtime["webgpu"]]:
        assert module.startswith("/vendor/onnxruntime-web/ort.")
    for name, media_type in ort_web.ASSETS.items():
        response = client.get(f"/vendor/onnxruntime-web/{name}")
        assert response.status_code == 200, name
        assert response.headers["content-type"].startswith(media_type)
        assert response.content == (dist / name).read_bytes()
    assert (dist / "ort.all.min.js").is_file()  # in the package, yet not on the list
    for name in ["ort.all.min.js", "..%2Fpackage.json", "%2E%2E%2F%2E%2E%2Fpackage.json"]:
        response = client.get(f"/vendor/onnxruntime-web/{name}")
        assert response.status_code == 404, name
        assert "error" in response.json()


def test_a_missing_onnxruntime_web_is_explained_in_json(client, monkeypatch, tmp_path):
    # An install where make never ran npm: the package folder does not exist.
    monkeypatch.setattr(ort_web, "package_dir", lambda: tmp_path / "no-npm" / "onnxruntime-web")
    runtime = client.get("/api/browser")
    assert runtime.status_code == 200
    assert runtime.json()["available"] is False
    message = runtime.json()["message"]
    assert message.startswith("in-browser inference needs onnxruntime-web: run make")
    response = client.get(f"/vendor/onnxruntime-web/{ort_web.WASM_MODULE}")
    assert response.status_code == 503
    assert response.json() == {"error": message}
    assert client.get("/api/models/mobilenet_v2/onnx.json").status_code == 200


# ---- explanation and layers ------------------------------------------------------------


@pytest.mark.slow
def test_explain_sends_the_photo_and_its_heatmap(client):
    result = client.post("/api/explain", data={"model": "mobilenet_v2", "sample": "chelsea"})
    assert result.status_code == 200, result.text
    result = result.json()
    photo = _decode_data_url(result["image"])
    heatmap = _decode_data_url(result["heatmap"])
    assert photo.shape == (224, 224, 3)
    assert heatmap.shape == (224, 224)
    assert heatmap.max() == 255  # the map is scaled to [0, 1], its peak is white
    assert result["class_name"] == "Egyptian cat"
    assert result["class_index"] == 285
    assert result["layer"]


def test_explain_another_class(client):
    result = client.post(
        "/api/explain", data={"model": "mobilenet_v2", "sample": "chelsea", "class_index": 282}
    ).json()
    assert result["class_name"] == "tiger cat"


def test_colormaps_are_tables_of_256_colours(client):
    answer = client.get("/api/colormaps").json()
    assert answer["default"] in answer["colormaps"]
    for table in answer["colormaps"].values():
        colours = np.array(table)
        assert colours.shape == (256, 3)
        assert colours.min() >= 0 and colours.max() <= 255
    jet = np.array(answer["colormaps"]["jet"])
    assert jet[0, 2] > jet[0, 0] and jet[255, 0] > jet[255, 2]  # blue to red


@pytest.mark.slow
def test_layers_and_their_feature_maps(client):
    layers = client.get("/api/layers", params={"model": "tiny.keras"}).json()["layers"]
    spatial = [
        layer for layer in layers if layer["output_shape"] and len(layer["output_shape"]) == 4
    ]
    assert spatial
    last = spatial[-1]
    response = client.post(
        "/api/activations",
        data={"model": "tiny.keras", "sample": "chelsea", "layer": last["name"], "channels": 4},
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["shape"] == last["output_shape"][1:]
    assert len(result["channels"]) == 4
    height, width = last["output_shape"][1:3]
    thumbnail = _decode_data_url(result["channels"][0])
    assert thumbnail.shape[0] % height == 0 and thumbnail.shape[1] % width == 0
    assert thumbnail.shape[0] // height == thumbnail.shape[1] // width  # enlarged, not bent


def test_feature_maps_of_an_unknown_or_flat_layer(client):
    fields = {"model": "tiny.keras", "sample": "chelsea"}
    unknown = client.post("/api/activations", data={**fields, "layer": "../conv"})
    assert unknown.status_code == 404
    assert unknown.json()["error"] == "model 'tiny.keras' has no layer '../conv'"
    flat = client.get("/api/layers", params={"model": "tiny.keras"}).json()["layers"][-1]
    answer = client.post("/api/activations", data={**fields, "layer": flat["name"]})
    assert answer.status_code == 422
    assert f"has no layer {flat['name']!r} to choose here" in answer.json()["error"]


def test_the_model_cache_loads_once_under_concurrent_requests(models_dir):
    import imgrec

    calls = []

    def slow_loader(source: str):
        calls.append(source)
        time.sleep(0.3)  # a load long enough for every thread to ask meanwhile
        return imgrec.load_model(source)

    catalog = ModelCatalog(models_dir)
    tiny = catalog.find("tiny.keras")
    cache = ModelCache(capacity=1, loader=slow_loader)
    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get(tiny))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [tiny.source]
    assert len({id(loaded.model) for loaded in results}) == 1
    assert results[0].mode == "L"
    assert cache.loaded_names() == {"tiny.keras"}


def test_the_model_cache_keeps_the_most_recent(models_dir, tmp_path):
    import imgrec

    (tmp_path / "a.keras").write_bytes((models_dir / "tiny.keras").read_bytes())
    (tmp_path / "b.keras").write_bytes((models_dir / "tiny.keras").read_bytes())
    catalog = ModelCatalog(tmp_path)
    cache = ModelCache(capacity=1, loader=imgrec.load_model)
    first = cache.get(catalog.find("a.keras"))
    assert cache.get(catalog.find("a.keras")) is first
    second = cache.get(catalog.find("b.keras"))
    assert cache.loaded_names() == {"b.keras"}
    # A file replaced on disk is a new version: loaded again, not served stale.
    os.utime(tmp_path / "b.keras", ns=(1, 1))
    third = cache.get(catalog.find("b.keras"))
    assert third.entry.version != second.entry.version
    assert third.model is not second.model


# ---- hostile input: each case's status and message, and the server goes on ------------


def _still_serving(client: TestClient) -> None:
    response = _predict(client, sample="chelsea")
    assert response.status_code == 200
    assert response.json()["top"][0]["class"] == "Egyptian cat"


def test_an_oversized_upload_is_refused(client):
    too_big = b"\xff\xd8\xff" + bytes(DEFAULT_UPLOAD_LIMIT)  # a JPEG start, then 10 MiB
    response = _predict(client, files={"file": ("huge.jpg", too_big, "image/jpeg")})
    assert response.status_code == 413
    assert response.json() == {
        "error": "huge.jpg: larger than the upload limit of 10,485,760 bytes"
    }
    _still_serving(client)


def test_a_body_far_over_the_limit_is_refused_unread(client):
    response = _predict(client, files={"file": ("huge.jpg", bytes(11 * 2**20), "image/jpeg")})
    assert response.status_code == 413
    assert response.json() == {
        "error": "the request is too large: uploads are limited to 10,485,760 bytes"
    }
    _still_serving(client)


def test_a_chunked_body_is_counted_as_it_arrives(client):
    # No Content-Length: the body arrives in chunks and is cut off once past the limit.
    def chunks():
        yield b'--cut\r\nContent-Disposition: form-data; name="file"; filename="a.jpg"\r\n\r\n'
        for _ in range(12):
            yield bytes(2**20)

    response = client.post(
        "/api/predict",
        content=chunks(),
        headers={"Content-Type": "multipart/form-data; boundary=cut"},
    )
    assert response.status_code == 413
    assert "uploads are limited to 10,485,760 bytes" in response.json()["error"]
    _still_serving(client)


def test_a_non_image_with_a_jpg_name_is_refused(client):
    response = _predict(client, files={"file": ("cat.jpg", b"#!/bin/sh\nrm -rf /\n", "image/jpeg")})
    assert response.status_code == 422
    assert response.json()["error"].startswith("cat.jpg: not an image")
    _still_serving(client)


def test_a_non_image_behind_a_url_is_refused(client, server):
    url = f"{server.base}/cat.jpg"
    response = _predict(client, url=url)
    assert response.status_code == 422
    assert response.json()["error"].startswith(f"{url}: not an image")


def test_a_decompression_bomb_is_refused_before_decoding(client):
    bomb = _decompression_bomb()
    assert len(bomb) < 100_000
    response = _predict(client, files={"file": ("bomb.png", bomb, "image/png")})
    assert response.status_code == 422
    assert response.json()["error"] == (
        "bomb.png: the image is too large (8000 x 8000 = 64,000,000 pixels, "
        "the limit is 50,000,000)"
    )
    _still_serving(client)


def test_an_image_over_the_decoding_budget_is_refused(models_dir, chelsea_png):
    # chelsea needs about 0.6 MiB to decode (Pillow's RGB, before it is shrunk for the
    # 28 x 28 model); a server allowed 100 kB for decoding says so instead of growing.
    frugal = TestClient(create_app(models_dir, decode_memory=100_000, runtime="keras"))
    upload = {"file": ("kitty.png", chelsea_png, "image/png")}
    response = _predict(frugal, model="tiny.keras", files=upload)
    assert response.status_code == 413
    assert response.json() == {
        "error": "kitty.png: decoding it would take about 0.6 MiB of memory, more than the "
        "server's 0.1 MiB for decoding"
    }
    # The header's refusals still come first.
    bomb = {"file": ("bomb.png", _decompression_bomb(), "image/png")}
    assert _predict(frugal, model="tiny.keras", files=bomb).status_code == 422


@pytest.mark.parametrize(
    ("url", "status", "message"),
    [
        ("file:///etc/passwd", 400, "only http:// and https:// URLs are fetched, not file://"),
        (
            "ftp://example.org/cat.jpg",
            400,
            "only http:// and https:// URLs are fetched, not ftp://",
        ),
        ("http://169.254.169.254/latest/meta-data/", 403, "169.254.169.254 is 169.254.169.254"),
        ("http://localhost/cat.jpg", 403, "not a public address"),
        ("http://[::1]/cat.jpg", 403, "not a public address"),
    ],
)
def test_urls_that_are_not_public_http_are_refused(strict_client, url, status, message):
    response = _predict(strict_client, url=url)
    assert response.status_code == status
    assert response.json()["error"].startswith(url)
    assert message in response.json()["error"]


def test_loopback_urls_need_the_allow_list(strict_client, client, server):
    url = f"{server.base}/chelsea.png"
    server.paths.clear()
    refused = _predict(strict_client, url=url)
    assert refused.status_code == 403
    assert refused.json()["error"] == (
        f"{url}: refused, 127.0.0.1 is 127.0.0.1, which is not a public address "
        "(loopback, private, link-local or reserved)"
    )
    assert server.paths == []  # refused before connecting
    assert _predict(client, url=url).status_code == 200


def test_a_redirect_from_an_allowed_host_to_a_private_one_is_refused(client, server):
    port = server.server_address[1]
    target = f"http://127.0.0.2:{port}/chelsea.png"
    server.paths.clear()
    response = _predict(client, url=f"{server.base}/redirect?to={target}")
    assert response.status_code == 403
    assert response.json()["error"].startswith(f"{target}: refused, 127.0.0.2 is 127.0.0.2")
    assert server.paths == [f"/redirect?to={target}"]
    _still_serving(client)


def test_a_url_body_over_the_limit_is_refused(models_dir, server):
    small = TestClient(create_app(allow_hosts=["127.0.0.1"], upload_limit=1000))
    response = _predict(small, url=f"{server.base}/stream?size=1001")
    assert response.status_code == 413
    assert "longer than the limit of 1,000 bytes" in response.json()["error"]


@pytest.mark.parametrize(
    "name", ["../../../etc/passwd", "../tiny.keras", "/etc/passwd", "chelsea.png", ""]
)
def test_sample_names_are_looked_up_not_joined(client, name):
    response = _predict(client, sample=name or " ")
    assert response.status_code == 404
    assert response.json()["error"].startswith("unknown sample")


def test_sample_paths_cannot_leave_the_listing(client):
    for path in ["/api/samples/..%2F..%2Fetc%2Fpasswd", "/api/samples/%2Fetc%2Fpasswd"]:
        response = client.get(path)
        assert response.status_code == 404
        assert "error" in response.json()


def test_model_names_are_looked_up_not_joined(client, models_dir):
    outside = models_dir.parent / "outside.keras"
    outside.write_bytes((models_dir / "tiny.keras").read_bytes())
    for name in ["../outside.keras", str(outside), "./tiny.keras", "TINY.keras", "resnet50"]:
        response = _predict(client, model=name, sample="chelsea")
        assert response.status_code == 404, name
        assert response.json()["error"].startswith(f"unknown model {name!r}")
    layers = client.get("/api/layers", params={"model": "../outside.keras"})
    assert layers.status_code == 404


@pytest.mark.parametrize(
    ("fields", "files", "status", "message"),
    [
        ({}, None, 400, "give exactly one image: a 'sample', a 'url' or a 'file'"),
        ({"sample": "chelsea", "url": "http://x.org/a.jpg"}, None, 400, "(got sample, url)"),
        ({"sample": "chelsea", "top": "0"}, None, 422, "top: Input should be greater than"),
        ({"sample": "chelsea", "top": "many"}, None, 422, "top: Input should be a valid integer"),
    ],
)
def test_malformed_requests_get_json_errors(client, fields, files, status, message):
    response = _predict(client, files=files, **fields)
    assert response.status_code == status
    assert message in response.json()["error"]


def test_unknown_routes_and_methods_get_json_errors(client):
    assert client.get("/api/nothing").json() == {"error": "Not Found"}
    response = client.get("/api/predict")
    assert response.status_code == 405
    assert response.json() == {"error": "Method Not Allowed"}


# ---- a real server ---------------------------------------------------------------------


@pytest.mark.slow
def test_serve_runs_the_runtime_it_is_given(models_dir):
    """``imgrec serve --runtime keras``: /api/predict says Keras ran; a bad choice exits 2."""
    import httpx2

    command = [sys.executable, "-m", "imgrec", "serve", "--port", "0", "--json"]
    refused = subprocess.run([*command, "--runtime", "tflite"], capture_output=True, text=True)
    assert refused.returncode == 2
    assert "--runtime: invalid choice: 'tflite'" in refused.stderr
    process = subprocess.Popen(
        [*command, "--runtime", "keras", "--models", str(models_dir)],
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        url = json.loads(process.stdout.readline())["url"]
        with httpx2.Client(base_url=url, timeout=120) as http:
            answer = http.post("/api/predict", data={"model": "tiny.keras", "sample": "coffee"})
        assert answer.status_code == 200
        assert answer.json()["runtime"] == "keras"
    finally:
        process.terminate()
        process.wait(timeout=30)


@pytest.mark.slow
def test_a_real_server_survives_hostile_requests():
    """uvicorn on a loopback socket, in a thread: real HTTP, connections and body limits."""
    import httpx2
    import uvicorn

    server = uvicorn.Server(
        uvicorn.Config(create_app(), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        with httpx2.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            hostile = [
                {"files": {"file": ("bomb.png", _decompression_bomb())}},
                {"files": {"file": ("cat.jpg", b"MZ\x90\x00 not a photo")}},
                {"files": {"file": ("big.jpg", bytes(11 * 2**20))}},
                {"data": {"url": "file:///etc/passwd"}},
                {"data": {"url": "http://127.0.0.1:1/"}},
                {"data": {"sample": "../../etc/passwd"}},
            ]
            statuses = []
            for request in hostile:
                data = {"model": "mobilenet_v2", **request.get("data", {})}
                answer = http.post("/api/predict", data=data, files=request.get("files"))
                assert "error" in answer.json()
                statuses.append(answer.status_code)
            assert statuses == [422, 422, 413, 400, 403, 404]
            good = http.post("/api/predict", data={"model": "mobilenet_v2", "sample": "chelsea"})
            assert good.status_code == 200
            assert good.json()["top"][0]["class"] == "Egyptian cat"
        assert thread.is_alive()
    finally:
        server.should_exit = True
        thread.join(timeout=30)
