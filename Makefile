# make demo: the whole pipeline offline on synthetic data, in a workspace of its own (.demo/)
# make test: the test suite; make data: the raw pickle, tracked by DVC; make repro: dvc repro
PYTHON ?= python3
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(abspath $(VENV)/bin)
STAMP := $(VENV)/.installed
RUN := PATH="$(BIN):$$PATH"

# Overrides of params.yaml for the demo: the synthetic stand-in instead of the 1 GB download,
# and the four stream models of the late fusion at 6 epochs, so the demo stays within 3 minutes
# (194 s quiet at 10 epochs, 2026-12-07).
DEMO_DIR ?= .demo
DEMO_PARAMS ?= data.source=synthetic data.pkl=data/raw/synthetic_2d.pkl synthetic.clips_per_group=[2,3] ensemble.epochs=6

.PHONY: install test test-fast demo data repro bench accuracy gpu-check lint clean

install: $(STAMP)

# torch first and pinned: a looser requirement would pull several GB of CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q "$(TORCH)"
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $(STAMP)

# One test process per core (pytest-xdist), each module's tests in one of them, so a module's
# prepared workspace is built once. Modules are handed out in the order conftest.py sorts them
# (the end-to-end ones first); xdist's default would reorder them by their number of tests.
TEST_WORKERS ?= auto

test: $(STAMP)
	$(RUN) python -m pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Between edits (under a minute): the unit tests, no DVC runs and no trained workspaces.
test-fast: $(STAMP)
	$(RUN) python -m pytest -m "not slow and not e2e" -q --durations=5

demo: $(STAMP)
	$(RUN) python -m pipeline.demo $(DEMO_DIR) $(DEMO_PARAMS)

data: $(STAMP)
	$(RUN) python -m pipeline.fetch

repro: $(STAMP)
	$(RUN) dvc repro

# Figures saved as DVC metrics (bench/metrics/, `dvc metrics diff`), then bench/README.md's
# tables written from them.
bench: $(STAMP)
	$(RUN) python -m bench
	$(RUN) python -m bench.report

# ACCURACY_ARGS picks another table, e.g. the candidate backbones cross-validated by subject:
# make accuracy ACCURACY_ARGS="--table backbones --folds 5 --out metrics/accuracy/backbones"
ACCURACY_ARGS ?=
accuracy: $(STAMP)
	$(RUN) python -m bench.accuracy $(ACCURACY_ARGS)

# On a machine with CUDA: the demo trained on the GPU, with amp and on every GPU (DDP); one table.
gpu-check: $(STAMP)
	$(RUN) python -m bench.gpu_check

lint: $(STAMP)
	$(RUN) ruff check pipeline tests bench
	$(RUN) ruff format --check pipeline tests bench

# The demo's folder is left alone: it holds your experiments (delete it yourself).
clean:
	rm -rf .pytest_cache .ruff_cache
