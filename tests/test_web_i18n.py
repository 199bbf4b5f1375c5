"""The page in English and in Korean: one table of strings per language, and a switch.

The first tests read the files (no browser, no server): the two tables have the same keys
and placeholders, the pages hold no text of their own (each element names a key in
``data-i18n``), the JavaScript shows no literal text, and every key is used. The last ones
drive Debian's Chromium with Playwright against a real ``imgrec serve``, as
tests/test_web_browser.py does, through one flow in each language.
"""

from __future__ import annotations

import json
import re
import tomllib
from html.parser import HTMLParser
from importlib import resources
from pathlib import Path, PurePosixPath

import pytest

# As imgrec.web.routes.pages.static_dir finds it, without importing the application (Keras).
STATIC = Path(str(resources.files("imgrec.web").joinpath("static")))
ROOT = Path(__file__).resolve().parents[1]
LANGUAGES = ("en", "ko")
# The attributes a person reads; in index.html each comes from data-i18n-NAME.
READ_ATTRIBUTES = ("title", "alt", "placeholder", "aria-label")
PLACEHOLDER = re.compile(r"\{(\w+)\}")
HANGUL = re.compile(r"[\uac00-\ud7a3]")


def _table(language: str) -> dict[str, str]:
    return json.loads((STATIC / f"i18n-{language}.json").read_text(encoding="utf-8"))


def _has_letters(text: str) -> bool:
    return any(char.isalpha() for char in text)


class _PageText(HTMLParser):
    """index.html's keys, and the text and attributes it shows without a key."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str] = []
        self.stray_text: list[str] = []
        self.stray_attributes: list[str] = []
        self.keyed_with_text: list[str] = []
        self._open: list[tuple[str, bool]] = []  # (tag, has data-i18n)
        self._in_head_only = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name, value in found.items():
            if name == "data-i18n" or name.startswith("data-i18n-"):
                self.keys.append(value or "")
        for name in READ_ATTRIBUTES:
            if name in found and f"data-i18n-{name}" not in found:
                self.stray_attributes.append(f"<{tag} {name}={found[name]!r}>")
        if tag not in {"meta", "link", "input", "br", "img"}:
            self._open.append((tag, "data-i18n" in found))

    def handle_endtag(self, tag: str) -> None:
        while self._open:
            if self._open.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if not _has_letters(data) or not self._open:
            return
        tag, keyed = self._open[-1]
        if tag in {"script", "style"}:
            return
        (self.keyed_with_text if keyed else self.stray_text).append(data.strip())


def _pages() -> list[Path]:
    """The pages: ImageNet recognition (index.html) and the menu's other demos."""
    return [STATIC / "index.html", *sorted((STATIC / "demos").glob("*.html"))]


def _page_text() -> _PageText:
    parser = _PageText()
    for page in _pages():
        parser.feed(page.read_text(encoding="utf-8"))
    return parser


def _scripts() -> dict[str, str]:
    """The page's JavaScript modules by name, without their comment lines."""
    return {
        path.relative_to(STATIC).as_posix(): re.sub(
            r"(?m)^\s*//.*$", "", path.read_text(encoding="utf-8")
        )
        for path in STATIC.rglob("*.js")
    }


# A key in JavaScript: msg("key", ...), t("key", ...), new PageError("key", ...).
JS_KEY = re.compile(r"\b(?:msg|t|PageError)\(\s*\"([^\"]+)\"")
# A literal with words, shown as it is: element.textContent = "...", new Error(`...`),
# say(element, "..."), setStatus("...").
JS_LITERAL = r"(\"[^\"]*\"|'[^']*'|`[^`]*`)"
JS_SHOWN = re.compile(
    r"(?:\.(?:textContent|innerText|innerHTML|title|alt|placeholder)\s*=|"
    r"setAttribute\(\s*\"(?:title|alt|placeholder|aria-label)\",|new Error\(|"
    r"say\([^,]+?,|setStatus\(|showBrowserNote\()\s*" + JS_LITERAL
)


def test_the_tables_have_the_same_keys_and_placeholders():
    tables = {language: _table(language) for language in LANGUAGES}
    assert set(tables["en"]) == set(tables["ko"])
    for key, english in tables["en"].items():
        korean = tables["ko"][key]
        assert isinstance(english, str) and english.strip(), key
        assert isinstance(korean, str) and korean.strip(), key
        assert set(PLACEHOLDER.findall(english)) == set(PLACEHOLDER.findall(korean)), key
    # The Korean table is Korean, not a copy: most of what it says is in Hangul.
    in_hangul = [key for key, text in tables["ko"].items() if HANGUL.search(text)]
    assert len(in_hangul) > 0.8 * len(tables["ko"])
    # The English table's one Korean word is the switch's name for Korean.
    assert [key for key, text in tables["en"].items() if HANGUL.search(text)] == ["language.ko"]


