# The two commands of the README: `make demo` and `make test`. Both set everything up first.
VENV ?= .venv
PY := $(VENV)/bin/python
export VOLLEY_HOME ?= $(HOME)/.volley

.PHONY: setup demo test test-rust test-python lint bench clean down

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/volley demo

test: setup test-rust test-python

test-rust:
	cargo test --quiet

test-python:
	$(PY) -m pytest -q -ra

lint: setup
	cargo fmt --check
	cargo clippy --all-targets -- -D warnings
	$(VENV)/bin/ruff check python tests
	$(VENV)/bin/mypy python/volley

down:
	$(VENV)/bin/volley local down

clean:
	rm -rf target $(VENV) python/volley/*.so
