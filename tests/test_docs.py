"""Docs that cannot rot: the code blocks of the documentation run, and the site builds offline.

1. Every ```bash and ```python block of README.md and docs/**/*.md runs, page by page, in
   order, in a fresh temporary folder per page that starts with scikit-image's two photos
   (``chelsea.png``, ``coffee.png``), ``imgrec`` on PATH and the test session's IMGREC_HOME.
   Bash blocks run with ``bash -euo pipefail``; a page's Python blocks run in one Python
   process, in order, so a later block sees an earlier one's names. ``DOCS_REPO`` is the
   repository's root, for the blocks that name the Makefile. An HTML comment on the line
   right before a block changes what runs:

   * ``<!-- docs-test: instead CMD -->``: a smaller variant (a shorter training) runs
     instead, in the block's language;
   * ``<!-- docs-test: skip REASON -->``: the block cannot run on this machine (a cluster,
     a GPU); the reason is required.

   ``X.ko.md`` runs only where its blocks differ from ``X.md``'s. A failure names the page
   and the line of the block.
2. ``mkdocs build --strict`` (what ``make docs`` runs) succeeds; the same build of a copy
   with a broken link, a broken anchor and a reference to a missing name fails and names
   each; the built HTML and CSS load nothing from another host.
3. In Chromium, the home page, a guide and the API reference make no request that leaves
   127.0.0.1.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from warm_imgrec import WarmImgrec, shared

import imgrec
from imgrec.core import errors
from imgrec.core.samples import sample_path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
RUN_LANGUAGES = {"bash": "bash", "python": "python"}
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<info>[\w+-]*)[^`]*$")
DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:\s*(?P<verb>\w+)\s*(?P<arg>.*?)\s*-->\s*$")
PAGE_TIMEOUT_S = 900
BUILD_TIMEOUT_S = 600


@dataclass(frozen=True)
class Block:
    """One fenced block that runs: its language, code, first code line, and directive."""

    language: str
    code: str
    line: int  # 1-based line of the block's first code line
    directive: tuple[str, str] | None  # ("instead", CMD) or ("skip", REASON)


def read_blocks(path: Path) -> list[Block]:
    """The runnable blocks of a Markdown page, in order (text, sh, console... never run)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        start = FENCE.match(lines[i])
        if not start:
            i += 1
            continue
        fence, indent = start["fence"], len(start["indent"])
        end = i + 1
        while end < len(lines) and not (
            lines[end].strip().startswith(fence[0] * len(fence))
            and lines[end].strip().strip(fence[0]) == ""
        ):
            end += 1
        language = start["info"].lower()
        if language in RUN_LANGUAGES:
            code = "\n".join(line[indent:] for line in lines[i + 1 : end]) + "\n"
            previous = DIRECTIVE.match(lines[i - 1]) if i > 0 else None
            directive = (previous["verb"], previous["arg"]) if previous else None
            blocks.append(Block(language, code, i + 2, directive))
        i = end + 1
    return blocks


def _runs(blocks: list[Block]) -> list[tuple[str, str, str | None]]:
    return [(b.language, b.code, b.directive and "|".join(b.directive)) for b in blocks]


def doc_pages() -> list[Path]:
    """README.md and every docs page with a block to run (a Korean page only if it differs)."""
    pages = [REPO / "README.md", *sorted(DOCS.rglob("*.md"))]
    chosen = []
    for page in pages:
        blocks = read_blocks(page)
        if not blocks:
            continue
        if page.name.endswith(".ko.md"):
            english = page.with_name(page.name[: -len(".ko.md")] + ".md")
            if english.exists() and _runs(read_blocks(english)) == _runs(blocks):
                continue
        chosen.append(page)
    return chosen


# The Python blocks of a page run in this one process: each arrives on stdin as JSON, runs
# in the same namespace (compiled under the page's name, its lines shifted to the page's, so
# a traceback names the page and line), and is answered on a Unix socket of its own (its
# path the first argument) with "ok" or the traceback.
_PYTHON_DRIVER = r"""
import json, os, socket, sys, traceback
connection = socket.socket(socket.AF_UNIX)
connection.connect(sys.argv[1])
answers = connection.makefile("w")
namespace = {"__name__": "__main__"}
for request in sys.stdin:
    block = json.loads(request)
    try:
        code = compile("\n" * (block["line"] - 1) + block["code"], block["page"], "exec")
        exec(code, namespace)
    except BaseException:
        answer = traceback.format_exc()
    else:
        answer = "ok"
    sys.stdout.flush()
    sys.stderr.flush()
    answers.write(json.dumps(answer) + "\n")
    answers.flush()
"""


