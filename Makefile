# One command to set up, one to test; see README.md.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: setup build test test-rust test-python lint sweep bench

## setup: create .venv, install tokenmill (release build of the Rust extension) with test extras
setup:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q 'maturin>=1.7,<2'
	$(BIN)/maturin develop --release -q --extras test,bench

## build: rebuild the extension in place after changing Rust code
build:
	$(BIN)/maturin develop --release -q --skip-install

## test: every check CI runs: formatting, lints, Rust tests, Python tests, the parity sweep
test: build lint test-rust test-python sweep

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

## bench: compare with tiktoken and HF tokenizers, write docs/benchmarks.md
bench:
	$(BIN)/tokenmill bench --write docs/benchmarks.md