def test_the_tables_sit_where_the_package_data_takes_them():
    # pyproject's package-data names web/static/* (no subfolders): every file of the page,
    # the tables with them, must match one of its patterns to be installed with imgrec.
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["imgrec"]
    package = STATIC.parents[1]
    files = [path for path in STATIC.rglob("*") if path.is_file()]
    for language in LANGUAGES:
        assert STATIC / f"i18n-{language}.json" in files
    for path in files:
        relative = PurePosixPath(path.relative_to(package).as_posix())
        assert any(relative.match(pattern) for pattern in patterns), relative
    assert "new URL(`./i18n-${language}.json`, import.meta.url)" in _scripts()["i18n.js"]


def test_the_pages_hold_no_text_of_their_own():
    page = _page_text()
    assert page.stray_text == []
    assert page.stray_attributes == []
    assert page.keyed_with_text == []  # the table's text would replace it: keep one source
    assert {"page.title", "results.title", "cam.title", "inputs.fetch"} <= set(page.keys)


def test_the_scripts_show_no_literal_text():
    shown = {
        name: [literal for literal in JS_SHOWN.findall(source) if _has_letters(_strip(literal))]
        for name, source in _scripts().items()
    }
    assert {name: found for name, found in shown.items() if found} == {}


def _strip(literal: str) -> str:
    """A JavaScript literal without its quotes and ${...} parts."""
    return re.sub(r"\$\{[^}]*\}", "", literal[1:-1])


def test_every_key_used_is_in_the_tables_and_every_entry_is_used():
    table = _table("en")
    in_page = set(_page_text().keys)
    in_scripts = {key for source in _scripts().values() for key in JS_KEY.findall(source)}
    assert in_page - set(table) == set()
    assert in_scripts - set(table) == set()
    assert set(table) - in_page - in_scripts == set()


def test_the_checks_above_catch_a_hard_coded_string(tmp_path):
    # The parser and the patterns are what the tests above rely on: they must see text.
    parser = _PageText()
    parser.feed('<h2 data-i18n="a.b">Layers</h2><p>Layers <b>of</b></p><i title="x"></i>')
    assert parser.keyed_with_text == ["Layers"]
    assert parser.stray_text == ["Layers", "of"]
    assert parser.stray_attributes == ["<i title='x'>"]
    source = 'el.textContent = `Feature maps of ${x}`; throw new Error("no"); y.alt = `${n}`;'
    source += ' say($("e"), "Hi"); say(el, msg("a.b")); setStatus(`Classifying ${m}...`);'
    shown = [_strip(x) for x in JS_SHOWN.findall(source)]
    assert shown == ["Feature maps of ", "no", "", "Hi", "Classifying ..."]
    assert JS_KEY.findall('say(el, msg("run.server", {a})); t("x.y"); new PageError("e.f")') == [
        "run.server",
        "x.y",
        "e.f",
    ]


# ---- the page in Chromium ---------------------------------------------------------------

CATS = {"tabby", "tiger cat", "Persian cat", "Siamese cat", "Egyptian cat"}
ANALYSIS_TIMEOUT_MS = 180_000  # the first request loads MobileNetV2
UPLOAD_LIMIT_BYTES = 2**19


@pytest.fixture(scope="module")
def server_url():
    from browser import serving

    # The Keras runtime: the page's flow needs no ONNX export to test its words.
    # A small upload limit: the page refuses a larger file itself, in its own words.
    with serving("--runtime", "keras", "--upload-limit", str(UPLOAD_LIMIT_BYTES / 2**20)) as url:
        yield url


@pytest.fixture(scope="module")
def browser():
    from browser import chromium

    with chromium() as launched:
        yield launched


def _open(browser, server_url: str, locale: str):
    from browser import visit

    opened = visit(browser, server_url, locale=locale)
    opened.page.wait_for_selector("#model:not([disabled])")
    opened.page.wait_for_selector("html[data-translated]")
    return opened.context, opened.page, opened.script_errors


def _keyed_texts(page) -> dict[str, str]:
    """Each element's key and text, for the elements whose text has no parameters."""
    return page.evaluate(
        """() => Object.fromEntries(
            Array.from(document.querySelectorAll("[data-i18n]:not([data-i18n-args])"))
                .map((element) => [element.dataset.i18n, element.textContent]))"""
    )


def _classify(page, sample: str) -> list[str]:
    page.click(f'#samples button[data-sample="{sample}"]')
    page.wait_for_selector('#main[data-analysis="done"]', timeout=ANALYSIS_TIMEOUT_MS)
    return page.locator("#top li .name").all_text_contents()


