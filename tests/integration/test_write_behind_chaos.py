"""Write-behind under chaos, in one bounded run: a writer acknowledges writes (with
``wait_replicas=1``) and reads each back through ``WriteBehind.get`` while
``smartcache flush-worker`` processes are SIGKILLed at random points 20 times, the Redis
primary fails over once (Sentinel) and the database drops every connection of the
flushers once (PostgreSQL, as a restart does to its clients).

Checked at the end, after a last flusher drained the queue: no acknowledged write lost (the
database holds each key's last acknowledged value, or a later one whose reply was lost), no
older value applied over a newer one (the stored version is the newest written), and no
stale read through ``WriteBehind.get`` after a write returned.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from smartcache import SmartClient, WriteBehind
from smartcache.cache import SQLAlchemyStore, SQLiteStore

pytestmark = pytest.mark.timeout(300)

POSTGRES = os.environ.get("SMARTCACHE_TEST_POSTGRES_URL")
KILLS = 20
KEYS = 40
ROOT = Path(__file__).resolve().parents[2]


def _store_url(tmp_path: Path, app: str) -> str:
    if POSTGRES:
        sep = "&" if "?" in POSTGRES else "?"
        return f"{POSTGRES}{sep}application_name={app}"
    return f"sqlite:///{tmp_path / 'chaos.db'}"


def _open_store(url: str, table: str) -> Any:
    if url.startswith("sqlite:///"):
        return SQLiteStore(url.removeprefix("sqlite:///"), table=table)
    return SQLAlchemyStore(url, table=table)


def _drop_connections(app: str, timeout: float = 60.0) -> int:
    """Terminate the flushers' database connections (what a database restart does to
    them) once the current worker has one (a worker just started on a loaded machine may
    take seconds to import and connect); how many there were."""
    import sqlalchemy as sa

    engine = sa.create_engine(POSTGRES or "")
    deadline = time.monotonic() + timeout
    try:
        with engine.connect() as conn:
            while True:
                rows = conn.execute(
                    sa.text(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = :app AND pid <> pg_backend_pid()"
                    ),
                    {"app": app},
                ).fetchall()
                conn.commit()
                if rows or time.monotonic() > deadline:
                    return len(rows)
                time.sleep(0.02)  # polling another process's state: no event to wait on
    finally:
        engine.dispose()


def test_flusher_kills_a_failover_and_a_database_restart_lose_nothing(
    redis_topologies: Any, tmp_path: Path
) -> None:
    group = redis_topologies.sentinel(replicas=1, sentinels=3)
    name = f"chaos{uuid.uuid4().hex[:8]}"
    table = f"chaos_{uuid.uuid4().hex[:8]}"
    app = f"sc_{name}"
    store_url = _store_url(tmp_path, app)
    _open_store(store_url, table).close()  # the table exists before the workers start
    client = SmartClient.from_url(group.url, wait_replicas=1, wait_timeout_ms=2000)
    wb = WriteBehind(client, flusher=False, name=name, partitions=4, ttl=600)
    worker = [
        sys.executable, "-m", "smartcache", "flush-worker", group.url, "--store", store_url,
        "--table", table, "--name", name, "--partitions", "4", "--claim-idle", "0.5",
        "--batch-size", "20", "--poll-interval", "0.02",
    ]  # fmt: skip

    acked: dict[str, int] = {}
    versions: dict[str, str] = {}
    done = [0, 0]  # acknowledged writes, reads checked
    stale: list[str] = []
    failed_writes = 0
    stop = threading.Event()

    def writer() -> None:
        nonlocal failed_writes
        n = 0
        while not stop.is_set():
            n += 1
            key = f"k{n % KEYS}"
            try:
                version = wb.set(key, n)
            except Exception:  # not acknowledged (the failover): it may or may not be there
                failed_writes += 1
                continue
            acked[key], versions[key] = n, version
            done[0] += 1
            try:
                got = wb.get(key)
            except Exception:
                continue  # no answer is not a stale answer
            done[1] += 1
            if got != n:
                stale.append(f"{key}: wrote {n}, read {got}")

    rng = random.Random(20261206)
    thread = threading.Thread(target=writer)
    thread.start()
    kills = dropped = 0
    proc: subprocess.Popen[bytes] | None = None
    try:
        for i in range(KILLS):
            proc = subprocess.Popen(worker, cwd=ROOT, stdout=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.3, 1.0))  # the kill lands wherever the worker is
            if i == 6:
                old = group.primary()
                group.failover()  # the Redis primary moves, writes and flushers follow
                assert group.primary().address != old.address
            if i == 12 and POSTGRES:
                dropped = _drop_connections(app)  # the database "restarts" under the worker
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            kills += 1
        stop.set()
        thread.join(60)
        # a last worker drains what the killed ones left (claimed after claim_idle)
        proc = subprocess.Popen(worker, cwd=ROOT, stdout=subprocess.DEVNULL)
        wb.drain(timeout=120)
    finally:
        stop.set()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        thread.join(60)
    store = _open_store(store_url, table)
    try:
        rows = store.items()
        assert kills == KILLS and len(acked) == KEYS
        assert dropped >= 1 or not POSTGRES  # the database connections were dropped once
        lost = [k for k, n in acked.items() if rows.get(k) is None or rows[k] < n]
        assert lost == [], lost  # every acknowledged write reached the database
        for key, n in acked.items():
            if rows[key] == n:  # the last acknowledged one: exactly its version, nothing newer
                assert store.version_of(key) == versions[key], key
            else:  # a later write whose reply was lost (the failover): newer, never older
                assert rows[key] > n and store.version_of(key) > versions[key], key
        assert stale == [], stale[:5]
        print(
            f"chaos: {done[0]} acknowledged writes over {len(acked)} keys, {done[1]} reads "
            f"checked, {failed_writes} writes refused during the failover, {kills} flusher "
            f"kills, database {'PostgreSQL (connections dropped once)' if POSTGRES else 'SQLite'}"
        )
    finally:
        if hasattr(store, "engine"):
            import sqlalchemy as sa

            with store.engine.begin() as conn:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}_meta"))
        store.close()
        client.close()
