"""The "Draw a digit" demo: MNIST's preprocessing, the model it finds, its API, its page.

One tiny ``mnist-cnn`` is trained per module (one epoch on 200 of the npm package's
digits per class, enough to read a clean 1 and 7) and served by one real ``imgrec
serve`` process; the tests that need it are slow (training, then the every-layer ONNX
export in a child process). The browser tests (Debian's Chromium) load the demo's page
once with the model and once on a server without one.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
import subprocess
import zipfile
from importlib import resources
from pathlib import Path

import httpx2
import numpy as np
import pytest
from PIL import Image, ImageDraw

from imgrec.core.digits import MNIST_BOX, area_weights, ink_from_grey, mnist_digit
from imgrec.core.errors import ImageError
from imgrec.web.catalog import ModelCatalog

STATIC = Path(str(resources.files("imgrec.web").joinpath("static")))
# Polylines on the page's 240 x 240 canvas, drawn 18 pixels wide like the page's pen.
CANVAS = 240
PEN = 18
STROKES = {
    1: [[(122, 32), (118, 120), (116, 208)]],
    7: [[(62, 44), (178, 40), (150, 100), (104, 210)]],
}


def drawing(
    strokes: list[list[tuple[int, int]]], size: int = CANVAS, pen: int = PEN
) -> Image.Image:
    """Black polylines on white, as the page's canvas draws them (round joints)."""
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    for line in strokes:
        draw.line(line, fill="black", width=pen, joint="curve")
        for x, y in (line[0], line[-1]):
            draw.ellipse((x - pen / 2, y - pen / 2, x + pen / 2, y + pen / 2), fill="black")
    return image


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def centre_of_mass(digit: np.ndarray) -> tuple[float, float]:
    weights = digit.astype(np.float64)
    total = weights.sum()
    rows = (weights.sum(axis=1) @ (np.arange(digit.shape[0]) + 0.5)) / total
    cols = (weights.sum(axis=0) @ (np.arange(digit.shape[1]) + 0.5)) / total
    return float(rows), float(cols)


@pytest.fixture(scope="module")
def digit_models(tmp_path_factory):
    """A models folder with a tiny mnist-cnn trained by ``imgrec.train`` (seconds)."""
    import imgrec

    folder = tmp_path_factory.mktemp("models")
    imgrec.train(
        "mnist",
        "mnist-cnn",
        out=folder / "mnist-cnn.keras",
        epochs=1,
        limit_per_class=200,
        seed=0,
        verbose=0,
    )
    for companion in folder.iterdir():  # .last.keras, the history: not needed here
        if companion.name != "mnist-cnn.keras":
            companion.unlink()
    return folder


@pytest.fixture(scope="module")
def digit_server(digit_models):
    """A real ``imgrec serve`` of that folder on loopback: (its URL, the folder)."""
    from browser import serving

    with serving("--models", str(digit_models), "--runtime", "keras") as url:
        yield url.rstrip("/"), digit_models


# ---- MNIST's preprocessing (imgrec.core.digits) ----------------------------------------


def test_a_digit_is_fitted_into_20_pixels_and_centred_by_its_mass():
    ink = np.zeros((240, 240), np.uint8)
    ink[40:200, 100:140] = 255  # a bar 160 tall, 40 wide: 20 x 5 once fitted
    digit = mnist_digit(ink)
    assert digit.shape == (28, 28) and digit.dtype == np.uint8
    rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    assert rows.size == MNIST_BOX and cols.size == 5
    assert digit.max() == 255
    centre = centre_of_mass(digit)
    assert abs(centre[0] - 14) <= 0.5 and abs(centre[1] - 14) <= 0.5


def test_the_centre_of_mass_not_the_box_is_centred():
    ink = np.zeros((100, 100), np.uint8)
    ink[10:90, 10:20] = 255  # a heavy left bar
    ink[10:20, 10:90] = 255  # a thin top bar: the mass sits up and left in the box
    digit = mnist_digit(ink)
    rows, cols = np.flatnonzero(digit.any(axis=1)), np.flatnonzero(digit.any(axis=0))
    box_centre = ((rows[0] + rows[-1] + 1) / 2, (cols[0] + cols[-1] + 1) / 2)
    centre = centre_of_mass(digit)
    assert abs(centre[0] - 14) <= 0.5 and abs(centre[1] - 14) <= 0.5
    assert box_centre[0] > 15 and box_centre[1] > 15  # so the box is pushed down and right


