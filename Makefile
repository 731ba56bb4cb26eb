# Two commands do all the set-up:
#   make run    create .venv, install, migrate the embedded SQLite database, start the server
#   make test   create .venv, install with test tools, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS ?= --disable-pip-version-check --quiet

.PHONY: run test migrate bench-api clean chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip $(PIP_FLAGS) install --upgrade pip

$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip $(PIP_FLAGS) install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip $(PIP_FLAGS) install -e '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/videoconf migrate
	$(BIN)/videoconf run

migrate: $(VENV)/.installed-run
	$(BIN)/videoconf migrate

# The browser tests need Debian's Chromium: installed here when missing (as root), never downloaded.
chromium:
	@test -x /usr/bin/chromium || { \
	  if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-liberation \
	    || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium fonts-liberation; }; \
	  else echo "the browser tests need Debian's chromium: sudo apt-get install chromium fonts-liberation" >&2; exit 1; fi; }

test: $(VENV)/.installed-test chromium
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench-api: $(VENV)/.installed-test
	$(BIN)/python benchmarks/api_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
