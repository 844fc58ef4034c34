"""No server is left behind: after a failing test, after Ctrl-C, after the parent dies."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _wait_gone(pids: list[int], timeout: float = 10.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = [p for p in pids if _alive(p)]
        if not left:
            return []
        time.sleep(0.05)  # another process's exit: nothing to await from here
    return [p for p in pids if _alive(p)]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    return env


def test_failing_test_leaves_no_server(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids.json"
    test_file = tmp_path / "test_fails.py"
    test_file.write_text(
        textwrap.dedent(f"""
        import json

        def test_uses_servers_then_fails(redis_standalone, redis_topologies):
            cluster = redis_topologies.cluster(primaries=1, replicas=1)
            pids = redis_standalone.pids + cluster.pids
            with open({str(pid_file)!r}, "w") as fh:
                json.dump(pids, fh)
            assert False, "this test fails on purpose"
    """)
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=_env(),
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "this test fails on purpose" in result.stdout
    pids = json.loads(pid_file.read_text())
    assert len(pids) == 3
    assert _wait_gone(pids) == []


SCRIPT = """
import json, sys, time
from smartcache.testing import Cluster
c = Cluster(primaries=1, replicas=1).start()
print(json.dumps(c.pids), flush=True)
time.sleep(120)
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_interrupted_or_killed_parent_leaves_no_server(sig: signal.Signals) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT], stdout=subprocess.PIPE, text=True, env=_env()
    )
    try:
        assert proc.stdout is not None
        pids = json.loads(proc.stdout.readline())
        assert len(pids) == 2 and all(_alive(p) for p in pids)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        assert _wait_gone(pids) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_sigterm_ends_a_pytest_session_and_its_servers(tmp_path: Path) -> None:
    pid_file = tmp_path / "pids.json"
    test_file = tmp_path / "test_long.py"
    test_file.write_text(
        textwrap.dedent(f"""
        import json, os, time

        def test_holds_servers(redis_topologies):
            cluster = redis_topologies.cluster(primaries=1, replicas=1)
            with open({str(pid_file)!r} + ".tmp", "w") as fh:
                json.dump(cluster.pids, fh)
            os.replace({str(pid_file)!r} + ".tmp", {str(pid_file)!r})  # appears whole
            time.sleep(120)

        def test_never_reached():
            assert False, "the session should have ended"
    """)
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)  # another process writes it: nothing to await from here
        pids = json.loads(pid_file.read_text())
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 143, out
        assert "never_reached" not in out and "should have ended" not in out
        assert _wait_gone(pids) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