def test_where_and_how_large_a_digit_is_drawn_does_not_matter():
    small = np.asarray(ink_from_grey(np.asarray(drawing(STROKES[7]).convert("L"))))
    moved = np.zeros((480, 480), np.uint8)
    moved[200:440, 17:257] = small
    assert np.array_equal(mnist_digit(small), mnist_digit(moved))
    twice = np.asarray(drawing([[(2 * x, 2 * y) for x, y in line] for line in STROKES[7]], 480, 36))
    difference = np.abs(mnist_digit(small).astype(int) - mnist_digit(ink_from_grey(twice[..., 0])))
    assert difference.mean() < 8  # the same digit, give or take the pen's anti-aliasing


def test_no_ink_gives_zeros_and_bad_drawings_are_refused():
    assert not mnist_digit(np.zeros((240, 240), np.uint8)).any()
    with pytest.raises(ImageError, match="H x W"):
        mnist_digit(np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ImageError, match="0-255"):
        mnist_digit(np.full((4, 4), 300))
    with pytest.raises(ImageError, match="uint8"):
        ink_from_grey(np.zeros((4, 4), np.float32))


def test_area_weights_share_each_old_pixel_out_exactly():
    for size, new_size in ((240, 20), (7, 20), (198, 3), (5, 5)):
        weights = area_weights(size, new_size)
        assert np.allclose(weights.sum(axis=1), 1)
        assert np.allclose(weights.sum(axis=0), new_size / size)


def test_the_pages_javascript_preprocessing_is_pythons(tmp_path):
    # The page's module (static/demos/draw_preprocess.js) run by Node on drawings of all
    # kinds: thin and thick pens, tiny and odd-sized canvases; the browser test checks the
    # same on strokes drawn in Chromium.
    node = shutil.which("node")
    if node is None:
        pytest.skip("needs Node.js (apt-get install nodejs) to run the page's module")
    rng = np.random.default_rng(1)
    drawings = []
    for trial in range(24):
        points = [tuple(int(v) for v in rng.integers(10, 230, 2)) for _ in range(4)]
        image = drawing([points[: rng.integers(2, 5)]], CANVAS, int(rng.integers(3, 30)))
        ink = ink_from_grey(np.asarray(image.convert("L")))
        if trial % 4 == 0:
            ink = ink[: rng.integers(3, CANVAS), : rng.integers(3, CANVAS)]
        drawings.append(ink)
    drawings.append(np.zeros((5, 7), np.uint8))
    listed = [
        {"width": d.shape[1], "height": d.shape[0], "ink": d.ravel().tolist()} for d in drawings
    ]
    data = tmp_path / "drawings.json"
    data.write_text(json.dumps(listed))
    module = STATIC / "demos" / "draw_preprocess.js"
    script = tmp_path / "run.mjs"
    script.write_text(
        f"import {{ mnistDigit }} from {json.dumps(module.as_uri())};\n"
        "import { readFileSync } from 'node:fs';\n"
        f"const drawings = JSON.parse(readFileSync({json.dumps(str(data))}));\n"
        "console.log(JSON.stringify(drawings.map((d) => "
        "Array.from(mnistDigit(Uint8Array.from(d.ink), d.width, d.height)))));\n"
    )
    answer = subprocess.run([node, str(script)], capture_output=True, text=True, check=True)
    in_javascript = np.array(json.loads(answer.stdout), np.uint8).reshape(-1, 28, 28)
    in_python = np.stack([mnist_digit(d) for d in drawings])
    assert in_python[:-1].any(axis=(1, 2)).sum() >= 20 and not in_python[-1].any()
    assert np.array_equal(in_javascript, in_python)


# ---- the catalog finds the demo's model by its training record --------------------------


def _fake_keras(path, training) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", "{}")
        if training is not ...:
            archive.writestr("imgrec.json", json.dumps({"training": training}))


def test_the_catalog_finds_a_model_by_the_architecture_it_was_trained_as(tmp_path):
    _fake_keras(tmp_path / "a-cifar.keras", {"architecture": "cifar-cnn"})
    _fake_keras(tmp_path / "b-plain.keras", ...)  # saved by plain Keras: no record
    _fake_keras(tmp_path / "c-pretrained.keras", None)
    (tmp_path / "d-broken.keras").write_bytes(b"not a zip")
    _fake_keras(tmp_path / "m2.keras", {"architecture": "mnist-cnn"})
    _fake_keras(tmp_path / "m1.keras", {"architecture": "mnist-cnn"})
    catalog = ModelCatalog(tmp_path)
    assert catalog.find_architecture("mnist-cnn").name == "m1.keras"  # the first by name
    assert catalog.find_architecture("cifar-cnn").name == "a-cifar.keras"
    assert catalog.find_architecture("vgg-bn") is None
    (tmp_path / "m1.keras").unlink()
    assert catalog.find_architecture("mnist-cnn").name == "m2.keras"


