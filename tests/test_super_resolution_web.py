"""The super-resolution demo: its API (through FastAPI's test client) and its page (one
visit in Chromium, against a real ``imgrec serve``).

The network is trained for two steps once per module: the API's shapes and refusals,
and the page's slider, do not depend on how good it is.
"""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from browser import chromium, serving, visit
from fastapi.testclient import TestClient
from PIL import Image

from imgrec.models.chapter import build_chapter_network
from imgrec.models.loading import save_model
from imgrec.models.metadata import ModelInfo, attach_info
from imgrec.models.preprocessing import Preprocessing
from imgrec.training.super_resolution import train_super_resolution
from imgrec.web.app import create_app
from imgrec.web.routes.super_resolution import MAX_SIDE


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _decoded(data_url: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix) :]))))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, chelsea_path) -> Path:
    """A models folder: a two-step sr-cnn, a classifier, and a file that is no model."""
    photos = tmp_path_factory.mktemp("photos")
    shutil.copy(chelsea_path, photos / "chelsea.png")
    folder = tmp_path_factory.mktemp("models")
    train_super_resolution(
        photos, "sr-cnn", out=folder / "sharp.keras", epochs=1, steps_per_epoch=2,
        batch_size=2, verbose=0,
    )  # fmt: skip
    classifier = build_chapter_network("mnist-cnn", input_shape=(28, 28, 1), num_classes=3)
    attach_info(
        classifier, ModelInfo("tiny", ("a", "b", "c"), Preprocessing(size=(28, 28)), "test")
    )
    save_model(classifier, folder / "classifier.keras")
    (folder / "broken.keras").write_bytes(b"PK not really a zip")
    return folder


@pytest.fixture(scope="module")
def client(models_dir) -> TestClient:
    return TestClient(create_app(models_dir, upload_limit=200_000))


def test_the_demo_lists_only_super_resolution_networks(client, tmp_path):
    listing = client.get("/api/super-resolution/models").json()
    assert listing["models"] == [{"name": "sharp.keras", "arch": "sr-cnn"}]
    assert listing["architectures"] == ["sr-cnn", "sr-resnet"]
    empty = TestClient(create_app(tmp_path)).get("/api/super-resolution/models").json()
    assert empty["models"] == []
    assert "imgrec train photos/train --arch sr-cnn --out" in empty["command"]
    assert str(tmp_path) in empty["command"]


def test_a_sample_comes_back_twice_as_large_with_bilinear_beside_it(client):
    answer = client.post("/api/super-resolution", data={"model": "sharp.keras", "sample": "coffee"})
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert result["arch"] == "sr-cnn" and result["image"] == "coffee"
    # coffee is 600 x 400: shrunk to 512 on its long side first.
    assert result["shrunk_from"] == [600, 400] and result["size"] == [MAX_SIDE, 341]
    network, bilinear = _decoded(result["network"]), _decoded(result["bilinear"])
    assert network.shape == bilinear.shape == (682, 1024, 3)
    assert result["upscaled"] == [1024, 682]
    assert _decoded(result["input"]).shape == (341, 512, 3)


def test_an_upload_of_odd_size_grey_or_transparent(client):
    grey = np.arange(37 * 53, dtype=np.uint8).reshape(37, 53)
    answer = client.post(
        "/api/super-resolution",
        data={"model": "sharp.keras"},
        files={"file": ("grey.png", _png(grey), "image/png")},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["upscaled"] == [106, 74] and answer.json()["shrunk_from"] is None
    rgba = np.zeros((20, 30, 4), np.uint8)
    answer = client.post(
        "/api/super-resolution",
        data={"model": "sharp.keras"},
        files={"file": ("alpha.png", _png(rgba), "image/png")},
    )
    assert answer.status_code == 200 and _decoded(answer.json()["network"]).shape == (40, 60, 3)


@pytest.mark.parametrize(
    ("fields", "files", "status", "says"),
    [
        ({"model": "classifier.keras", "sample": "coffee"}, None, 404, "super-resolution"),
        ({"model": "broken.keras", "sample": "coffee"}, None, 404, "unknown"),
        ({"model": "../sharp.keras", "sample": "coffee"}, None, 404, "unknown"),
        ({"model": "sharp.keras", "sample": "../../etc/passwd"}, None, 404, "unknown sample"),
        ({"model": "sharp.keras"}, {"file": ("x.png", b"not an image", "image/png")}, 422, "x.png"),
        ({"model": "sharp.keras"}, {"file": ("big.png", b"0" * 200_001, "image/png")}, 413, ""),
        ({"model": "sharp.keras", "url": "http://127.0.0.1:9/x.png"}, None, 403, "127.0.0.1"),
        ({"model": "sharp.keras"}, None, 400, "exactly one image"),
        ({"sample": "coffee"}, None, 422, "model"),
    ],
)
def test_hostile_input_is_refused(client, fields, files, status, says):
    answer = client.post("/api/super-resolution", data=fields, files=files)
    assert answer.status_code == status, answer.text
    assert says in answer.json()["error"]
    assert client.get("/api/super-resolution/models").status_code == 200  # still answering


def test_a_field_given_twice_is_refused(client):
    answer = client.post(
        "/api/super-resolution",
        content=b"model=sharp.keras&sample=coffee&sample=chelsea",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert answer.status_code == 400 and "'sample' is given 2 times" in answer.json()["error"]


# ---- the page in Chromium ---------------------------------------------------------------


@pytest.mark.browser
def test_the_slider_moves_the_line_between_bilinear_and_the_network(models_dir):
    with serving("--models", str(models_dir), "--runtime", "keras") as url, chromium() as browser:
        opened = visit(browser, url, "/demos/super-resolution")
        page = opened.page
        try:
            page.wait_for_selector("#main[data-state='ready']", timeout=60_000)
            assert page.locator("#menu a[aria-current='page']").get_attribute("href") == (
                "/demos/super-resolution"
            )
            page.click("#samples button[data-sample='chelsea']")
            page.wait_for_selector("#main[data-state='done']", timeout=120_000)
            after = page.locator("#after")
            assert after.evaluate("img => [img.naturalWidth, img.naturalHeight]") == [902, 600]
            before = page.locator("#before").evaluate("img => img.naturalWidth")
            assert before == 902
            clip = "img => getComputedStyle(img).clipPath"
            assert "50%" in after.evaluate(clip)
            page.locator("#slider").fill("20")
            assert "20%" in after.evaluate(clip)
            assert page.locator("#compare").get_attribute("data-split") == "20"
            box = page.locator("#compare").bounding_box()
            page.mouse.click(box["x"] + 0.75 * box["width"], box["y"] + box["height"] / 2)
            split = page.locator("#compare").get_attribute("data-split")
            assert split in {"74", "75", "76"} and page.locator("#slider").input_value() == split
            assert f"{split}%" in after.evaluate(clip)
            assert "ms" in page.locator("#status").inner_text()
            assert opened.outside_requests == [] and opened.script_errors == []
        finally:
            opened.close()
