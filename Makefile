# `make run` starts npsd on the sample config (SQLite, file email backend) with only what
# running needs; `make test` adds the test tools (the [test] extra) and runs every test.
# Both create the virtualenv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

# npsd and its runtime dependencies.
$(BIN)/npsd: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e .
	@touch $@

# The test tools (pytest, aiosmtpd, ruff, mypy, ...) on top of it.
$(BIN)/pytest: $(BIN)/npsd pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

.PHONY: run test lint bench
run: $(BIN)/npsd
	$(BIN)/npsd --config config.toml run

test: $(BIN)/pytest
	$(BIN)/pytest

lint: $(BIN)/pytest
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(BIN)/npsd
	$(BIN)/python bench/intake.py