def test_a_server_without_the_model_names_the_command_that_makes_it(tmp_path):
    from fastapi.testclient import TestClient

    from imgrec.web.app import create_app

    _fake_keras(tmp_path / "other.keras", {"architecture": "cifar-cnn"})
    client = TestClient(create_app(tmp_path))
    demo = client.get("/api/digits").json()
    command = f"imgrec train mnist --arch mnist-cnn --out {tmp_path / 'mnist-cnn.keras'}"
    assert demo == {
        "architecture": "mnist-cnn",
        "model": None,
        "command": command,
        "message": f"no mnist-cnn model in {tmp_path}: run '{command}'",
    }
    for answer in (
        client.get("/api/digits/onnx.json"),
        client.post("/api/digits/predict", files={"file": ("d.png", b"x", "image/png")}),
    ):
        assert answer.status_code == 404 and command in answer.json()["error"]
    bare = TestClient(create_app()).get("/api/digits").json()
    assert bare["model"] is None and "--models" in bare["message"]


# ---- the API, on a real server with a tiny trained model --------------------------------


@pytest.mark.slow  # the module's fixture trains the model
def test_the_server_reads_drawn_digits_and_shows_every_layer(digit_server):
    url, _ = digit_server
    demo = httpx2.get(f"{url}/api/digits").json()
    assert demo["model"] == "mnist-cnn.keras" and demo["message"] is None
    for label, strokes in STROKES.items():
        answer = httpx2.post(
            f"{url}/api/digits/predict",
            files={"file": ("digit.png", png_bytes(drawing(strokes)), "image/png")},
            timeout=120,
        )
        assert answer.status_code == 200, answer.text
        result = answer.json()
        assert result["top"][0]["class"] == str(label), result["top"][:3]
        grey = np.asarray(drawing(strokes).convert("L"))
        assert np.array_equal(np.array(result["digit"]), mnist_digit(ink_from_grey(grey)))
        values = np.frombuffer(base64.b64decode(result["values"]), "<f4")
        layers = {layer["name"]: layer for layer in result["layers"]}
        assert list(layers) == [
            "rescale", "conv1", "conv2", "pool1", "dropout1",
            "flatten", "fc1", "dropout2", "predictions",
        ]  # fmt: skip
        assert layers["conv2"]["shape"] == [24, 24, 64]
        assert values.size == sum(layer["size"] for layer in result["layers"])
        last = layers["predictions"]
        assert np.allclose(values[last["offset"] :], result["probabilities"])
        first = layers["rescale"]
        rescaled = values[first["offset"] : first["offset"] + first["size"]]
        assert np.allclose(rescaled * 255, np.array(result["digit"]).ravel(), atol=1e-3)


# Slow: the first request exports the every-layer model in a child process (TensorFlow).
@pytest.mark.slow
def test_the_browsers_export_gives_the_servers_layers(digit_server):
    import onnxruntime

    url, _ = digit_server
    description = httpx2.get(f"{url}/api/digits/onnx.json", timeout=300).json()
    assert description["onnx"] == "/api/digits/onnx"
    assert description["input"] == [28, 28, 1] and len(description["class_names"]) == 10
    exported = httpx2.get(f"{url}{description['onnx']}").content
    assert len(exported) == description["bytes"]
    session = onnxruntime.InferenceSession(exported)
    grey = np.asarray(drawing(STROKES[7]).convert("L"))
    digit = mnist_digit(ink_from_grey(grey)).astype(np.float32)[None, :, :, None]
    browser = session.run(None, {session.get_inputs()[0].name: digit})[0][0]
    server = httpx2.post(
        f"{url}/api/digits/predict",
        files={"file": ("seven.png", png_bytes(drawing(STROKES[7])), "image/png")},
    ).json()
    assert server["layers"] == description["layers"]
    values = np.frombuffer(base64.b64decode(server["values"]), "<f4")
    assert np.allclose(browser, values, rtol=1e-4, atol=1e-4)


# ---- the page in Chromium ----------------------------------------------------------------