def page_environment() -> dict[str, str]:
    """The environment of a page's blocks: imgrec's folder first on PATH, and a few more."""
    bin_dir = str(Path(sys.executable).parent)
    return os.environ | {
        "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
        "DOCS_REPO": str(REPO),
        "MPLBACKEND": "Agg",
        "PYTHONUNBUFFERED": "1",
    }


def warm_imgrec() -> WarmImgrec:
    """One warm ``imgrec`` per test process for the pages (tests/warm_imgrec.py)."""
    return shared("docs", page_environment())


class PageRun:
    """Runs a page's blocks in one working folder, with one Python process for the page.

    With ``warm``, a block's ``imgrec`` and ``python``, and the process that runs the
    page's Python blocks, are tests/warm_imgrec.py's launchers: the same command line in
    a process forked from one that imported TensorFlow already.
    """

    def __init__(self, page: Path, workdir: Path, warm: WarmImgrec | None = None) -> None:
        self.name = str(page.relative_to(REPO))
        self.workdir = workdir
        self.env = page_environment()
        self.python_command = sys.executable
        if warm is not None:
            self.env["PATH"] = str(warm.bin) + os.pathsep + self.env["PATH"]
            self.python_command = str(warm.bin / "python")
        self.python: subprocess.Popen | None = None
        self.answers: io.TextIOBase | None = None
        self.socket_folder = ""
        self.groups: list[int] = []
        self.log = workdir.parent / (workdir.name + ".python.log")

    def run(self, block: Block) -> None:
        language, code = block.language, block.code
        if block.directive:
            verb, argument = block.directive
            if verb == "skip":
                if not argument:
                    pytest.fail(f"{self.name}:{block.line}: docs-test: skip needs a reason")
                return
            if verb != "instead" or not argument:
                pytest.fail(f"{self.name}:{block.line}: unknown docs-test directive {verb!r}")
            code = argument + "\n"
        if language == "bash":
            self._bash(code, block.line)
        else:
            self._python(code, block.line)

    def _bash(self, code: str, line: int) -> None:
        # Each block in a process group of its own, ended with the page (close()): a server
        # a block leaves running in the background goes with it.
        process = subprocess.Popen(
            ["bash", "-euo", "pipefail", "-c", code],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.groups.append(process.pid)
        try:
            output, _ = process.communicate(timeout=PAGE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            output, _ = process.communicate()
            pytest.fail(f"{self.name}:{line}: the bash block ran over {PAGE_TIMEOUT_S} s")
        if process.returncode != 0:
            pytest.fail(
                f"{self.name}:{line}: the bash block failed (exit {process.returncode}):\n"
                f"{code}\n--- output ---\n{output[-4000:]}",
                pytrace=False,
            )

    def _python(self, code: str, line: int) -> None:
        if self.python is None:
            self._start_python(line)
        self.python.stdin.write(json.dumps({"page": self.name, "line": line, "code": code}))
        self.python.stdin.write("\n")
        self.python.stdin.flush()
        answer = _readline(self.answers, PAGE_TIMEOUT_S)
        if answer is None:
            output = self.log.read_text()[-4000:]
            pytest.fail(
                f"{self.name}:{line}: the Python block did not finish:\n{output}", pytrace=False
            )
        answer = json.loads(answer)
        if answer != "ok":
            output = self.log.read_text()[-3000:]
            pytest.fail(
                f"{self.name}:{line}: the Python block failed:\n{answer}\n--- output ---\n{output}",
                pytrace=False,
            )

    def _start_python(self, line: int) -> None:
        """Start the page's Python process and take the connection it answers on."""
        # A short folder of its own: a Unix socket's path has at most 107 bytes.
        self.socket_folder = tempfile.mkdtemp(prefix="docs-python-")
        address = os.path.join(self.socket_folder, "answers")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(address)
        listener.listen(1)
        listener.settimeout(1)
        log = self.log.open("w")
        self.python = subprocess.Popen(
            [self.python_command, "-c", _PYTHON_DRIVER, address],
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
        )
        log.close()
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        try:
            while True:
                try:
                    connection, _ = listener.accept()
                    break
                except TimeoutError:
                    if self.python.poll() is not None or time.monotonic() > deadline:
                        output = self.log.read_text()[-4000:]
                        pytest.fail(
                            f"{self.name}:{line}: the Python process did not start:\n{output}",
                            pytrace=False,
                        )
        finally:
            listener.close()
        connection.settimeout(None)
        self.answers = connection.makefile("r")
        connection.close()  # the file keeps the socket open

    def close(self) -> None:
        for group in self.groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, signal.SIGTERM)
        if self.python is not None:
            self.python.stdin.close()
            try:
                self.python.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.python.kill()
                self.python.wait()
            if self.answers is not None:
                self.answers.close()
            if self.socket_folder:
                shutil.rmtree(self.socket_folder, ignore_errors=True)


def _readline(stream, timeout: float) -> str | None:
    """One line from ``stream`` within ``timeout`` seconds, or None (ended or too slow)."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: lines.put(stream.readline()), daemon=True).start()
    try:
        line = lines.get(timeout=timeout)
    except queue.Empty:
        return None
    return line or None


# -- 1. the blocks run -------------------------------------------------------------------


def test_read_blocks_finds_languages_lines_and_directives(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n"
        "```bash\necho one\n```\n"
        "```text\nnot run\n```\n"
        "<!-- docs-test: instead echo small -->\n"
        "```bash\necho big\n```\n"
        "- a list item:\n\n"
        "    ```python\n    x = 1\n    ```\n"
        "<!-- docs-test: skip needs a GPU -->\n"
        "```python\nimport jax\n```\n"
    )
    assert read_blocks(page) == [
        Block("bash", "echo one\n", 3, None),
        Block("bash", "echo big\n", 10, ("instead", "echo small")),
        Block("python", "x = 1\n", 15, None),
        Block("python", "import jax\n", 19, ("skip", "needs a GPU")),
    ]


def test_a_failing_block_names_its_page_and_line(tmp_path):
    page = REPO / "docs" / "_probe.md"  # never written: the name is only used for messages
    work = tmp_path / "work"
    work.mkdir()
    run = PageRun(page, work)
    try:
        run.run(Block("python", "x = 41\n", 3, None))
        run.run(Block("python", "assert x == 41\n", 7, None))  # state kept between blocks
        with pytest.raises(pytest.fail.Exception, match=r"docs/_probe\.md\", line 12"):
            run.run(Block("python", "\nraise ValueError('broken')\n", 11, None))
        with pytest.raises(pytest.fail.Exception, match=r"docs/_probe\.md:20: the bash"):
            run.run(Block("bash", "false\n", 20, None))
        with pytest.raises(pytest.fail.Exception, match="needs a reason"):
            run.run(Block("bash", "true\n", 30, ("skip", "")))
        run.run(Block("bash", "sleep 600 > /dev/null 2>&1 & echo $! > sleeper\n", 40, None))
    finally:
        run.close()
    sleeper = int((work / "sleeper").read_text())
    for _ in range(50):  # the page's end ends what its blocks left running
        if not Path(f"/proc/{sleeper}").exists() or "Z" in _process_state(sleeper):
            break
        time.sleep(0.1)
    assert not Path(f"/proc/{sleeper}").exists() or "Z" in _process_state(sleeper)


def _process_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


# Seconds each page's blocks took (pytest -p no:randomly, one file at a time, 2 cores under
# a load of about 4, warm imgrec and python), to split the pages into two halves of about
# equal time. A page not listed counts as DEFAULT_PAGE_SECONDS.
PAGE_SECONDS = {
    "docs/guides/scale-training.md": 92,
    "docs/guides/demos.md": 80,
    "docs/guides/teach.md": 62,
    "docs/chapter.md": 58,
    "docs/guides/transfer.md": 44,
    "docs/guides/scale-ray.md": 36,
    "docs/guides/train.md": 36,
    "docs/guides/web.md": 31,
    "docs/guides/explain.md": 28,
    "docs/guides/export.md": 26,
    "docs/guides/recognise.md": 19,
    "README.md": 16,
}
DEFAULT_PAGE_SECONDS = 5
# What this file runs besides its half of the pages: the site's build and its checks.
SITE_SECONDS = 60


def half_of_the_pages(half: int) -> list[Path]:
    """Half of :func:`doc_pages`: this file runs half 0, and tests/test_docs_pages.py half
    1, so that two pytest-xdist workers (``--dist loadfile`` hands out whole files) share
    the docs' blocks, a quarter of the suite's time. Each page, the slowest first, goes to
    the half with less time so far (:data:`PAGE_SECONDS`); half 0 starts with the site's
    tests. Every page is in exactly one half; each half keeps the pages' order."""
    pages = doc_pages()
    seconds = {
        page: PAGE_SECONDS.get(str(page.relative_to(REPO)), DEFAULT_PAGE_SECONDS) for page in pages
    }
    totals, halves = [SITE_SECONDS, 0], [[], []]
    for page in sorted(pages, key=lambda page: -seconds[page]):
        lighter = 0 if totals[0] <= totals[1] else 1
        halves[lighter].append(page)
        totals[lighter] += seconds[page]
    return [page for page in pages if page in halves[half]]


def test_the_two_halves_hold_every_page_once() -> None:
    first, second = half_of_the_pages(0), half_of_the_pages(1)
    assert sorted(first + second) == sorted(doc_pages())
    assert not set(first) & set(second)
    assert first and second


@pytest.mark.slow
@pytest.mark.parametrize("page", half_of_the_pages(0), ids=lambda p: str(p.relative_to(REPO)))
def test_docs_blocks_run(page: Path, tmp_path: Path) -> None:
    run_page(page, tmp_path)


def run_page(page: Path, tmp_path: Path) -> None:
    """Run ``page``'s blocks in order, in a fresh folder with the two sample photos."""
    work = tmp_path / "work"
    work.mkdir()
    for name in ("chelsea", "coffee"):
        shutil.copy(sample_path(name), work / f"{name}.png")
    run = PageRun(page, work, warm_imgrec())
    try:
        for block in read_blocks(page):
            run.run(block)
    finally:
        run.close()


# -- 2. the site builds, strictly, offline ------------------------------------------------


def _mkdocs_build(config_dir: Path, site: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=config_dir,
        env=env,
        capture_output=True,
        text=True,
        timeout=BUILD_TIMEOUT_S,
    )


@functools.cache
def built_site(root: str) -> Path:
    """The site as ``make docs`` builds it, once per test process."""
    site = Path(root) / "site"
    done = _mkdocs_build(REPO, site)
    assert done.returncode == 0, done.stdout + done.stderr
    return site


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    return built_site(str(tmp_path_factory.mktemp("docs_site")))


@pytest.mark.slow
def test_site_builds_with_every_page_and_language(site: Path) -> None:
    for page in ("index.html", "reference/api/index.html", "ko/index.html"):
        assert (site / page).is_file(), page
    # every public name of imgrec (its __all__) and every error has its entry
    api = (site / "reference/api/index.html").read_text(encoding="utf-8")
    documented = set(re.findall(r'id="imgrec\.[\w.]*\.(\w+)"', api))
    assert set(imgrec.__all__) <= documented, set(imgrec.__all__) - documented
    errors_page = (site / "reference/errors/index.html").read_text(encoding="utf-8")
    for name, value in vars(errors).items():
        if isinstance(value, type) and issubclass(value, Exception):
            assert f'id="imgrec.core.errors.{name}"' in errors_page, name
    guides = [p.name for p in (DOCS / "guides").glob("*.md") if not p.name.endswith(".ko.md")]
    for guide in guides:
        assert (site / "guides" / guide.removesuffix(".md") / "index.html").is_file(), guide


@pytest.mark.slow
def test_a_broken_link_anchor_or_name_fails_the_build(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(DOCS, copy / "docs")
    shutil.copy(REPO / "mkdocs.yml", copy / "mkdocs.yml")
    (copy / "src").symlink_to(REPO / "src")
    index = copy / "docs" / "index.md"
    index.write_text(
        index.read_text(encoding="utf-8")
        + "\n[gone](guides/no-such-page.md), [no anchor](benchmarks.md#no-such-heading), "
        "[no name][imgrec.no_such_function]\n",
        encoding="utf-8",
    )
    done = _mkdocs_build(copy, tmp_path / "site")
    output = done.stdout + done.stderr
    assert done.returncode != 0, output
    assert "no-such-page.md" in output
    assert "no-such-heading" in output
    assert "imgrec.no_such_function" in output


def _slug(heading: str) -> str:
    """The anchor MkDocs (and GitHub) give a heading, for the headings these pages use."""
    text = re.sub(r"[^\w\s-]", "", heading.strip().lower())
    return re.sub(r"\s+", "-", text)


def test_the_readmes_links_into_the_site_resolve() -> None:
    # The README is outside docs/, so the strict build does not see its links.
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\((docs/[^)#\s]+)(?:#([\w-]+))?\)", readme)
    assert len(links) > 10
    for target, fragment in links:
        page = REPO / target
        assert page.is_file(), target
        if fragment:
            headings = re.findall(r"^#+ (.+)$", page.read_text(encoding="utf-8"), re.MULTILINE)
            assert fragment in {_slug(h) for h in headings}, f"{target}#{fragment}"
    assert _slug("Results, measured") == "results-measured"
    assert _slug("Export and the runtime") == "export-and-the-runtime"


# A tag attribute or CSS url() that would make the browser fetch from another host.
REMOTE_IN_HTML = re.compile(
    r"<(?:script|link|img|iframe|source|video|audio|embed|object)\b[^>]*?"
    r"\b(?:src|href|data|srcset)\s*=\s*[\"']?\s*(?:https?:)?//",
    re.IGNORECASE,
)
REMOTE_IN_CSS = re.compile(r"(?:@import\s+|url\(\s*)[\"']?\s*(?:https?:)?//", re.IGNORECASE)


def test_remote_patterns_catch_what_would_leave_the_machine() -> None:
    assert REMOTE_IN_HTML.search('<script src="https://cdn.example/x.js"></script>')
    assert REMOTE_IN_HTML.search('<link rel="stylesheet" href="//fonts.example/css">')
    assert not REMOTE_IN_HTML.search('<a href="https://example.org/">a link</a>')
    assert not REMOTE_IN_HTML.search('<script src="../assets/javascripts/bundle.js">')
    assert REMOTE_IN_CSS.search("@import url(https://fonts.googleapis.com/css)")
    assert REMOTE_IN_CSS.search("src: url('//fonts.gstatic.com/x.woff2')")
    assert not REMOTE_IN_CSS.search("background: url(data:image/svg+xml;utf8,<svg/>)")


@pytest.mark.slow
def test_the_site_loads_nothing_from_another_host(site: Path) -> None:
    pages = list(site.rglob("*.html"))
    assert len(pages) > 20
    remote = [
        f"{path.relative_to(site)}: {match.group(0)}"
        for path in pages
        for match in REMOTE_IN_HTML.finditer(path.read_text(encoding="utf-8"))
    ]
    remote += [
        f"{path.relative_to(site)}: {match.group(0)}"
        for path in site.rglob("*.css")
        for match in REMOTE_IN_CSS.finditer(path.read_text(encoding="utf-8"))
    ]
    assert remote == []


# -- 3. in a browser ----------------------------------------------------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.mark.browser
@pytest.mark.slow
def test_pages_in_chromium_request_only_loopback(site: Path) -> None:
    from playwright.sync_api import sync_playwright

    handler = functools.partial(_QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    requests: list[str] = []
    errors: list[str] = []
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path="/usr/bin/chromium")
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.on("request", lambda request: requests.append(request.url))
            page.on("pageerror", lambda error: errors.append(str(error)))
            for path in ("", "guides/recognise/", "reference/api/", "ko/"):
                response = page.goto(base + path)
                assert response is not None and response.ok, path
                page.wait_for_load_state("networkidle")
            assert page.locator(".md-header").count() == 1  # the theme rendered
            # search runs offline: its index and worker come from the server
            page.goto(base)
            # the index is built in a web worker (slow on busy cores): wait for its
            # "Initializing search" line to go, then type (the search reads key presses: a
            # fill() that only sets the value was lost once the pages before were cached)
            page.wait_for_function(
                "() => !document.querySelector('.md-search-result__meta')"
                ".textContent.includes('Initializing')",
                timeout=120_000,
            )
            page.locator("input.md-search__input").press_sequentially("runtime")
            page.wait_for_selector(".md-search-result__item", timeout=30_000)
            browser.close()
    finally:
        server.shutdown()
    assert requests, "the browser made no request at all"
    outside = [url for url in requests if not url.startswith((base, "data:", "blob:", "about:"))]
    assert outside == []
    assert errors == []
