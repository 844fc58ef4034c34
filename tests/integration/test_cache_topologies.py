"""The same decorated function on standalone, Sentinel and Cluster (and plain redis-py), in
both worlds (the ``world`` fixture): SmartClient / redis.Redis with a plain function, or
AsyncSmartClient / redis.asyncio.Redis with a coroutine function."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from smartcache.cache import BloomGuard
from smartcache.testing import Cluster, SentinelGroup, Standalone
from tests.integration._cache_db import CountingDB
from tests.integration._cache_world import World


def scenario(world: World, client: Any, db: CountingDB) -> None:
    name = f"tp{uuid.uuid4().hex[:8]}"

    @world.cached(
        client=client, namespace=name, tags=["user:{user_id}"], ttl=60, jitter=5, stale_ttl=10
    )
    def get_user(user_id: int) -> Any:
        return db.get_user(user_id)

    users = [get_user(i) for i in range(1, 41)]
    assert users == [{"id": i, "name": f"user-{i}"} for i in range(1, 41)]
    assert [get_user(i) for i in range(1, 41)] == users
    assert db.queries == 40
    # 20 callers at once on two hot keys
    world.concurrently([(get_user, 100), (get_user, 101)] * 10)
    assert db.queries == 42  # one load per hot key
    # tags whose members live in many slots
    for i in range(1, 41):
        get_user.refresh(i)
    assert world.invalidate_tag("user:7", client=client, namespace=name) == 1
    assert get_user.peek(7) is None and get_user.peek(8) is not None


@pytest.fixture
def db(tmp_path: Path) -> CountingDB:
    return CountingDB(tmp_path / "db.sqlite", rows=200)


def test_standalone(world: World, redis_standalone: Standalone, db: CountingDB) -> None:
    scenario(world, world.client(url=redis_standalone.url), db)


def test_plain_redis_py(world: World, redis_standalone: Standalone, db: CountingDB) -> None:
    scenario(world, world.redis_py(url=redis_standalone.url), db)


def test_sentinel(world: World, redis_sentinel: SentinelGroup, db: CountingDB) -> None:
    client = world.client(sentinels=redis_sentinel.sentinel_addresses, service_name="mymaster")
    scenario(world, client, db)


def test_cluster(world: World, redis_cluster: Cluster, db: CountingDB) -> None:
    client = world.client(url=redis_cluster.url)
    scenario(world, client, db)
    name = f"users{uuid.uuid4().hex[:8]}"
    guard = BloomGuard.shared(world.raw(client), name=name, capacity=1000, error_rate=0.01)
    world.either(guard.warm, guard.awarm)(f"user:{i}" for i in range(100))
    contains = world.either(guard.contains, guard.acontains)
    assert contains("user:5") and not contains("user:5000")
