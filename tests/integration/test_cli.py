"""`smartcache dev up` prints URLs and stays up; `smartcache dev down` stops it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import redis


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_dev_up_then_down(tmp_path: Path) -> None:
    env = dict(os.environ, SMARTCACHE_DEV_STATE=str(tmp_path / "state.json"))
    up = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smartcache",
            "dev",
            "up",
            "cluster",
            "--primaries",
            "3",
            "--replicas",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert up.stdout is not None
        lines = []
        for line in up.stdout:
            lines.append(line)
            if line.startswith("Ctrl-C"):
                break
        text = "".join(lines)
        url = next(l.split("url:")[1].strip() for l in lines if "url:" in l)
        pids = [int(p) for l in lines if "pids:" in l for p in l.split(":")[1].split()]
        assert len(pids) == 3, text
        with redis.Redis.from_url(url, decode_responses=True) as c:
            assert "cluster_state:ok" in c.execute_command("CLUSTER", "INFO")
        assert (tmp_path / "state.json").exists()
        down = subprocess.run(
            [sys.executable, "-m", "smartcache", "dev", "down"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert down.returncode == 0, down.stderr
        assert up.wait(timeout=30) == 0
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.05)  # other processes' exit
        assert not any(_alive(p) for p in pids)
        assert not (tmp_path / "state.json").exists()
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
        if up.stdout is not None:
            up.stdout.close()


def test_dev_down_with_nothing_up(tmp_path: Path) -> None:
    env = dict(os.environ, SMARTCACHE_DEV_STATE=str(tmp_path / "none.json"))
    out = subprocess.run(
        [sys.executable, "-m", "smartcache", "dev", "down"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "nothing is up" in out.stdout
