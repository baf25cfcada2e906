# steadycast: `make demo` shows the whole thing over an emulated rural link in a minute,
# `make run` starts the relay on the embedded default config,
# `make test` installs everything the tests need and runs the whole suite,
# `make test-fast` runs the unit tests only (tests/unit: no servers, no system packages).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo run test test-fast lint system-deps clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: install system-deps
	$(VENV)/bin/steadycast demo

run: install
	$(VENV)/bin/steadycast relay

system-deps:
	@bash scripts/system-deps.sh

test: install system-deps
	$(PY) -m pytest -q
	$(VENV)/bin/ruff check steadycast uplink encoder relay monitor probe linklab harness benchmarks tests
	$(VENV)/bin/mypy

test-fast: install
	$(PY) -m pytest -q tests/unit

lint: install
	$(VENV)/bin/ruff check steadycast uplink encoder relay monitor probe linklab harness benchmarks tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build *.egg-info
