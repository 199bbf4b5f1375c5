"""The VAE demo page in Debian's Chromium: dragging the crosshair redraws the decoding.

One page load against a real ``imgrec serve --models DIR`` whose folder holds a tiny VAE
(trained for one epoch on scikit-learn's digits, seconds).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

READY_TIMEOUT_MS = 120_000  # the first request loads the model


@pytest.fixture(scope="module")
def server_url(tmp_path_factory):
    from browser import serving
    from test_vae import train_tiny_vae

    folder = tmp_path_factory.mktemp("models")
    train_tiny_vae(folder / "vae.keras", epochs=1)
    with serving("--models", str(folder), "--runtime", "keras") as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from browser import chromium

    with chromium() as launched:
        yield launched


def test_moving_the_crosshair_changes_the_decoded_image(server_url, browser):
    from browser import visit

    opened = visit(browser, server_url, "/demos/vae")
    page = opened.page
    try:
        page.wait_for_selector('#vae[data-state="ready"]', timeout=READY_TIMEOUT_MS)
        assert page.get_attribute("#decoded", "data-z") == "0.000,0.000"
        first = page.get_attribute("#decoded", "src")
        assert page.locator("#decoder-layers figure").count() == 5
        assert page.get_attribute("#scatter", "data-points") == "50"
        assert page.locator("#legend li").count() == 10
        page.wait_for_function("document.getElementById('grid').naturalWidth === 420")
        # Drag from the centre to the top right: (0, 0) -> about (0.8, 0.6).
        box = page.locator("#plane").bounding_box()
        page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] * 0.2, steps=6)
        page.mouse.up()
        page.wait_for_function(
            "document.getElementById('decoded').dataset.z === "
            "document.getElementById('plane').dataset.z"
        )
        x, y = (float(v) for v in page.get_attribute("#decoded", "data-z").split(","))
        assert x == pytest.approx(0.8, abs=0.02) and y == pytest.approx(0.6, abs=0.02)
        assert page.get_attribute("#decoded", "src") != first
        # The arrow keys move it too.
        page.keyboard.press("ArrowLeft")
        page.wait_for_function(
            f"Math.abs(parseFloat(document.getElementById('decoded').dataset.z) - {x - 0.05}) "
            "< 0.002"
        )
        assert opened.script_errors == [] and opened.outside_requests == []
    finally:
        opened.close()


@pytest.mark.slow  # a second server: the API test of test_vae.py checks the command itself
def test_without_a_vae_the_page_shows_the_command(browser, tmp_path):
    from browser import serving, visit

    with serving("--models", str(tmp_path)) as url:
        opened = visit(browser, url, "/demos/vae")
        try:
            opened.page.wait_for_selector('#vae[data-state="missing"]', timeout=READY_TIMEOUT_MS)
            command = opened.page.text_content("#command")
            assert command == f"imgrec train mnist --arch conv-vae --out {tmp_path / 'vae.keras'}"
            assert opened.script_errors == [] and opened.outside_requests == []
        finally:
            opened.close()
