"""Read-your-writes while a change waits: a write-behind entry cannot expire before its
change reached the store (it is pinned, then gets its TTL back), a reader never loads the
store's older row (not through ``WriteBehind.get``, which reads the queue when the entry
was evicted, nor through ``Cache.get_or_load``), and the same holds for deletes. On a
standalone server, a cluster and through a Sentinel failover; sync and async."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from smartcache.cache import SQLiteStore, StoreItem
from smartcache.cache._codec import PINNED_EXPIRY_MS, decode_entry, get_serializer
from smartcache.cache._wb_core import FlushOptions
from tests.integration._cache_world import World

pytestmark = pytest.mark.timeout(120)

TTL = 0.3  # seconds: far shorter than the flush the tests hold back


class GatedStore(SQLiteStore):
    """A database whose writes wait until ``gate`` opens (a slow flush), and that can be
    told to refuse one key for good."""

    def __init__(self, path: str, poison: str | None = None) -> None:
        super().__init__(path)
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.poison = poison

    def _wait(self, items: Sequence[StoreItem]) -> None:
        self.entered.set()
        if not self.gate.wait(60):
            raise TimeoutError("the test never opened the gate")
        if self.poison and any(i.key == self.poison for i in items):
            raise ValueError(f"{self.poison} violates a constraint")

    def write_many(self, items: Sequence[StoreItem]) -> None:
        self._wait(items)
        super().write_many(items)

    def delete_many(self, items: Sequence[StoreItem]) -> None:
        self._wait(items)
        super().delete_many(items)


def entry_expiry(world: World, client: Any, key: str) -> int:
    raw = world.run(world.raw(client).get(key))
    entry = decode_entry(raw, get_serializer("json"))
    assert entry is not None
    return entry.expiry_ms


def pttl(world: World, client: Any, key: str) -> int:
    return int(world.run(world.raw(client).pttl(key)))


def scenario(world: World, client: Any, tmp_path: Path) -> None:
    """Old rows in the store; new writes held back in the queue longer than the TTL."""
    store = GatedStore(str(tmp_path / "app.db"))
    store.gate.set()
    store.write_many(
        [StoreItem("user:1", {"v": "old"}, "0"), StoreItem("user:2", {"v": "old"}, "0")]
    )
    store.gate.clear()
    store.entered.clear()
    wb = world.write_behind(client, store, name=f"pin{uuid.uuid4().hex[:8]}", ttl=TTL)
    loads: list[str] = []

    def from_store(key: str) -> Any:
        def load() -> Any:
            loads.append(key)
            return store.items().get(key)

        return load

    try:
        wb.set("user:1", {"v": "new"})
        wb.delete("user:2")
        assert store.entered.wait(30)  # the flusher is inside the store, held there
        k1, k2 = wb.key_for("user:1"), wb.key_for("user:2")
        # pinned: no TTL while the change is queued (and no logical expiry, ever)
        assert pttl(world, client, k1) == -1 and pttl(world, client, k2) == -1
        assert entry_expiry(world, client, k1) == PINNED_EXPIRY_MS
        time.sleep(TTL * 2)  # the TTL the entries would have had is long gone
        assert wb.get("user:1") == {"v": "new"}
        assert wb.get("user:2") is None  # the delete, pending
        cache = world.cache(client)
        assert cache.get_or_load(k1, from_store("user:1")) == {"v": "new"}
        assert cache.get_or_load(k2, from_store("user:2")) is None
        assert loads == []  # no reader went to the store's older rows
        # an eviction (or a DEL by someone) of the pinned entries: the queue answers
        world.run(world.raw(client).delete(k1, k2))
        assert wb.get("user:1") == {"v": "new"}
        assert wb.get("user:2", "gone") == "gone"

        store.gate.set()
        wb.flush(timeout=30)
        assert store.items() == {"user:1": {"v": "new"}}
        # committed: the pin ends (the entry was evicted above, so it is simply absent)
        assert wb.get("user:1") is None  # evicted above, committed now: the store has it
        wb.set("user:3", {"v": 3})
        wb.flush(timeout=30)
        k3 = wb.key_for("user:3")
        assert 0 < pttl(world, client, k3) <= TTL * 1000 + 5  # its TTL, from the commit
        assert entry_expiry(world, client, k3) == PINNED_EXPIRY_MS  # fresh until gone
        assert pttl(world, client, k2) == -2  # the tombstone is gone with the delete
    finally:
        store.gate.set()
        world.close_write_behind(wb, timeout=10)
        store.close()


def test_pinned_until_committed_standalone(
    world: World, redis_standalone: Any, tmp_path: Path
) -> None:
    scenario(world, world.client(url=redis_standalone.url), tmp_path)


def test_pinned_until_committed_cluster(world: World, redis_cluster: Any, tmp_path: Path) -> None:
    scenario(world, world.client(startup_nodes=redis_cluster.startup_nodes), tmp_path)


def test_pinned_through_a_sentinel_failover(
    redis_topologies: Any, world: World, tmp_path: Path
) -> None:
    group = redis_topologies.sentinel(replicas=1)
    client = world.client(url=group.url, wait_replicas=1, wait_timeout_ms=2000)
    store = GatedStore(str(tmp_path / "s.db"))
    store.gate.set()
    store.write_many([StoreItem("k", "old", "0")])
    store.gate.clear()
    store.entered.clear()
    name = f"pinfail{uuid.uuid4().hex[:8]}"
    wb = world.write_behind(client, store, name=name, ttl=TTL, max_backoff=0.2)
    try:
        wb.set("k", "new")
        assert store.entered.wait(30)
        old = group.primary()
        promoted = group.failover()  # a clean failover: the pinned entry was replicated
        assert promoted.address != old.address
        time.sleep(TTL * 2)
        assert wb.get("k") == "new"  # from the new primary, still pinned
        store.gate.set()
        wb.flush(timeout=60)
        assert store.items() == {"k": "new"}
        assert wb.get("k") == "new"
        assert 0 < pttl(world, client, wb.key_for("k")) <= TTL * 1000 + 5
    finally:
        store.gate.set()
        world.close_write_behind(wb, timeout=10)
        store.close()


def test_a_dead_lettered_change_unpins_its_entry(
    world: World, redis_standalone: Any, tmp_path: Path
) -> None:
    client = world.client(url=redis_standalone.url)
    store = GatedStore(str(tmp_path / "d.db"))
    store.gate.set()
    store.write_many([StoreItem("bad", "stored", "0")])
    store.poison = "bad"
    options = FlushOptions(max_attempts=2)
    name = f"pindead{uuid.uuid4().hex[:8]}"
    wb = world.write_behind(client, store, name=name, ttl=TTL, options=options)
    try:
        wb.set("bad", "never stored")
        wb.set("good", "stored")
        wb.flush(timeout=30)  # returns once "bad" left the queue for the dead letters
        assert [d["key"] for d in wb.dead_letters()] == ["bad"]
        # the store never got it: the cache does not go on serving it
        assert pttl(world, client, wb.key_for("bad")) == -2
        assert wb.get("bad") is None
        assert wb.get("good") == "stored"
    finally:
        world.close_write_behind(wb, timeout=10)
        store.close()
