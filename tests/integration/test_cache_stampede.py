"""Stampede protection, each scenario in both worlds (the ``world`` fixture): N callers at
once are threads over a SmartClient, or tasks over an AsyncSmartClient."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from smartcache.cache._codec import encode_entry, get_serializer
from smartcache.testing import Standalone
from tests.integration._cache_db import CountingDB
from tests.integration._cache_world import World

USER = {"id": 1, "name": "user-1"}
ROOT = Path(__file__).resolve().parents[2]


def ns() -> str:
    return f"st{uuid.uuid4().hex[:8]}"


@pytest.fixture
def slow_db(tmp_path: Path) -> CountingDB:
    return CountingDB(tmp_path / "db.sqlite", delay=0.1)


@pytest.fixture
def client(world: World, redis_standalone: Standalone) -> Any:
    return world.client(url=redis_standalone.url)


def test_n_callers_one_query(world: World, client: Any, slow_db: CountingDB) -> None:
    """50 threads (sync) or 200 tasks (async) miss the same key at once: one query."""

    @world.cached(client=client, namespace=ns(), key="hot:{user_id}")
    def get_user(user_id: int) -> Any:
        return slow_db.get_user(user_id)

    n = world.callers
    assert world.concurrently([(get_user, 1)] * n) == [USER] * n
    assert slow_db.logged_queries() == 1


def test_two_processes_one_query(
    world: World, redis_standalone: Standalone, slow_db: CountingDB
) -> None:
    name, go = ns(), f"go:{uuid.uuid4().hex}"
    args = [world.kind, redis_standalone.url, str(slow_db.path), name, go, "25"]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.integration._cache_worker", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for p in procs:
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        world.client(url=redis_standalone.url).rpush(go, "go", "go")  # wake both at once
        outputs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            p.kill() if p.poll() is None else None
    reports = [json.loads(out.split("done ", 1)[1]) for out in outputs]
    assert all(r["results"] == [USER] * 25 for r in reports)
    assert slow_db.logged_queries() == 1
    assert sum(r["stats"]["loads"] for r in reports) == 1


def test_lease_waiters_are_woken_not_polling(
    world: World, client: Any, slow_db: CountingDB
) -> None:
    """Two caches (two 'processes' worth of single-flight) share one lease: one load."""
    name = ns()

    def make() -> Any:
        @world.cached(client=client, namespace=name, key="hot:{user_id}")
        def get_user(user_id: int) -> Any:
            return slow_db.get_user(user_id)

        return get_user

    a, b = make(), make()
    results = world.concurrently([(b, 1), (a, 1)] * 10)
    assert results == [USER] * 20
    assert slow_db.logged_queries() == 1
    waits = a.stats()["lock_waits"] + b.stats()["lock_waits"]
    assert a.stats()["loads"] + b.stats()["loads"] == 1
    assert waits <= 2  # one BLPOP per waiting cache, woken by the holder


def make_stale(client: Any, key: str, value: Any) -> None:
    past = int(time.time() * 1000) - 1000
    data = encode_entry(value, serializer=get_serializer(), expiry_ms=past, load_us=100_000)
    client.set(key, data, px=60_000)


def test_stale_value_served_while_the_refresh_runs(
    world: World, client: Any, slow_db: CountingDB
) -> None:
    """The refresh runs in the background (a refresh thread, or a tracked task)."""
    gate = threading.Event()  # the refresh's loader is held here until every caller is back

    @world.cached(client=client, namespace=ns(), key="hot:{user_id}", ttl=30, stale_ttl=60)
    def get_user(user_id: int) -> Any:
        if slow_db.queries:  # the first load below fills the cache; later ones are refreshes
            gate.wait(30)
        return slow_db.get_user(user_id)

    get_user(1)
    make_stale(client, get_user.key_for(1), {"id": 1, "name": "old"})
    n = world.callers
    results = world.concurrently([(get_user, 1)] * n)
    # Every caller came back while the refresh's loader was still held at the gate: none of
    # them waited for the load (no timing involved: a waiting caller would never return).
    assert not gate.is_set()
    assert len(results) == n and all(v["name"] == "old" for v in results)
    gate.set()
    world.wait_refreshes(get_user)
    assert slow_db.queries == 2  # the first fill and exactly one refresh
    assert get_user(1) == USER
    assert get_user.stats()["stale_serves"] == n
