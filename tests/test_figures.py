"""The docs' pictures are made by docs/make_figures.py from real runs, none pasted by hand.

- Every picture the chapter pages show exists, both languages show the same ones, and
  each caption names the ``make_figures.py`` entry that makes it.
- Every PNG in docs/figures is made by an entry of ``FIGURES``, and every entry's PNGs
  are there; each is small enough for the site.
- ``make_figures.py --only`` really makes some of them (slow; the screenshots need
  Chromium): real PNGs, of the size of the ones in docs/figures.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
FIGURES_DIR = DOCS / "figures"
PAGES = (DOCS / "chapter.md", DOCS / "chapter.ko.md")
IMAGE = re.compile(r"!\[[^\]]*\]\((?P<path>[^)\s]+)\)")
CAPTION = re.compile(r"^\*[^*].*?\*$", re.MULTILINE | re.DOTALL)
MAX_BYTES = 200_000
MAX_TOTAL_BYTES = 3_000_000


@functools.cache
def _script():
    spec = importlib.util.spec_from_file_location("make_figures", DOCS / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_figures"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _images(page: Path) -> list[str]:
    return [m["path"] for m in IMAGE.finditer(page.read_text(encoding="utf-8"))]


def _run(tmp_path: Path, *only: str, timeout: int) -> subprocess.CompletedProcess:
    arguments = [arg for name in only for arg in ("--only", name)]
    return subprocess.run(
        [sys.executable, str(DOCS / "make_figures.py"), "--out", str(tmp_path), *arguments],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )


def _check_like_committed(made: Path) -> np.ndarray:
    """``made`` is a real PNG of the committed figure's size; returns its pixels."""
    committed = FIGURES_DIR / made.name
    with Image.open(made) as image:
        assert image.format == "PNG"
        size = image.size
        pixels = np.asarray(image.convert("RGB"))
    with Image.open(committed) as image:
        assert size == image.size, f"{made.name}: {size}, committed {image.size}"
    assert made.stat().st_size < MAX_BYTES
    assert pixels.std() > 10, f"{made.name} is nearly one colour"
    return pixels


def test_both_chapter_pages_exist_and_show_the_same_figures():
    english, korean = (_images(page) for page in PAGES)
    assert english, "docs/chapter.md shows no picture"
    assert english == korean
    for path in english:
        assert path.startswith("figures/"), f"{path}: pictures live in docs/figures"
        assert (DOCS / path).is_file(), f"{path} is shown by docs/chapter.md but missing"


def test_every_figure_is_made_by_an_entry_and_every_entry_is_shown():
    made_by = _script().all_files()
    present = {path.name for path in FIGURES_DIR.iterdir()}
    assert present - set(made_by) == set(), "PNGs no entry of make_figures.py makes"
    assert set(made_by) - present == set(), "entries whose PNGs are not in docs/figures"
    shown = {Path(path).name for path in _images(PAGES[0])}
    assert shown == set(made_by), "figures made but not shown, or shown but not made"


def test_every_caption_names_the_entry_that_made_its_picture():
    made_by = _script().all_files()
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in IMAGE.finditer(text):
            entry = made_by[Path(match["path"]).name]
            # The caption is the first paragraph in italics after the picture, in its section.
            section = re.split(r"\n#", text[match.end() :], maxsplit=1)[0]
            caption = CAPTION.search(section)
            assert caption, f"{page.name}: {match['path']} has no caption"
            caption = " ".join(caption[0].split())  # a line break in Markdown is a space
            assert f"python docs/make_figures.py --only {entry}" in caption, (
                f"{page.name}: the caption of {match['path']} does not name "
                f"'python docs/make_figures.py --only {entry}'"
            )


def test_the_figures_are_small():
    sizes = {path.name: path.stat().st_size for path in FIGURES_DIR.glob("*.png")}
    assert sizes
    assert {name: size for name, size in sizes.items() if size >= MAX_BYTES} == {}
    assert sum(sizes.values()) < MAX_TOTAL_BYTES


def test_an_unknown_entry_is_refused(tmp_path):
    result = _run(tmp_path, "no-such-figure", timeout=60)
    assert result.returncode == 2
    assert "no-such-figure" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_make_figures_draws_the_zoo_chart_and_the_augmentation_grid(tmp_path):
    result = _run(tmp_path, "zoo", "augment", timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["augment-chelsea.png", "zoo-top1.png"]
    for name in ("zoo-top1.png", "augment-chelsea.png"):
        _check_like_committed(tmp_path / name)
        assert f"wrote {tmp_path / name}" in result.stdout
    assert "made by: imgrec augment chelsea.png" in result.stdout


@pytest.mark.slow
@pytest.mark.browser
def test_make_figures_takes_the_screenshots_of_the_page(tmp_path):
    result = _run(tmp_path, "screenshots", timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    page = _check_like_committed(tmp_path / "page-imagenet.png")
    with Image.open(tmp_path / "page-layers.png") as layers:
        assert layers.format == "PNG"
        assert layers.width > 300 and layers.height > 200
    assert page.shape[1] == _script().MAX_WIDTH
    assert "top class" in result.stdout
