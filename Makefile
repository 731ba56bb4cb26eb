# Two commands do all the set-up:
#   make run    create .venv, install, migrate the embedded SQLite database, start the server
#   make test   create .venv, install with test tools, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS ?= --disable-pip-version-check --quiet

.PHONY: run test migrate bench-api clean

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

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench-api: $(VENV)/.installed-test
	$(BIN)/python benchmarks/api_bench.py

clean:
	rm -rf $(VENV) build *.egg-info
