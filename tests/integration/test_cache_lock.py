from __future__ import annotations

import threading
import time
import uuid

import pytest

from smartcache import SmartClient
from smartcache.cache import Cache, CachePolicy
from smartcache.cache._lock import LeaseLock, lock_key
from smartcache.testing import Standalone


@pytest.fixture
def client(redis_standalone: Standalone):  # type: ignore[no-untyped-def]
    with SmartClient.from_url(redis_standalone.url) as c:
        yield c


def test_release_only_with_own_token(client: SmartClient, redis_standalone: Standalone) -> None:
    lock = LeaseLock(client, lease_ms=5_000)
    key = f"lk:{uuid.uuid4().hex}"
    token = lock.acquire(key)
    assert token is not None and len(token) == 32
    assert lock.acquire(key) is None
    lock.release(key, b"0" * 32)  # someone else's token: nothing happens
    assert client.get(lock_key(key)) == token
    lock.release(key, token)
    assert client.exists(lock_key(key)) == 0
    binary = redis_standalone.binary
    native = binary.flavor == "valkey" and binary.version >= (9, 0, 0)
    assert lock._native_delifeq is native  # Redis 7.0: Lua compare-and-delete


def test_watchdog_extends_lease_for_slow_loader(client: SmartClient) -> None:
    """lease 300 ms, loader 1 s: a second cache cannot take the key meanwhile."""
    policy = CachePolicy(lease_ms=300)
    a, b = Cache(client, policy), Cache(client, policy)
    key = f"wd:{uuid.uuid4().hex}"
    loads = []
    started = threading.Event()

    def slow() -> str:
        loads.append("a")
        started.set()
        time.sleep(1.0)  # the load's latency
        return "A"

    t = threading.Thread(target=lambda: a.get_or_load(key, slow))
    t.start()
    assert started.wait(5)
    assert b.get_or_load(key, lambda: loads.append("b") or "B") == "A"  # waited, was woken
    t.join()
    assert loads == ["a"]
    assert b.stats.snapshot()["lock_waits"] >= 1


def test_lost_lease_abandons_the_write(client: SmartClient) -> None:
    cache = Cache(client, CachePolicy(lease_ms=300))
    key = f"lost:{uuid.uuid4().hex}"

    def loader() -> str:
        client.set(lock_key(key), b"stolen", px=10_000)  # another holder took over
        time.sleep(0.25)  # past the first watchdog tick (lease / 3)
        return "mine"

    assert cache.get_or_load(key, loader) == "mine"  # the caller still gets its value
    assert client.exists(key) == 0  # but it was not written over the new holder
    assert client.get(lock_key(key)) == b"stolen"  # and its lock was not released
