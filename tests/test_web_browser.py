"""The page in a real browser: Debian's Chromium, driven by Playwright, against ``imgrec serve``.

The server is a real ``imgrec serve`` process on loopback with a free port; the browser
is the system's Chromium (``apt-get install chromium``, which ``.ci/run`` does), not a
browser that Playwright downloads. The page must load nothing from outside the server.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx2
import numpy as np
import pytest
from browser import chromium, serving
from browser import visit as open_page

pytestmark = pytest.mark.browser

# ImageNet's domestic cats, classes 281 to 285.
CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
ANALYSIS_TIMEOUT_MS = 180_000  # the first request loads and converts MobileNetV2


@pytest.fixture(scope="module")
def server_url():
    with serving() as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    with chromium() as launched:
        yield launched


@pytest.fixture
def visit(browser, server_url):
    opened = open_page(browser, server_url)
    opened.page.wait_for_selector("#model:not([disabled])")
    yield opened
    opened.close()


def _canvas_pixels(page) -> np.ndarray:
    rgba = page.evaluate(
        """() => {
            const canvas = document.getElementById("cam");
            const context = canvas.getContext("2d");
            return Array.from(context.getImageData(0, 0, canvas.width, canvas.height).data);
        }"""
    )
    return np.array(rgba, dtype=np.int16).reshape(-1, 4)[:, :3]


def test_chelsea_is_a_cat_and_the_slider_blends_the_map(visit, tmp_path):
    page = visit.page
    page.click('#samples button[data-sample="chelsea"]')
    page.wait_for_selector('#main[data-analysis="done"]', timeout=ANALYSIS_TIMEOUT_MS)

    classes = page.locator("#top li .name").all_text_contents()
    assert len(classes) == 5
    assert classes[0] in CATS
    assert "ms" in page.locator("#timing").text_content()
    assert page.get_attribute('#samples button[data-sample="chelsea"]', "aria-pressed") == "true"
    # The demo menu, with this page marked as the current one.
    assert page.get_attribute('#menu a[aria-current="page"]', "href") == "/"
    assert page.locator("#menu a").first.text_content() == "ImageNet recognition"

    page.fill("#opacity", "0")
    photo = _canvas_pixels(page)
    page.locator("#cam").screenshot(path=tmp_path / "cam-0.png")
    page.fill("#opacity", "100")
    heat = _canvas_pixels(page)
    page.locator("#cam").screenshot(path=tmp_path / "cam-100.png")
    page.fill("#opacity", "50")
    half = _canvas_pixels(page)
    assert page.text_content("#opacity-value") == "50%"

    assert photo.shape == (224 * 224, 3)
    assert np.abs(photo - heat).mean() > 20  # the map covers the photo at 100 %
    # At 50 % every pixel is the average of the photo and the map (8-bit rounding aside).
    assert np.abs(half - (photo + heat) / 2).max() <= 2
    assert (tmp_path / "cam-0.png").read_bytes() != (tmp_path / "cam-100.png").read_bytes()

    page.fill("#opacity", "100")
    page.select_option("#colormap", "gray")
    grey = _canvas_pixels(page)
    assert np.array_equal(grey[:, 0], grey[:, 1]) and np.array_equal(grey[:, 1], grey[:, 2])
    assert not np.array_equal(grey, heat)

    page.screenshot(path=tmp_path / "page.png", full_page=True)
    assert (tmp_path / "page.png").stat().st_size > 10_000
    assert visit.outside_requests == []
    assert visit.script_errors == []


def test_a_layer_click_shows_its_feature_maps(visit):
    page = visit.page
    page.wait_for_selector("#layers tbody tr.spatial")
    page.click('#samples button[data-sample="coffee"]')
    page.wait_for_selector('#main[data-analysis="done"]', timeout=ANALYSIS_TIMEOUT_MS)
    assert page.locator("#top li .name").first.text_content() == "espresso"

    row = page.locator("#layers tbody tr.spatial").nth(3)
    name = row.get_attribute("data-layer")
    row.click()
    page.wait_for_selector("#activations img")
    assert page.locator("#activations img").count() == 16
    assert name in page.text_content("#activations-title")
    assert visit.outside_requests == []
    assert visit.script_errors == []


def test_a_bad_upload_shows_the_servers_message(visit, tmp_path):
    page = visit.page
    fake = tmp_path / "cat.jpg"
    fake.write_bytes(b"this is not a photo")
    page.set_input_files("#file", str(fake))
    page.wait_for_selector('#main[data-analysis="failed"]', timeout=ANALYSIS_TIMEOUT_MS)
    assert page.text_content("#error").startswith("cat.jpg: not an image")
    assert page.locator("#top li").count() == 0


# ---- in-browser inference with onnxruntime-web ------------------------------------------

# The canvas resamples the photo with Chromium's filter, not Pillow's bilinear one: on
# chelsea this moved MobileNetV2's "Egyptian cat" from 0.7139 (server) to 0.7162 (browser),
# 0.0023, and no other top-5 class by more than 0.008 (Chromium 156, onnxruntime-web
# 1.30). The bound leaves four times that room.
TOP1_TOLERANCE = 0.01
# Requests that would mean the server classified or explained the photo.
SERVER_INFERENCE = ("/api/predict", "/api/explain", "/api/activations")


def _run_in_the_browser(page, *, gpu: bool = False) -> list[str]:
    """Choose "in this browser", then chelsea; the paths the page requested meanwhile."""
    requested: list[str] = []
    page.on("request", lambda request: requested.append(urlsplit(request.url).path))
    page.check("#where-browser")
    if gpu:
        page.check("#use-gpu")
    page.click('#samples button[data-sample="chelsea"]')
    page.wait_for_selector('#main[data-analysis="done"]', timeout=ANALYSIS_TIMEOUT_MS)
    return requested


def _shown_top(page) -> list[tuple[str, float]]:
    names = page.locator("#top li .name").all_text_contents()
    percents = page.locator("#top li .pct").all_text_contents()
    return [(name, float(pct.rstrip("%")) / 100) for name, pct in zip(names, percents, strict=True)]


def test_the_browser_classifies_chelsea_like_the_server(visit, server_url):
    page = visit.page
    requested = _run_in_the_browser(page)
    assert not [path for path in requested if path.startswith(SERVER_INFERENCE)], requested
    # The network itself came to the browser, and so did the runtime that ran it.
    assert "/api/models/mobilenet_v2/onnx" in requested
    assert "/vendor/onnxruntime-web/ort-wasm-simd-threaded.wasm" in requested

    assert page.get_attribute("#backend", "data-backend") == "wasm"
    assert "in this browser on wasm" in page.text_content("#backend")
    assert "ms" in page.text_content("#timing")
    assert page.is_hidden("#browser-note")

    with httpx2.Client(base_url=server_url, timeout=300) as http:
        answer = http.post("/api/predict", data={"model": "mobilenet_v2", "sample": "chelsea"})
    server = [(c["class"], c["probability"]) for c in answer.json()["top"]]
    browser = _shown_top(page)
    assert [name for name, _ in browser] == [name for name, _ in server]
    assert browser[0][1] == pytest.approx(server[0][1], abs=TOP1_TOLERANCE)
    assert visit.outside_requests == []
    assert visit.script_errors == []


def test_use_gpu_runs_webgpu_or_says_it_fell_back(visit):
    page = visit.page
    requested = _run_in_the_browser(page, gpu=True)
    assert not [path for path in requested if path.startswith(SERVER_INFERENCE)], requested
    assert page.locator("#top li .name").first.text_content() in CATS
    backend = page.get_attribute("#backend", "data-backend")
    if backend == "webgpu":
        assert page.is_hidden("#browser-note")
    else:
        # Headless Chromium here has navigator.gpu but no adapter: WASM ran instead.
        assert backend == "wasm"
        assert page.is_visible("#browser-note")
        note = page.text_content("#browser-note")
        assert note.startswith("WebGPU ")
        assert note.endswith("ran on WASM instead.")
    assert visit.script_errors == []
