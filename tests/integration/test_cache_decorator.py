"""``@cached`` end to end, each scenario in both worlds (the ``world`` fixture): SmartClient
with plain functions, AsyncSmartClient with coroutine functions."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio.retry
import redis.retry
from redis.backoff import NoBackoff

from smartcache.cache import configure
from smartcache.testing import Standalone
from tests.integration._cache_db import CountingDB
from tests.integration._cache_world import World


@pytest.fixture
def db(tmp_path: Path) -> CountingDB:
    return CountingDB(tmp_path / "db.sqlite")


@pytest.fixture
def client(world: World, redis_standalone: Standalone) -> Any:
    return world.client(url=redis_standalone.url)


def ns() -> str:
    return f"t{uuid.uuid4().hex[:8]}"


def test_hit_miss_invalidate_refresh_peek(world: World, client: Any, db: CountingDB) -> None:
    @world.cached(client=client, ttl=60, namespace=ns())
    def get_user(user_id: int) -> dict[str, Any] | None:
        return db.get_user(user_id)

    assert get_user(1) == {"id": 1, "name": "user-1"}
    assert get_user(1) == get_user(user_id=1)
    assert db.queries == 1
    entry = get_user.peek(1)
    assert entry is not None and entry.value["id"] == 1 and entry.load_us > 0
    assert client.pttl(get_user.key_for(1)) > 59_000
    assert get_user.invalidate(1) == 1
    assert get_user.peek(1) is None
    get_user(1)
    assert db.queries == 2
    assert get_user.refresh(1) == {"id": 1, "name": "user-1"}
    assert db.queries == 3
    stats = get_user.stats()
    assert (stats["hits"], stats["misses"], stats["loads"]) == (2, 2, 3)


def test_none_is_not_cached_unless_asked(world: World, client: Any, db: CountingDB) -> None:
    @world.cached(client=client, namespace=ns())
    def plain(user_id: int) -> Any:
        return db.get_user(user_id)

    @world.cached(client=client, namespace=ns(), cache_none=True, null_ttl=5)
    def nulls(user_id: int) -> Any:
        return db.get_user(user_id)

    for _ in range(3):
        assert plain(999) is None
    assert db.queries == 3
    for _ in range(3):
        assert nulls(999) is None
    assert db.queries == 4
    assert 0 < client.pttl(nulls.key_for(999)) <= 5000


def test_condition_serializer_and_compression(world: World, client: Any) -> None:
    calls = []

    @world.cached(
        client=client, namespace=ns(), condition=lambda v: v != "skip", serializer="pickle"
    )
    def f(x: str) -> Any:
        calls.append(x)
        return x if x == "skip" else {x: {1, 2}}

    assert f("a") == {"a": {1, 2}} == f("a")
    f("skip")
    f("skip")
    assert calls == ["a", "skip", "skip"]

    @world.cached(client=client, namespace=ns(), compress_over=100)
    def big() -> str:
        return "y" * 50_000

    assert big() == big()
    assert len(client.get(big.key_for())) < 1000


def test_loader_exceptions_propagate_and_are_not_cached(world: World, client: Any) -> None:
    calls = []

    @world.cached(client=client, namespace=ns())
    def boom() -> int:
        calls.append(1)
        raise KeyError("nope")

    for _ in range(2):
        with pytest.raises(KeyError):
            boom()
    assert len(calls) == 2
    assert boom.peek() is None


def test_corrupt_and_foreign_entries_are_misses_and_overwritten(world: World, client: Any) -> None:
    @world.cached(client=client, namespace=ns(), key="item:{i}")
    def item(i: int) -> int:
        return i * 10

    for junk in (b"not ours", b"SC\x09garbage-header-xxxxxxx", b"SC\x01\x01\x00" + b"\x00" * 12):
        client.set(item.key_for(3), junk)
        assert item(3) == 30
        assert item.peek(3).value == 30


def test_unreachable_redis_loads_or_raises(world: World) -> None:
    retry = redis.asyncio.retry.Retry if world.is_async else redis.retry.Retry
    dead = world.redis_py(port=1, socket_connect_timeout=0.2, retry=retry(NoBackoff(), 0))

    @world.cached(client=dead, namespace=ns())
    def f(x: int) -> int:
        return x + 1

    assert f(1) == 2 and f(1) == 2
    assert f.stats()["errors"] == 2 and f.stats()["loads"] == 2

    @world.cached(client=dead, namespace=ns(), on_cache_error="raise")
    def g(x: int) -> int:
        return x

    with pytest.raises(redis.exceptions.ConnectionError):
        g(1)


def test_configure_and_key_template_version(world: World, client: Any) -> None:
    name = ns()
    configure(client=world.raw(client))
    try:

        @world.cached(key="user:{user_id}", namespace=name, version=2)
        def user(user_id: int) -> int:
            return user_id

        assert user(5) == 5
        assert user.key_for(5) == f"{name}:v2:user:5"
        assert client.exists(f"{name}:v2:user:5") == 1
    finally:
        configure(client=None)


def test_tags_invalidate_across_entries(world: World, client: Any) -> None:
    name = ns()
    loads: list[str] = []

    @world.cached(client=client, namespace=name, tags=["user:{user_id}"])
    def profile(user_id: int) -> str:
        loads.append("p")
        return f"p{user_id}"

    @world.cached(client=client, namespace=name, tags=["user:{user_id}"])
    def orders(user_id: int, page: int = 0) -> str:
        loads.append("o")
        return f"o{user_id}:{page}"

    profile(1000), orders(1000), orders(1000, 1), profile(7)
    assert world.invalidate_tag("user:1000", client=client, namespace=name) == 3
    assert profile.peek(1000) is None and profile.peek(7) is not None
    profile(1000)
    assert loads.count("p") == 3


def test_plain_cache_aside_api(world: World, client: Any) -> None:
    cache = world.cache(client)
    key = f"{ns()}:k"
    assert cache.get_or_load(key, lambda: [1, 2], ttl=30) == [1, 2]
    assert cache.get_or_load(key, lambda: [3], ttl=30) == [1, 2]
    assert cache.invalidate(key) == 1


def test_methods_are_cached_per_arguments(world: World, client: Any) -> None:
    class Repo:
        def __init__(self) -> None:
            self.calls = 0

        @world.cached(client=client, namespace=ns())
        def get(self, i: int) -> int:
            self.calls += 1
            return i

    repo = Repo()
    assert repo.get(1) == repo.get(1) == 1
    assert repo.calls == 1
