# One venv for everything; torch is pinned first so pip takes the local CPU build, not GBs of CUDA.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install test demo lint bench clean

$(BIN)/askdocs: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[local,dev]"
	touch $(BIN)/askdocs

install: $(BIN)/askdocs

test: install
	$(BIN)/python -m pytest -q tests

demo: install
	$(BIN)/askdocs demo

# ruff, mypy strict, and the layer contract (pyproject.toml [tool.importlinter]).
lint: install
	$(BIN)/ruff check bot ingest db tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

bench: install
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) build *.egg-info