# Slow as well: on a fresh IMGREC_HOME the first use converts MobileNetV2's PyTorch weights.
@pytest.mark.browser
@pytest.mark.slow
def test_one_flow_in_english_then_in_korean(browser, server_url, tmp_path):
    en, ko = _table("en"), _table("ko")
    context, page, errors = _open(browser, server_url, "en-US")
    try:
        assert page.get_attribute("html", "lang") == "en"
        assert page.title() == en["page.title"]
        assert _keyed_texts(page) == {k: en[k] for k in _keyed_texts(page)}
        classes = _classify(page, "chelsea")
        assert len(classes) == 5 and classes[0] in CATS
        assert page.text_content("#results-title") == "What the network sees"
        assert page.text_content("#backend") == "Ran on the server with Keras"
        assert "for the forward pass" in page.text_content("#timing")
        assert page.text_content("#cam-caption").startswith('gradcam for "')
        english_timing = page.text_content("#timing")

        # Switch: every text is redrawn in Korean, and the result stays as it was.
        page.click('#language button[data-language="ko"]')
        page.wait_for_selector('html[lang="ko"]')
        assert page.title() == ko["page.title"] == "imgrec: Keras로 하는 사진 인식"
        shown = _keyed_texts(page)
        assert shown == {key: ko[key] for key in shown}
        assert len(shown) > 30
        assert page.text_content("#cam-title") == "클래스 활성화 맵(CAM)"
        assert page.text_content("#fetch") == "가져오기"
        assert page.text_content("#results-title") == ko["results.title"]
        assert page.get_attribute("#url", "placeholder") == ko["inputs.url_example"]
        assert page.get_attribute("#cam", "aria-label") == ko["cam.canvas"]
        assert page.get_attribute('[data-language="ko"]', "aria-pressed") == "true"
        assert page.get_attribute("#main", "data-analysis") == "done"
        assert page.locator("#top li .name").all_text_contents() == classes
        assert page.text_content("#backend") == "서버에서 실행했습니다 (Keras)"
        timing = page.text_content("#timing")
        assert "순전파" in timing and timing != english_timing
        # The same numbers, in the other sentence.
        assert re.findall(r"[\d.]+ ms", timing) == re.findall(r"[\d.]+ ms", english_timing)
        assert "레이어" in page.text_content("#cam-caption")
        title = page.get_attribute("#top li .name", "title")
        assert title.startswith(classes[0]) and "(클래스 " in title

        # Reload: Korean is remembered, and a second photo is classified in Korean.
        page.reload()
        page.wait_for_selector("#model:not([disabled])")
        page.wait_for_selector("html[data-translated]")
        assert page.get_attribute("html", "lang") == "ko"
        assert page.title() == ko["page.title"]
        assert page.evaluate("localStorage.getItem('imgrec-language')") == "ko"
        # The server's messages are shown as it sends them (English, naming the input).
        fake = tmp_path / "cat.jpg"
        fake.write_bytes(b"this is not a photo")
        page.set_input_files("#file", str(fake))
        page.wait_for_selector('#main[data-analysis="failed"]', timeout=ANALYSIS_TIMEOUT_MS)
        assert page.text_content("#error").startswith("cat.jpg: not an image")
        errors.remove(
            "Failed to load resource: the server responded with a status of 422 "
            "(Unprocessable Entity)"
        )
        assert _classify(page, "coffee")[0] == "espresso"
        assert page.is_hidden("#error")
        assert page.text_content("#backend") == "서버에서 실행했습니다 (Keras)"
        assert "순전파" in page.text_content("#timing")
        assert page.text_content("#cam-caption").startswith('"espresso"')
        assert HANGUL.search(page.text_content("#cam-caption"))

        # And back: English again, and remembered.
        page.click('#language button[data-language="en"]')
        page.wait_for_selector('html[lang="en"]')
        assert page.text_content("#backend") == "Ran on the server with Keras"
        assert page.evaluate("localStorage.getItem('imgrec-language')") == "en"
        assert errors == []
    finally:
        context.close()


@pytest.mark.browser
def test_a_korean_browser_starts_in_korean_and_the_pages_errors_follow_the_switch(
    browser, server_url, tmp_path
):
    ko = _table("ko")
    context, page, errors = _open(browser, server_url, "ko-KR")
    try:
        assert page.get_attribute("html", "lang") == "ko"
        assert page.title() == ko["page.title"]
        assert page.text_content("#inputs-title") == ko["inputs.title"]
        assert page.get_attribute('[data-language="ko"]', "aria-pressed") == "true"
        # The first visit follows the browser; that is not a choice to remember.
        assert page.evaluate("localStorage.getItem('imgrec-language')") is None

        # A message of the page's own (the file is over --upload-limit, so the page refuses
        # it without sending it) comes from the table, and is redrawn by the switch.
        big = tmp_path / "big.png"
        big.write_bytes(bytes(UPLOAD_LIMIT_BYTES + 1))
        page.set_input_files("#file", str(big))
        assert page.text_content("#error") == "big.png: 업로드 한도(0.5 MiB)보다 큽니다"
        page.click('#language button[data-language="en"]')
        page.wait_for_selector('html[lang="en"]')
        assert page.text_content("#error") == "big.png: larger than the upload limit of 0.5 MiB"
        assert page.title() == _table("en")["page.title"]
        assert errors == []
    finally:
        context.close()
