# `make run` starts npsd on the sample config (SQLite, file email backend) with only what
# running needs; `make test` adds the test tools (the [test] extra) and runs every test.
# Both create the virtualenv on first use.
# `make mutate` (not in CI: tens of minutes on 2 cores) runs mutation testing of the pure
# rule modules against the unit tests and prints the score per module (tests/MUTATION.md);
# `make mutate MUTATE=jobs.timing` runs one module.
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

.PHONY: run test lint bench mutate
run: $(BIN)/npsd
	$(BIN)/npsd --config config.toml run

test: $(BIN)/pytest
	$(BIN)/pytest

lint: $(BIN)/pytest
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(BIN)/npsd
	$(BIN)/python bench/intake.py

MUTATE ?= jobs.rules jobs.timing jobs.sync_batching jobs.book_rules storage.nps
mutate: $(BIN)/pytest
	$(BIN)/pip install -q -e '.[test,mutation]'
	rm -rf mutants
	for module in $(MUTATE); do \
		nice -n 10 $(BIN)/mutmut run --max-children 2 "$$module*" > /dev/null || exit 1; \
	done
	$(BIN)/python tests/mutation_score.py --survivors
	nice -n 10 $(BIN)/python tests/mutate_constants.py
