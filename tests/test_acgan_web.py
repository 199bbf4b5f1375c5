"""The AC-GAN demo: its API (``imgrec.web.routes.acgan``) and its page (``/demos/acgan``).

The generator here is built, not trained (its digits are noise, but the class and the
noise reach it all the same), and saved with the metadata a trained one carries: the
demo finds it among the models folder's files by that metadata alone.
"""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from imgrec.models import acgan
from imgrec.models.loading import save_model
from imgrec.models.metadata import ModelInfo, attach_info
from imgrec.models.preprocessing import Preprocessing
from imgrec.web.app import create_app

PAGE_TIMEOUT_MS = 60_000


def save_generator(path: Path) -> Path:
    """An untrained generator with the metadata ``imgrec train --arch acgan`` writes."""
    info = ModelInfo(
        name=path.name,
        class_names=tuple(str(d) for d in range(10)),
        preprocessing=Preprocessing(size=(28, 28), name="pixels:0-255"),
        weights="built by the tests",
        training={"architecture": "acgan", "epochs_asked": 0, "epochs_done": 0},
    )
    return save_model(attach_info(acgan.build_generator(seed=1), info), path)


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory) -> Path:
    return save_generator(tmp_path_factory.mktemp("built") / "digits-gan.keras")


@pytest.fixture(scope="module")
def client(generator_file, tmp_path_factory) -> TestClient:
    folder = tmp_path_factory.mktemp("models")
    shutil.copy(generator_file, folder / generator_file.name)
    (folder / "notes.keras").write_bytes(b"not a zip")  # not a model: passed over
    return TestClient(create_app(folder, runtime="keras"))


def _pixels(data_url: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert data_url.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(data_url[len(prefix) :]))))


def test_the_api_names_the_generator_it_found(client):
    info = client.get("/api/acgan").json()
    assert info == {
        "model": "digits-gan.keras",
        "command": "imgrec train mnist --arch acgan --out gan.keras",
        "latent": 100,
        "classes": [str(d) for d in range(10)],
    }


def test_a_digit_from_class_and_noise(client, generator_file):
    noise = acgan.draw_noise(1, seed=3)[0]
    answers = {}
    for digit in (3, 7):
        response = client.post(
            "/api/acgan/generate", json={"class": digit, "noise": noise.tolist()}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["model"] == "digits-gan.keras" and body["class"] == digit
        assert body["class_name"] == str(digit)
        answers[digit] = _pixels(body["image"])
        assert answers[digit].shape == (28, 28) and answers[digit].dtype == np.uint8
    # What the API draws is the generator's own answer for that class and noise.
    expected = acgan.generate(acgan.load_generator(generator_file), 7, noise=noise)[0, :, :, 0]
    assert np.array_equal(answers[7], expected)
    assert not np.array_equal(answers[3], answers[7])


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"class": 10, "noise": [0.0] * 100}, "0 to 9"),
        ({"class": -1, "noise": [0.0] * 100}, "class"),
        ({"class": 1, "noise": [0.0] * 99}, "100 finite numbers"),
        ({"class": 1, "noise": [1.5] * 100}, "[-1, 1]"),
        ({"class": 1, "noise": [0.0] * 5000}, "noise"),
        ({"noise": [0.0] * 100}, "class"),
    ],
)
def test_bad_requests_are_refused_in_words(client, body, words):
    response = client.post("/api/acgan/generate", json=body)
    assert response.status_code == 422
    assert words in response.json()["error"]


def test_without_a_generator_the_api_gives_the_command(tmp_path):
    client = TestClient(create_app(tmp_path, runtime="keras"))
    assert client.get("/api/acgan").json()["model"] is None
    response = client.post("/api/acgan/generate", json={"class": 1, "noise": [0.0] * 100})
    assert response.status_code == 404
    assert "imgrec train mnist --arch acgan --out gan.keras" in response.json()["error"]


@pytest.mark.browser
def test_the_page_shows_the_command_then_draws_the_digit_chosen(generator_file, tmp_path):
    """One server, one browser: no generator (the command), then one copied in."""
    from browser import chromium, serving, visit

    folder = tmp_path / "models"
    folder.mkdir()
    with serving("--runtime", "keras", "--models", str(folder)) as url, chromium() as browser:
        opened = visit(browser, url, "/demos/acgan")
        page = opened.page
        try:
            page.wait_for_selector('#main[data-acgan="missing"]', timeout=PAGE_TIMEOUT_MS)
            assert page.text_content("#command") == acgan.TRAIN_COMMAND
            assert page.get_attribute('#menu a[data-demo="acgan"]', "aria-current") == "page"

            shutil.copy(generator_file, folder / generator_file.name)
            page.reload()
            page.wait_for_selector('#main[data-acgan="done"]', timeout=PAGE_TIMEOUT_MS)
            assert page.get_attribute("#digit", "data-class") == "0"
            zero = page.get_attribute("#digit", "src")
            page.click('#digits button[data-digit="7"]')
            page.wait_for_selector('#digit[data-class="7"]', timeout=PAGE_TIMEOUT_MS)
            page.wait_for_selector('#main[data-acgan="done"]', timeout=PAGE_TIMEOUT_MS)
            seven = page.get_attribute("#digit", "src")
            assert seven != zero  # the same noise, another class: another digit
            assert page.get_attribute('#digits button[data-digit="7"]', "aria-pressed") == "true"
            page.click("#new-noise")
            page.wait_for_function(
                "(old) => document.getElementById('digit').src !== old", arg=seven
            )
            page.wait_for_selector('#main[data-acgan="done"]', timeout=PAGE_TIMEOUT_MS)
            assert page.get_attribute("#digit", "data-class") == "7"
            assert opened.outside_requests == []
            assert opened.script_errors == []
        finally:
            opened.close()
