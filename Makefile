# Two commands on a fresh machine: `make run` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench check clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	# supervisor (the benchmarks' baseline) installs a supervisorctl script of its own;
	# reinstalling vastinit last makes ours the one on the venv's PATH.
	$(BIN)/pip install -q --no-deps --force-reinstall -e .
	touch $(STAMP)

## run vastinit in the foreground on the shipped stack (units/)
run: $(STAMP)
	$(BIN)/vastinit run

## the whole test suite, plus lint and type check
test: $(STAMP) lint typecheck
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check vastinit tests benchmarks
	$(BIN)/ruff format --check vastinit tests benchmarks
	$(BIN)/lint-imports --no-cache  # a cache keyed on mtimes can miss a fresh edit

typecheck: $(STAMP)
	$(BIN)/mypy

check: $(STAMP)
	$(BIN)/vastinit check

bench: $(STAMP)
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) build *.egg-info
