# One command to set up, one to test; see README.md.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup build models test test-rust test-python lint sweep slow bench

## setup: create .venv, install tokenmill (release build of the Rust extension) with test extras,
## then build the benchmark models (cached in ~/.cache/tokenmill/models: ~30 min the first time)
setup:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q 'maturin>=1.7,<2'
	$(BIN)/maturin develop --release -q --extras test,bench,models
	$(MAKE) models

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
