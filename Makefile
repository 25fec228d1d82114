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

.PHONY: install reproduce test test-fast lint lab strip hooks clean-runs test-unsloth-pins locks check-locks train-env serve-env gpu-check

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

# nbstripout as a git filter (filter and diff driver in .git/config, the patterns in .gitattributes): notebooks are
# staged without outputs, whatever the working copy holds. The pre-commit framework's hooks
# (.pre-commit-config.yaml: ruff and nbstripout from .venv) are installed too when `pre-commit` is on the PATH.
hooks: $(STAMP)
	$(VENV)/bin/nbstripout --install --attributes .gitattributes
	@if command -v pre-commit >/dev/null 2>&1; then pre-commit install; \
	else echo "pre-commit not found: the git filter is installed; .pre-commit-config.yaml needs pre-commit"; fi

clean-runs:
	rm -rf results/runs

# ------------------------------------------------------------------------------------------ version window
# The unit tests again in a second CPU environment at the newest versions Unsloth accepts (transformers 5.17,
# trl 1.15, datasets 4: envs/unsloth-pins.txt), the old end of the window the kit supports; CI runs both.
PINS_VENV ?= .venv-unsloth-pins
$(PINS_VENV)/.installed: pyproject.toml constraints.txt envs/unsloth-pins.txt
	test -x $(PINS_VENV)/bin/python || $(PYTHON) -m venv $(PINS_VENV)
	$(PINS_VENV)/bin/python -m pip install --upgrade pip
	$(PINS_VENV)/bin/python -m pip install $(TORCH_PIP_ARGS) torch==2.13.0
	$(PINS_VENV)/bin/python -m pip install -c constraints.txt -c envs/unsloth-pins.txt -e ".[dev]"
	touch $@

test-unsloth-pins: $(PINS_VENV)/.installed
	$(PINS_VENV)/bin/python -m pytest -q -m "not slow"

# ------------------------------------------------------------------------------------------ GPU environments
# Two environments on a CUDA machine, each pinned by a lock (envs/*.lock, Linux x86_64, CPython 3.11):
#   make train-env   the kit + CUDA torch + Unsloth (.venv-train): notebooks, training, `make gpu-check`
#   make serve-env   vLLM alone (.venv-serve), run as `vllm serve`; the kit talks to it over HTTP
# `make check-locks` resolves both with pip --dry-run, on any machine (CI does); `make locks` rewrites them.
TRAIN_VENV ?= .venv-train
SERVE_VENV ?= .venv-serve

locks: $(STAMP)
	$(PY) envs/lock.py write

check-locks: $(STAMP)
	$(PY) envs/lock.py check

train-env: $(TRAIN_VENV)/.installed

$(TRAIN_VENV)/.installed: pyproject.toml envs/train-gpu.lock
	test -x $(TRAIN_VENV)/bin/python || $(PYTHON) -m venv $(TRAIN_VENV)
	$(TRAIN_VENV)/bin/python -m pip install --upgrade pip
	$(TRAIN_VENV)/bin/python -m pip install -c envs/train-gpu.lock -e ".[unsloth,dev]"
	$(TRAIN_VENV)/bin/kit check
	touch $@

serve-env: $(SERVE_VENV)/.installed

$(SERVE_VENV)/.installed: envs/serve-gpu.lock
	test -x $(SERVE_VENV)/bin/python || $(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_VENV)/bin/python -m pip install --upgrade pip
	$(SERVE_VENV)/bin/python -m pip install -r envs/serve-gpu.lock
	$(SERVE_VENV)/bin/vllm --version
	touch $@

# The prepared GPU check (kit/tools/gpucheck.py): Unsloth (in .venv-train) against peft (in .venv, which `make`
# builds with PyPI's CUDA torch on a GPU machine: peft's masks need transformers >= 5.18, newer than Unsloth
# accepts) on models of the real shapes; it rewrites docs/gpu-validation.md with what it measured.
gpu-check: $(STAMP) $(TRAIN_VENV)/.installed
	$(TRAIN_VENV)/bin/kit check --gpu --gpu-peft-python $(PY)
