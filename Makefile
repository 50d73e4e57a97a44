# One command to set up, one to test; see README.md.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# PyPI's torch is the CUDA build (about 3 GB of wheels with its nvidia-* dependencies; it runs
# on CPU too). pip's own cache does not keep it on this kind of machine, so setup keeps the
# wheels here and installs from them without the network once they are present.
WHEELHOUSE ?= $(HOME)/.cache/tokenmill/wheels
TORCH      ?= torch==2.15.0

.PHONY: setup torch build models test test-rust test-python lint sweep slow bench

## setup: create .venv, install tokenmill (release build of the Rust extension) with test extras,
## then build the benchmark models (cached in ~/.cache/tokenmill/models: ~30 min the first time)
setup:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q 'maturin>=1.7,<2'
	$(MAKE) torch
	$(BIN)/maturin develop --release -q --extras test,bench,models
	$(MAKE) models

torch:
	mkdir -p $(WHEELHOUSE)
	$(BIN)/pip install -q --no-index --find-links $(WHEELHOUSE) '$(TORCH)' 2>/dev/null \
	  || { echo "downloading $(TORCH) into $(WHEELHOUSE) (once)"; \
	       $(BIN)/pip download -q -d $(WHEELHOUSE) '$(TORCH)' \
	       && $(BIN)/pip install -q --no-index --find-links $(WHEELHOUSE) '$(TORCH)'; }

models:
	$(BIN)/tokenmill models build --no-progress

## build: rebuild the extension in place after changing Rust code
build:
	$(BIN)/maturin develop --release -q --skip-install

## test: every check CI runs: formatting, lints, Rust tests, Python tests, the parity sweep and
## the slow end-to-end tests
test: build lint test-rust test-python sweep slow

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -q -- -D warnings
	$(BIN)/ruff check python tests benches
	$(BIN)/ruff format --check python tests benches
	$(BIN)/mypy

test-rust:
	cargo test -q -p tokenmill-core

test-python:
	$(BIN)/python -m pytest -q

sweep:
	$(BIN)/python -m pytest -q -m sweep

slow:
	$(BIN)/python -m pytest -q -m slow

## bench: compare with tiktoken and HF tokenizers, write docs/benchmarks.md
bench:
	$(BIN)/tokenmill bench --write docs/benchmarks.md
