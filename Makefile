# Set-up and the common jobs. `make demo` and `make test` install what they need into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test test-gpu bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch would pull the CUDA build.
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/worldfm-env demo

test: setup
	$(BIN)/python -m pytest -q -m "not gpu"

test-gpu: setup
	$(BIN)/python -m pytest -q -m gpu

bench: setup
	$(BIN)/python benchmarks/throughput.py

lint: setup
	$(BIN)/ruff check worldfm_env tests benchmarks agents

clean:
	rm -rf $(VENV) worldfm_demo .pytest_cache