EXPORT_TIMEOUT_MS = 300_000  # the first in-browser run waits for the export (a child process)


@pytest.fixture(scope="module")
def browser():
    from browser import chromium

    with chromium() as launched:
        yield launched


def _draw(page, strokes, *, lift: bool = True) -> None:
    """Draw polylines on the canvas with the mouse, in canvas pixels (240 x 240).

    ``lift=False`` keeps the button down at the end of the last line: still drawing.
    """
    box = page.locator("#draw-canvas").bounding_box()
    scale = box["width"] / CANVAS
    for n, line in enumerate(strokes, start=1):
        x, y = line[0]
        page.mouse.move(box["x"] + x * scale, box["y"] + y * scale)
        page.mouse.down()
        for x, y in line[1:]:
            page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=12)
        if lift or n < len(strokes):
            page.mouse.up()


def _read(page, expected: int, timeout: float) -> None:
    page.wait_for_selector('#draw[data-state="done"]', timeout=timeout)
    assert page.get_attribute("#draw", "data-digit") == str(expected)
    assert page.text_content("#draw-digits li.best .name") == str(expected)


def _page_digit(page) -> tuple[np.ndarray, np.ndarray]:
    """The page's 28 x 28 picture, and what Python makes of its canvas's PNG."""
    shown = page.evaluate(
        """() => Array.from(document.getElementById("draw-input-picture").getContext("2d")
                .getImageData(0, 0, 28, 28).data.filter((_, i) => i % 4 === 0))"""
    )
    url = page.evaluate('() => document.getElementById("draw-canvas").toDataURL("image/png")')
    canvas = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("L")
    return np.array(shown, np.uint8).reshape(28, 28), mnist_digit(ink_from_grey(np.asarray(canvas)))


@pytest.mark.browser
@pytest.mark.slow  # it needs the every-layer export too (see above)
def test_strokes_drawn_in_the_page_are_read_in_the_browser_and_on_the_server(browser, digit_server):
    from browser import visit

    url, _ = digit_server
    opened = visit(browser, url, "/demos/draw")
    page = opened.page
    try:
        page.wait_for_selector('#draw[data-state="ready"]')
        assert page.get_attribute('#menu a[data-demo="draw"]', "aria-current") == "page"
        _draw(page, STROKES[1])
        _read(page, 1, EXPORT_TIMEOUT_MS)
        assert "in this browser" in page.text_content("#draw-timing")
        # The same preprocessing in JavaScript and in Python, on the drawn canvas.
        here, python = _page_digit(page)
        assert python.any() and np.abs(here.astype(int) - python).max() <= 1
        names = page.eval_on_selector_all("#draw-layers figure", "f => f.map(e => e.dataset.layer)")
        assert names[0] == "rescale" and names[-1] == "predictions" and len(names) == 9

        page.click("#draw-clear")
        assert page.get_attribute("#draw", "data-state") == "ready"
        assert page.locator("#draw-layers figure").count() == 0
        # The probabilities follow the pen: the 7 is read before the button is released.
        _draw(page, STROKES[7], lift=False)
        _read(page, 7, EXPORT_TIMEOUT_MS)
        page.mouse.up()
        _read(page, 7, EXPORT_TIMEOUT_MS)
        here, python = _page_digit(page)
        assert np.abs(here.astype(int) - python).max() <= 1

        # On the server: the same drawing, the preprocessing and the network in Python.
        page.check("#draw-server")
        page.wait_for_selector("#draw-timing:has-text('round trip')")
        _read(page, 7, EXPORT_TIMEOUT_MS)
        here, python = _page_digit(page)
        assert np.array_equal(here, python)
        assert opened.script_errors == [] and opened.outside_requests == []
    finally:
        opened.close()


@pytest.mark.browser
def test_the_page_shows_the_command_when_the_server_has_no_model(browser, tmp_path):
    from browser import serving, visit

    with serving("--models", str(tmp_path), "--runtime", "keras") as url:
        opened = visit(browser, url, "/demos/draw")
        try:
            opened.page.wait_for_selector('#draw[data-state="missing"]')
            assert opened.page.is_visible("#draw-missing")
            command = f"imgrec train mnist --arch mnist-cnn --out {tmp_path / 'mnist-cnn.keras'}"
            assert opened.page.text_content("#draw-command") == command
            assert opened.page.locator("#draw-layers figure").count() == 0
            assert opened.script_errors == [] and opened.outside_requests == []
        finally:
            opened.close()
