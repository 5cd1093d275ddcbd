# Set-up and the common jobs. `make demo` and `make test` install what they need into .venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# Where pip looks for torch: empty = pip's configured indexes. On a CPU-only machine whose pip would
# otherwise fetch the CUDA build from PyPI: make test TORCH_INDEX=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=

.PHONY: setup browser demo test test-gpu gpu-check bench lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first and pinned: an unpinned torch would pull the newest (CUDA) build.
	$(BIN)/python -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/worldfm-env demo

# The viewer's browser test drives Debian's chromium (Playwright, no browser download); installed when missing.
browser:
	command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
		(apt-get update && apt-get install -y chromium)

# One pytest worker per core, each test file on one worker (its module fixtures built once); tests/conftest.py
# gives each worker one torch thread.
test: setup browser
	$(BIN)/python -m pytest -q -m "not gpu" -n auto --dist loadfile

test-gpu: setup
	$(BIN)/python -m pytest -q -m gpu

# The GPU tests and a short form of every GPU benchmark, within 8 minutes (docs/gpu.md). No `setup` step: a device
# machine may have no network; GPU_PYTHON is the interpreter with a CUDA build of torch and the package installed.
GPU_PYTHON ?= $(if $(wildcard $(BIN)/python),$(BIN)/python,$(PYTHON))
gpu-check:
	$(GPU_PYTHON) benchmarks/gpu_check.py

bench: setup
	$(BIN)/python benchmarks/throughput.py

lint: setup
	$(BIN)/ruff check worldfm_env tests benchmarks agents examples

clean:
	rm -rf $(VENV) worldfm_demo .pytest_cache
