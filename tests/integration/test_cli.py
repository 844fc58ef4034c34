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


def test_flush_worker_process_drains_the_queue_and_stops_on_sigterm(
    redis_standalone: object, tmp_path: Path
) -> None:
    import signal

    from smartcache import SmartClient
    from smartcache.cache import SQLiteStore, WriteBehind

    url = redis_standalone.url  # type: ignore[attr-defined]
    db = tmp_path / "app.db"
    client = SmartClient.from_url(url)
    wb = WriteBehind(client, name="cli-worker", partitions=4, flusher=False)
    for i in range(200):
        wb.set(f"k{i}", {"i": i})
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "smartcache",
            "flush-worker",
            url,
            "--store",
            f"sqlite://{db}",
            "--name",
            "cli-worker",
            "--partitions",
            "4",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        assert "queue 'cli-worker' (4 partitions)" in worker.stdout.readline()
        wb.flush(timeout=30)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(10) == 0
        assert "'applied': 200" in worker.stdout.read()
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        if worker.stdout is not None:
            worker.stdout.close()
        client.close()
    store = SQLiteStore(db)
    try:
        assert store.items() == {f"k{i}": {"i": i} for i in range(200)}
    finally:
        store.close()


def test_flush_worker_refuses_an_unknown_store() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "smartcache",
            "flush-worker",
            "redis://127.0.0.1:1",
            "--store",
            "nonsense",
        ],
        check=False,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "--store 'nonsense' is not understood" in result.stderr
