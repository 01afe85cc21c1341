# pitwall: `make demo` runs the live demo system, `make test` installs everything and runs all checks.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PEERS := prometheus prometheus-alertmanager victoria-metrics rsyslog rsyslog-elasticsearch chromium etcd-server stress-ng postgresql restic rsync podman catatonit golang-github-containernetworking-plugin-dnsname runc busybox-static

.PHONY: assets demo server test lint typecheck pytest bench bench-peers peers venv clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

# Debian packages of the real peers the differential tests run against (victoria-metrics: the remote
# metrics engine of the backends tests; podman's init and its CNI networks'
# DNS, for the pipeline services' aliases, are Recommends of podman that --no-install-recommends leaves out).
peers:
	@missing=""; for p in $(PEERS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing test peers:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  for p in $(PEERS); do $$SUDO systemctl disable --now $$p >/dev/null 2>&1 || true; done; \
	fi

# Web UI assets (htmx, uPlot): shipped in the package (committed); this refreshes them from package.json's
# pinned versions. tests/ui/test_assets.py checks the committed files equal what npm installs.
UI_VENDOR := src/pitwall/ui/static/vendor
node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error

$(UI_VENDOR)/.stamp: node_modules/.package-lock.json
	mkdir -p $(UI_VENDOR)
	cp node_modules/htmx.org/dist/htmx.min.js node_modules/uplot/dist/uPlot.iife.min.js node_modules/uplot/dist/uPlot.min.css $(UI_VENDOR)/
	cp node_modules/htmx.org/LICENSE $(UI_VENDOR)/htmx.LICENSE
	cp node_modules/uplot/LICENSE $(UI_VENDOR)/uPlot.LICENSE
	touch $@

assets: $(UI_VENDOR)/.stamp

demo: $(STAMP)
	$(BIN)/pitwall demo

server: $(STAMP)
	$(BIN)/pitwall server

lint: $(STAMP)
	$(BIN)/ruff check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

# pytest exits 5 when it collected no tests: that is a failure here. Test files run in PYTEST_WORKERS
# processes (pytest-xdist, a file stays on one worker so its module fixtures start once); tests/conftest.py
# gives each worker its own pod and Service address ranges.
PYTEST_WORKERS ?= 2
pytest: $(STAMP) peers assets
	$(BIN)/pytest -q -p no:cacheprovider -n $(PYTEST_WORKERS) --dist loadfile

test: lint typecheck pytest

# The gateway bench compares with Debian's nginx and drives both with Debian's wrk.
bench-peers:
	@for p in nginx wrk; do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  $$SUDO systemctl disable --now nginx >/dev/null 2>&1 || true; \
	fi

bench: $(STAMP) peers bench-peers
	$(BIN)/python bench/metrics_ingest.py
	$(BIN)/python bench/promql_queries.py
	$(BIN)/python bench/traces_ingest.py
	$(BIN)/python bench/logs_ingest.py
	$(BIN)/python bench/gateway_wrk.py
	$(BIN)/python bench/gateway_inprocess.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
