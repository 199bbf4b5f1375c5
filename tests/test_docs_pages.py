"""The other half of the docs' pages: their code blocks run (see tests/test_docs.py).

A file of its own so that pytest-xdist, which hands out whole files, can run these pages
on one worker while tests/test_docs.py runs the first half on another.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from test_docs import REPO, half_of_the_pages, run_page


@pytest.mark.slow
@pytest.mark.parametrize("page", half_of_the_pages(1), ids=lambda p: str(p.relative_to(REPO)))
def test_docs_blocks_run(page: Path, tmp_path: Path) -> None:
    run_page(page, tmp_path)
