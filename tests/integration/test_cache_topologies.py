"""The same decorated function on standalone, Sentinel and Cluster (and plain redis-py)."""

from __future__ import annotations

import itertools
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis

from smartcache import SmartClient
from smartcache.asyncio.client import AsyncSmartClient
from smartcache.cache import BloomGuard, ainvalidate_tag, cached, invalidate_tag
from smartcache.testing import Cluster, SentinelGroup, Standalone
from tests.integration._cache_db import CountingDB


def scenario(client: Any, db: CountingDB) -> None:
    name = f"tp{uuid.uuid4().hex[:8]}"

    @cached(client=client, namespace=name, tags=["user:{user_id}"], ttl=60, jitter=5)
    def get_user(user_id: int) -> Any:
        return db.get_user(user_id)

    users = [get_user(i) for i in range(1, 41)]
    assert users == [{"id": i, "name": f"user-{i}"} for i in range(1, 41)]
    assert [get_user(i) for i in range(1, 41)] == users
    assert db.queries == 40
    barrier = threading.Barrier(20)
    picker = itertools.count()

    def hammer() -> None:
        barrier.wait()
        get_user(100 + next(picker) % 2)

    threads = [threading.Thread(target=hammer) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert db.queries == 42  # one load per hot key
    # tags whose members live in many slots
    for i in range(1, 41):
        get_user.refresh(i)
    assert invalidate_tag("user:7", client=client, namespace=name) == 1
    assert get_user.peek(7) is None and get_user.peek(8) is not None


@pytest.fixture
def db(tmp_path: Path) -> CountingDB:
    return CountingDB(tmp_path / "db.sqlite", rows=200)


def test_standalone(redis_standalone: Standalone, db: CountingDB) -> None:
    with SmartClient.from_url(redis_standalone.url) as client:
        scenario(client, db)


def test_plain_redis_py(redis_standalone: Standalone, db: CountingDB) -> None:
    client = redis.Redis.from_url(redis_standalone.url)
    try:
        scenario(client, db)
    finally:
        client.close()


def test_sentinel(redis_sentinel: SentinelGroup, db: CountingDB) -> None:
    with SmartClient(sentinels=redis_sentinel.sentinel_addresses, service_name="mymaster") as c:
        scenario(c, db)


def test_cluster(redis_cluster: Cluster, db: CountingDB) -> None:
    with SmartClient.from_url(redis_cluster.url) as client:
        scenario(client, db)
        guard = BloomGuard.shared(client, name="users", capacity=1000, error_rate=0.01)
        guard.warm(f"user:{i}" for i in range(100))
        assert guard.contains("user:5") and not guard.contains("user:5000")


@pytest.mark.asyncio
async def test_cluster_async(redis_cluster: Cluster, db: CountingDB) -> None:
    name = f"tp{uuid.uuid4().hex[:8]}"
    async with AsyncSmartClient.from_url(redis_cluster.url) as client:

        @cached(client=client, namespace=name, tags=["user:{user_id}"], stale_ttl=10)
        async def get_user(user_id: int) -> Any:
            return db.get_user(user_id)

        for i in range(1, 21):
            assert (await get_user(i))["id"] == i
            assert (await get_user(i))["id"] == i
        assert db.queries == 20
        assert await ainvalidate_tag("user:3", client=client, namespace=name) == 1
        assert await get_user.peek(3) is None
        guard = BloomGuard.shared(client, name=name, capacity=1000, error_rate=0.01)
        await guard.awarm(["a", "b"])
        assert await guard.acontains("a") and not await guard.acontains("zzz")


@pytest.mark.asyncio
async def test_plain_redis_asyncio(redis_standalone: Standalone, db: CountingDB) -> None:
    import redis.asyncio

    client = redis.asyncio.Redis.from_url(redis_standalone.url)
    try:

        @cached(client=client, namespace=f"tp{uuid.uuid4().hex[:8]}", key="u:{user_id}")
        async def get_user(user_id: int) -> Any:
            return db.get_user(user_id)

        assert await get_user(1) == await get_user(1) == {"id": 1, "name": "user-1"}
        assert db.queries == 1
    finally:
        await client.aclose()
