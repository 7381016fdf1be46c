# ScriptFlow: `make up` starts the whole stack, `make test` runs every test.
# Both install what they need first (a virtualenv in .venv; Debian packages for the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: up install system-deps test lint i18n bench clean

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

lint: install
	$(BIN)/ruff check .

i18n: install
	PATH="$(abspath $(BIN)):$$PATH" bash scripts/i18n.sh

bench: install
	$(BIN)/python bench/bench_runs.py

clean:
	rm -rf $(VENV) .pytest_cache test-artifacts
