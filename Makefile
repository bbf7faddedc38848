# The two commands of the README's quick start: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config/incidentd.example.yaml

.PHONY: install run test lint typecheck unit clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

## run: install into .venv and run the daemon on SQLite (./var/), example config, 127.0.0.1:8080
run: install
	$(BIN)/incidentd run --config $(CONFIG)

## test: install into .venv, lint, type-check and run the whole suite (unit, SQLite+PostgreSQL, e2e)
test: install lint typecheck
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check daemon tests

typecheck: install
	$(BIN)/mypy

## unit: the fast tests only
unit: install
	$(BIN)/python -m pytest tests/unit

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache *.egg-info
