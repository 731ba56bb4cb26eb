# Two commands do all the set-up:
#   make run    create .venv, install, migrate the embedded SQLite database, start the server
#   make test   create .venv, install with test tools, run the whole test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP_FLAGS ?= --disable-pip-version-check --quiet
# Options for `make run`, e.g. RUN_ARGS="--dev-tls --host 0.0.0.0" (HTTPS for other devices on the LAN).
RUN_ARGS ?=

.PHONY: run test migrate bench-api bench-side-by-side loadtest clean test-packages janus

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip $(PIP_FLAGS) install --upgrade pip

$(VENV)/.installed-run: pyproject.toml setup.py sfu/_fastsend.c turn/_relay.c | $(BIN)/python
	$(BIN)/python -m pip $(PIP_FLAGS) install -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml setup.py sfu/_fastsend.c turn/_relay.c | $(BIN)/python
	$(BIN)/python -m pip $(PIP_FLAGS) install -e '.[test]'
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/videoconf migrate
	$(BIN)/videoconf run $(RUN_ARGS)

migrate: $(VENV)/.installed-run
	$(BIN)/videoconf migrate

# The Debian packages the test suite uses, installed here when missing (as root; never downloaded
# from anywhere else): Chromium for the browser tests, coturn's turnutils clients for the TURN
# interop tests, GStreamer's webrtcbin (with libnice and Python bindings for Debian's python3) as
# an independent WebRTC peer (run by Debian's python3), openssl for the TLS tests, and private
# PostgreSQL and Redis servers that the fault tests stop and start (the shared ones are never touched),
# and for the deploy checks: nginx (the README's reverse proxy, run in front of a node) and
# prometheus (promtool checks the scrape configuration and tests the alert rules), and python3-venv
# (the container test builds the image's environment with Debian's Python, which its user may run).
TEST_PACKAGES := gcc libc6-dev chromium fonts-liberation coturn openssl python3 python3-venv redis-server postgresql nginx-light prometheus \
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad \
  gstreamer1.0-plugins-ugly gstreamer1.0-nice gstreamer1.0-libav python3-gi python3-gst-1.0 \
  gir1.2-gst-plugins-bad-1.0 gir1.2-gst-plugins-base-1.0

test-packages:
	@missing=$$(for p in $(TEST_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages for the tests:" $$missing; \
	    DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -q --no-install-recommends $$missing \
	      || { apt-get update -q && DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -q --no-install-recommends $$missing; }; \
	  else echo "the tests need these Debian packages: sudo apt-get install" $$missing >&2; exit 1; fi; \
	fi
	@command -v kubectl >/dev/null || { echo "the deploy checks need kubectl (for kubectl kustomize): install it from your Kubernetes distribution's packages" >&2; exit 1; }

test: test-packages $(VENV)/.installed-test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench-api: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks.api_bench

# The load tester against a throw-away local node (SQLite, pinned to core 0); see the README for
# scenarios, a remote node and the capacity search (LOADTEST_ARGS="--capacity").
loadtest: $(VENV)/.installed-run
	$(BIN)/videoconf loadtest --local $(LOADTEST_ARGS)

# Debian's Janus for the side-by-side benchmark: installed here when missing (as root).
janus:
	@command -v janus >/dev/null || { \
	  if [ "$$(id -u)" = 0 ]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends janus \
	    || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends janus; }; \
	  else echo "the side-by-side benchmark needs Debian's janus: sudo apt-get install janus" >&2; exit 1; fi; }

$(VENV)/.installed-bench: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip $(PIP_FLAGS) install -e '.[bench]'
	touch $@ $(VENV)/.installed-run

# This SFU, Janus VideoRoom and aiortc's MediaRelay side by side (as root: it makes a network
# namespace); SIDE_BY_SIDE_ARGS="--quick" for a short run.
bench-side-by-side: $(VENV)/.installed-bench janus
	$(BIN)/python -m benchmarks.side_by_side $(SIDE_BY_SIDE_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info
