# The README's commands. Each target sets itself up from nothing: a virtual environment in
# .venv, torch (the CPU wheel unless a CUDA driver is present), then this package.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# CPU machines: the CPU wheel (on PyPI for this version it is found via --find-links or
# the PyTorch CPU index). GPU machines: override, e.g. TORCH_SPEC="torch" or a CUDA index.
TORCH_SPEC ?= torch==2.13.0
DEMO_DIR ?= outputs/demo
PYTEST_ARGS ?=

.PHONY: help setup demo test test-fast bench bench-quick model real-check lint clean

help:
	@echo "make demo   - set up, then generate data, train, evaluate and predict (CPU, ~3 min)"
	@echo "make test   - set up, then run the test suite (complete: what CI runs)"
	@echo "make test-fast - the tests not marked slow, for the edit loop (under 3 min on the 2-core CPU)"
	@echo "make lint   - ruff check, ruff format --check, mypy on src/ (CI runs it before the tests)"
	@echo "make bench  - full benchmark report (accuracy and speed)"
	@echo "make model  - the release recipe (configs/release/default.yaml): data, training, checks, rule, models/; resumable"
	@echo "make real-check - the released model's checks measured again (real anatomy, scan mode, phantom), rule judged"

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	@if $(BIN)/python -c "import torch" 2>/dev/null; then \
		echo "torch already installed: $$($(BIN)/python -c 'import torch; print(torch.__version__)')"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then \
		echo "CUDA driver found: installing a CUDA build of torch"; $(BIN)/python -m pip install -q "torch>=2.4,<3"; \
	else \
		echo "no CUDA driver: installing the CPU build ($(TORCH_SPEC))"; $(BIN)/python -m pip install -q $(TORCH_SPEC); \
	fi
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

demo: setup
	$(BIN)/python scripts/demo.py --output-dir $(DEMO_DIR)

# The tests over one pytest-xdist worker per core (TEST_WORKERS=0: in this process), each worker's
# torch on one thread (two threads per worker on two cores wait on each other); --dist loadfile keeps
# a file's tests, and so its module fixtures (a trained toy model), on one worker.
TEST_WORKERS ?= auto
PYTEST_PARALLEL = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

test: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-fast: setup
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(BIN)/python -m pytest -m "not slow" -q $(PYTEST_PARALLEL) $(PYTEST_ARGS)

bench: setup
	$(BIN)/spinelesion-bench output_dir=outputs/bench

bench-quick: setup
	$(BIN)/spinelesion-bench output_dir=outputs/bench-quick quick=true

# Resumable: each finished stage is kept in the work folder (~/.cache/spinelesion/release/, or
# $SPINELESION_WORK_DIR) and skipped by the next run; RELEASE_ARGS e.g. "--until stage1" or "--plan".
model: setup
	$(BIN)/spinelesion-release $(RELEASE_ARGS)

real-check: setup
	$(BIN)/spinelesion-release check=models/spinelesion-demo $(RELEASE_ARGS)

lint: setup
	$(BIN)/ruff check src tests scripts
	$(BIN)/ruff format --check src tests scripts
	$(BIN)/python -m mypy

clean:
	rm -rf outputs .pytest_cache
