# seat-kit: `make reproduce` runs the tiny profile end to end, `make test` runs every test.
# The virtual environment is (re)built whenever pyproject.toml or constraints.txt changes.

VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3
STAMP := $(VENV)/.installed
# Extra pip arguments for torch alone, e.g. the CPU wheel index on a machine without CUDA:
#   make TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cpu"
TORCH_PIP_ARGS ?=
PROFILE ?= tiny
# Extra `jupyter lab` arguments for `make lab`, e.g. make lab LAB_ARGS="--port 8890 --no-browser"
LAB_ARGS ?=
# Jupyter refuses to start as root (containers, CI) without being told.
LAB_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: install reproduce test test-fast lint lab strip clean-runs

install: $(STAMP)

# torch goes in first, on its own, so that its wheel (CPU or CUDA) is chosen by TORCH_PIP_ARGS and
# not by whichever package happens to pull it in as a dependency.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install $(TORCH_PIP_ARGS) torch==2.13.0
	$(PY) -m pip install -c constraints.txt -e ".[dev]"
	$(PY) -m ipykernel install --user --name seat-kit --display-name "seat-kit (.venv)"
	$(VENV)/bin/kit check
	touch $@

reproduce: $(STAMP)
	$(VENV)/bin/kit run --profile $(PROFILE)

test: $(STAMP)
	$(PY) -m pytest -q

test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check kit tests

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.ip=127.0.0.1 --notebook-dir=notebooks $(LAB_ROOT) $(LAB_ARGS)

strip: $(STAMP)
	$(VENV)/bin/nbstripout notebooks/*.ipynb

clean-runs:
	rm -rf results/runs
