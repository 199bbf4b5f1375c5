"""The demo menu: every demo page is in it, and each has its own address.

``static/menu.js`` lists the demos; ``static/demos/NAME.html`` is served at
``/demos/NAME`` (``imgrec.web.routes.pages``). A name is looked up in the folder's
listing, never joined to a path.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from imgrec.web.app import create_app
from imgrec.web.routes.pages import demo_pages

STATIC = Path(str(resources.files("imgrec.web").joinpath("static")))
# One entry of DEMOS in menu.js: { name: "draw", path: "/demos/draw", label: msg("menu.draw") }
ENTRY = re.compile(r'\{\s*name:\s*"([^"]+)",\s*path:\s*"([^"]+)",\s*label:\s*msg\("([^"]+)"\)')


def _menu() -> list[tuple[str, str, str]]:
    return ENTRY.findall((STATIC / "menu.js").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app())


def test_the_menu_lists_imagenet_first_and_every_demo_page():
    menu = _menu()
    assert menu[0] == ("imagenet", "/", "menu.imagenet")
    assert {name for name, _, _ in menu[1:]} == set(demo_pages())
    for name, path, key in menu[1:]:
        assert path == f"/demos/{name}"
        assert key == f"menu.{name}"


def test_each_demo_has_its_own_address(client):
    for _, path, _ in _menu():
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith("text/html")
        assert '<nav id="menu"' in response.text, path
    assert client.get("/static/menu.js").status_code == 200


@pytest.mark.parametrize(
    "path", ["/demos/nothing", "/demos/..%2findex", "/demos/%2e%2e", "/demos/index.html"]
)
def test_an_unknown_demo_is_a_404_naming_it(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert "error" in response.json()
