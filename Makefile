# ScriptFlow: `make up` starts the whole stack, `make test` runs every test, `make test-fast`
# the ones that need no running stack (under a minute).
# Both install what they need first (a virtualenv in .venv; Debian packages for the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: up install system-deps test test-fast lint typecheck i18n bench clean

up: install
	$(BIN)/scriptflow up

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

# wine runs .bat scripts on Linux; chromium drives the browser tests.
system-deps:
	bash scripts/system-deps.sh

test: install system-deps
	$(BIN)/python -m pytest -q

# The fast tier: no stack, no Prefect server, no browser (tests/conftest.py marks the rest).
test-fast: install
	$(BIN)/python -m pytest -q -m "not stack"

# Formatting, lint, dead code (vulture; whitelist in tools/), then types on both OSes.
lint: install
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/vulture
	$(MAKE) typecheck

# The files listed in pyproject.toml [tool.mypy], as seen on Windows and on Linux.
typecheck: install
	$(BIN)/mypy --platform win32
	$(BIN)/mypy --platform linux

i18n: install
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/i18n.sh

bench: install
	$(BIN)/python bench/bench_runs.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
