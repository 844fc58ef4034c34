from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from smartcache import SmartClient
from smartcache.asyncio.client import AsyncSmartClient
from smartcache.cache import cached
from smartcache.cache._codec import encode_entry, get_serializer
from smartcache.testing import Standalone
from tests.integration._cache_db import CountingDB

USER = {"id": 1, "name": "user-1"}
ROOT = Path(__file__).resolve().parents[2]


def ns() -> str:
    return f"st{uuid.uuid4().hex[:8]}"


@pytest.fixture
def slow_db(tmp_path: Path) -> CountingDB:
    return CountingDB(tmp_path / "db.sqlite", delay=0.1)


@pytest.fixture
def client(redis_standalone: Standalone):  # type: ignore[no-untyped-def]
    with SmartClient.from_url(redis_standalone.url) as c:
        yield c


def run_threads(n: int, fn: Any) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def worker(i: int) -> None:
        barrier.wait()
        results[i] = fn()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_50_threads_one_query(client: SmartClient, slow_db: CountingDB) -> None:
    @cached(client=client, namespace=ns(), key="hot:{user_id}")
    def get_user(user_id: int) -> Any:
        return slow_db.get_user(user_id)

    assert run_threads(50, lambda: get_user(1)) == [USER] * 50
    assert slow_db.logged_queries() == 1


@pytest.mark.asyncio
async def test_200_tasks_one_query(redis_standalone: Standalone, slow_db: CountingDB) -> None:
    async with AsyncSmartClient.from_url(redis_standalone.url) as aclient:

        @cached(client=aclient, namespace=ns(), key="hot:{user_id}")
        async def get_user(user_id: int) -> Any:
            return await asyncio.to_thread(slow_db.get_user, user_id)

        results = await asyncio.gather(*(get_user(1) for _ in range(200)))
        assert results == [USER] * 200
        assert slow_db.logged_queries() == 1


def test_two_processes_one_query(redis_standalone: Standalone, slow_db: CountingDB) -> None:
    name, go = ns(), f"go:{uuid.uuid4().hex}"
    args = [redis_standalone.url, str(slow_db.path), name, go, "25"]
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
        with SmartClient.from_url(redis_standalone.url) as c:
            c.rpush(go, "go", "go")  # wake both at once
        outputs = [p.communicate(timeout=60)[0] for p in procs]
    finally:
        for p in procs:
            p.kill() if p.poll() is None else None
    reports = [json.loads(out.split("done ", 1)[1]) for out in outputs]
    assert all(r["results"] == [USER] * 25 for r in reports)
    assert slow_db.logged_queries() == 1
    assert sum(r["stats"]["loads"] for r in reports) == 1


def test_lease_waiters_are_woken_not_polling(client: SmartClient, slow_db: CountingDB) -> None:
    """Two caches (two 'processes' worth of single-flight) share one lease: one load."""
    name = ns()

    def make() -> Any:
        @cached(client=client, namespace=name, key="hot:{user_id}")
        def get_user(user_id: int) -> Any:
            return slow_db.get_user(user_id)

        return get_user

    a, b = make(), make()
    picker = itertools.count()
    results = run_threads(20, lambda: (a if next(picker) % 2 else b)(1))
    assert results == [USER] * 20
    assert slow_db.logged_queries() == 1
    waits = a.stats()["lock_waits"] + b.stats()["lock_waits"]
    assert a.stats()["loads"] + b.stats()["loads"] == 1
    assert waits <= 2  # one BLPOP per waiting cache, woken by the holder


def make_stale(client: SmartClient, key: str, value: Any) -> None:
    past = int(time.time() * 1000) - 1000
    data = encode_entry(value, serializer=get_serializer(), expiry_ms=past, load_us=100_000)
    client.set(key, data, px=60_000)


def test_stale_value_served_while_the_refresh_runs(
    client: SmartClient, slow_db: CountingDB
) -> None:
    gate = threading.Event()  # the refresh's loader is held here until every caller is back

    @cached(client=client, namespace=ns(), key="hot:{user_id}", ttl=30, stale_ttl=60)
    def get_user(user_id: int) -> Any:
        if slow_db.queries:  # the first load below fills the cache; later ones are refreshes
            gate.wait(30)
        return slow_db.get_user(user_id)

    get_user(1)
    make_stale(client, get_user.key_for(1), {"id": 1, "name": "old"})
    results = run_threads(50, lambda: get_user(1))
    # Every caller came back while the refresh's loader was still held at the gate: none of
    # them waited for the load (no timing involved: a waiting caller would never return).
    assert not gate.is_set()
    assert all(v["name"] == "old" for v in results)
    gate.set()
    get_user.cache.wait_refreshes(10)
    assert slow_db.queries == 2  # the first fill and exactly one refresh
    assert get_user(1) == USER
    assert get_user.stats()["stale_serves"] == 50


@pytest.mark.asyncio
async def test_async_stale_refresh_in_tracked_task(
    redis_standalone: Standalone, slow_db: CountingDB
) -> None:
    gate = threading.Event()

    def held_load(user_id: int) -> Any:
        gate.wait(30)
        return slow_db.get_user(user_id)

    async with AsyncSmartClient.from_url(redis_standalone.url) as aclient:

        @cached(client=aclient, namespace=ns(), key="hot:{user_id}", ttl=30, stale_ttl=60)
        async def get_user(user_id: int) -> Any:
            return await asyncio.to_thread(held_load, user_id)

        with SmartClient.from_url(redis_standalone.url) as sync:
            make_stale(sync, get_user.key_for(1), {"id": 1, "name": "old"})

        results = await asyncio.wait_for(
            asyncio.gather(*(get_user(1) for _ in range(200))), timeout=30
        )
        # all 200 answered while the background refresh was still held at the gate
        assert not gate.is_set()
        assert all(v["name"] == "old" for v in results)
        gate.set()
        await get_user.await_refreshes()
        assert slow_db.queries == 1
        assert await get_user(1) == USER
