# The two commands of the README: `make demo` and `make test`. Both set everything up first.
# `make bench` (QUICK=1: the quick mode) writes docs/benchmarks.md; see benches/README.md.
VENV ?= .venv
PY := $(VENV)/bin/python
export VOLLEY_HOME ?= $(HOME)/.volley
QUICK ?=

.PHONY: setup demo test test-lint test-rust test-python lint bench faults clean down dist

setup:
	bash scripts/setup.sh

demo: setup
	$(VENV)/bin/volley demo

test: setup test-lint test-rust test-python

test-rust:
	cargo test --quiet

# two processes (pytest-xdist), each module whole in one of them: most tests wait on brokers,
# restarts and subprocesses rather than compute, so two at once halve the wall time on two cores
PYTEST_WORKERS ?= 2
test-python:
	$(PY) -m pytest -q -ra --durations=25 -n $(PYTEST_WORKERS) --dist loadfile

lint: setup test-lint

# style and types are part of `make test`, so CI fails on them too
test-lint:
	cargo fmt --check
	cargo clippy --all-targets --quiet -- -D warnings
	$(VENV)/bin/ruff check python tests benches
	$(VENV)/bin/mypy python/volley

# setup installs the bench extra (pytest-benchmark, matplotlib) on the way to the benchmarks
bench: export EXTRAS = test,bench
bench: setup
	QUICK=$(QUICK) VENV=$(VENV) bash benches/run.sh

# the fault suite (issue 11; minutes, not part of `make test`): both transports, FAULTS_N tasks
# per fault, endpoint/service/broker SIGKILLed, the broker kept down 30 s, a client SIGKILLed and
# reloaded; writes docs/reliability.md, fails if any future was lost, wrong, hung or doubled.
# More options: FAULTS_ARGS="--outage 120 ..." (see `$(PY) -m tests.faults --help`).
FAULTS_N ?= 20000
FAULTS_ARGS ?=
faults: setup
	$(PY) -m tests.faults --tasks $(FAULTS_N) --write-docs docs/reliability.md $(FAULTS_ARGS)

# the abi3 wheel (CPython >= 3.10) and the sdist, into dist/; only maturin is needed
dist:
	@[ -x $(VENV)/bin/maturin ] || $(MAKE) setup
	$(VENV)/bin/maturin build --release -o dist
	$(VENV)/bin/maturin sdist -o dist

down:
	$(VENV)/bin/volley local down

clean:
	rm -rf target dist $(VENV) python/volley/*.so
