# `make run` starts npsd on the sample config (SQLite, file email backend);
# `make test` runs every test. Both create the virtualenv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/npsd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

.PHONY: run test lint bench
run: $(BIN)/npsd
	$(BIN)/npsd --config config.toml run

test: $(BIN)/npsd
	$(BIN)/pytest

lint: $(BIN)/npsd
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(BIN)/npsd
	$(BIN)/python bench/intake.py
