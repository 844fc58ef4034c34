from __future__ import annotations

import random
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from smartcache import SmartClient
from smartcache.cache import BloomGuard, cached
from smartcache.testing import Standalone
from tests.integration._cache_db import CountingDB

LOOKUPS = 10_000


def ns() -> str:
    return f"pt{uuid.uuid4().hex[:8]}"


@pytest.fixture
def db(tmp_path: Path) -> CountingDB:
    return CountingDB(tmp_path / "db.sqlite", rows=100)


@pytest.fixture
def client(redis_standalone: Standalone):  # type: ignore[no-untyped-def]
    with SmartClient.from_url(redis_standalone.url) as c:
        yield c


@pytest.mark.parametrize("backend", ["local", "shared"])
def test_bloom_guard_stops_penetration(client: SmartClient, db: CountingDB, backend: str) -> None:
    error_rate = 0.01
    if backend == "local":
        guard = BloomGuard.local(capacity=LOOKUPS, error_rate=error_rate)
    else:
        guard = BloomGuard.shared(client, name=ns(), capacity=LOOKUPS, error_rate=error_rate)

    @cached(client=client, namespace=ns(), key="user:{user_id}", bloom=guard)
    def get_user(user_id: int) -> Any:
        return db.get_user(user_id)

    guard.warm(get_user.key_for(i) for i in range(1, 101))
    assert get_user(5) == {"id": 5, "name": "user-5"}  # present ids still load
    db.queries = 0
    for user_id in range(1_000, 1_000 + LOOKUPS):
        assert get_user(user_id) is None
    assert db.queries <= error_rate * LOOKUPS
    assert get_user.stats()["bloom_rejects"] >= LOOKUPS - db.queries
    if backend == "shared":
        assert client.exists(guard.key) == 1
        assert client.type(guard.key) == b"string"  # one bitmap, one slot
        guard.clear()
        assert not guard.contains(get_user.key_for(5))


def test_null_caching_queries_each_absent_id_once(client: SmartClient, db: CountingDB) -> None:
    @cached(client=client, namespace=ns(), key="user:{user_id}", cache_none=True, null_ttl=30)
    def get_user(user_id: int) -> Any:
        return db.get_user(user_id)

    ids = [1_000 + i % 100 for i in range(LOOKUPS)]
    for user_id in ids:
        assert get_user(user_id) is None
    assert db.queries == 100
    assert set(db.by_id.values()) == {1}


@pytest.mark.slow
def test_jitter_spreads_expiries_over_the_window(client: SmartClient) -> None:
    name = ns()

    @cached(client=client, namespace=name, key="k:{i}", ttl=60, jitter=30)
    def value(i: int) -> int:
        return i

    n = LOOKUPS
    written = []
    for i in range(n):
        written.append(time.time())
        value(i)
    pipe = client.pipeline(transaction=False)
    for i in range(n):
        pipe.pttl(value.key_for(i))
    pttls = pipe.execute()
    read = time.time()
    # the TTL each key was given = what is left + how long ago it was written (+- a few ms)
    ttls = [ms + (read - w) * 1000 for ms, w in zip(pttls, written, strict=True)]
    assert min(ttls) > 59_900 and max(ttls) <= 90_100
    buckets = [0] * 10  # 10 buckets of 3 s over [60 s, 90 s]
    for ms in ttls:
        buckets[min(max(int(ms) - 60_000, 0) // 3_000, 9)] += 1
    expected = n / 10
    chi2 = sum((b - expected) ** 2 / expected for b in buckets)
    assert chi2 < 27.88, buckets  # chi-square 9 dof, p = 0.001: uniform
    assert len(set(pttls)) > n // 2  # not one value
    client.delete(*[value.key_for(i) for i in range(n)])


@pytest.mark.slow
def test_xfetch_refreshes_hot_key_before_expiry(client: SmartClient) -> None:
    """Steady reads on a 1 s key whose load takes 50 ms: refreshed early, never a miss."""
    for _trial in range(3):

        @cached(client=client, namespace=ns(), ttl=1.0, early_refresh=True, beta=2.0)
        def hot() -> float:
            time.sleep(0.05)  # the load's latency
            return time.time()

        hot()
        stop = time.monotonic() + 2.6
        while time.monotonic() < stop:
            hot()
            time.sleep(0.005)  # read pacing, ~200 reads/s
        hot.cache.wait_refreshes(5)
        stats = hot.stats()
        assert stats["misses"] == 1, stats  # only the very first read
        assert stats["refreshes"] >= 2, stats


def test_xfetch_rarely_refreshes_far_from_expiry(client: SmartClient) -> None:
    @cached(client=client, namespace=ns(), ttl=60, early_refresh=True)
    def cold() -> int:
        return 1

    cold()
    for _ in range(500):
        cold()
    assert cold.stats()["refreshes"] == 0


def test_no_thread_leak_from_watchdog(client: SmartClient) -> None:
    before = threading.active_count()

    @cached(client=client, namespace=ns())
    def f(i: int) -> int:
        return i

    for i in range(50):
        f(i)
    assert threading.active_count() <= before + 1


def test_random_is_not_hash(client: SmartClient) -> None:
    # two decorations of one function share keys: the key is not process-salted
    def g(x: Any) -> Any:
        return x

    name = ns()
    a = cached(client=client, namespace=name)(g)
    b = cached(client=client, namespace=name)(g)
    arg = {"k": [1, 2.5, None], "r": random.Random(1).random()}
    assert a.key_for(arg) == b.key_for(arg)
