"""Write-through against real servers and a real SQLite file: the database first, then Redis."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from tenacity import stop_after_attempt

from smartcache import RetryPolicy, SmartClient
from smartcache.asyncio import AsyncSmartClient
from smartcache.cache import Cache, CachePolicy, cached, configure
from smartcache.cache._repair_log import read_repair_log
from smartcache.cache._store import StoreItem
from smartcache.cache._write_through import WriteThrough
from smartcache.cache._write_through_decorator import write_through
from smartcache.exceptions import CacheInconsistencyError, InvalidArgumentError
from smartcache.testing import Standalone

# A dead server must fail each command at once: no client-side retry loop, short timeouts.
FAST = {
    "socket_timeout": 0.5,
    "socket_connect_timeout": 0.5,
    "retry_policy": RetryPolicy(stop=stop_after_attempt(1)),
}
# Our own retries, kept small so a dead Redis costs well under a second per write.
RETRY = {"retry_attempts": 2, "retry_base_delay": 0.01, "retry_max_delay": 0.05}


class SQLiteKV:
    """A key/value table in a SQLite file; ``fail = True`` simulates "database down"."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fail = False
        self.calls = 0
        with self._connect() as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def _check(self) -> None:
        self.calls += 1
        if self.fail:
            raise sqlite3.OperationalError("unable to open database file (simulated outage)")

    def write_many(self, items: Sequence[StoreItem]) -> None:
        self._check()
        with self._connect() as conn:
            conn.executemany(
                "REPLACE INTO kv VALUES (?, ?)",
                [(i.key, json.dumps(i.value)) for i in items],
            )

    def delete_many(self, items: Sequence[StoreItem]) -> None:
        self._check()
        with self._connect() as conn:
            conn.executemany("DELETE FROM kv WHERE key = ?", [(i.key,) for i in items])

    def get(self, key: str) -> Any:
        with self._connect() as conn:
            row = conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])


class AsyncSQLiteKV:
    """The same table behind coroutine methods (an async store)."""

    def __init__(self, kv: SQLiteKV) -> None:
        self.kv = kv

    async def write_many(self, items: Sequence[StoreItem]) -> None:
        await asyncio.to_thread(self.kv.write_many, items)

    async def delete_many(self, items: Sequence[StoreItem]) -> None:
        await asyncio.to_thread(self.kv.delete_many, items)


def fresh_key() -> str:
    return f"wt:{uuid.uuid4().hex[:10]}"


def never(*_: Any) -> Any:
    raise AssertionError("the loader must not run: the entry should be in the cache")


@pytest.fixture
def kv(tmp_path: Path) -> SQLiteKV:
    return SQLiteKV(tmp_path / "db.sqlite")


@pytest.fixture
def client(redis_standalone: Standalone) -> Iterator[SmartClient]:
    with SmartClient.from_url(redis_standalone.url, **FAST) as c:
        yield c


@pytest.fixture
def private(redis_topologies: Any) -> Standalone:
    server: Standalone = redis_topologies.standalone()
    return server


# -- sync ---------------------------------------------------------------------------------
def test_invalidate_mode_writes_the_database_then_deletes_the_entry(
    client: SmartClient, kv: SQLiteKV
) -> None:
    wt = WriteThrough(client, kv, **RETRY)
    cache = Cache(client)
    key = fresh_key()
    wt.write(key, {"name": "old"})
    assert cache.get_or_load(key, lambda: kv.get(key)) == {"name": "old"}  # now cached
    assert client.exists(key) == 1

    wt.write(key, {"name": "new"})
    assert kv.get(key) == {"name": "new"}
    assert client.exists(key) == 0
    loads: list[str] = []
    assert cache.get_or_load(key, lambda: loads.append(key) or kv.get(key)) == {"name": "new"}
    assert loads == [key]

    wt.delete(key)
    assert kv.get(key) is None and client.exists(key) == 0
    assert wt.stats() == {
        "writes": 2,
        "deletes": 1,
        "store_errors": 0,
        "cache_errors": 0,
        "repairs_pending": 0,
        "repaired": 0,
    }


def test_set_mode_stores_an_entry_that_cache_readers_use(client: SmartClient, kv: SQLiteKV) -> None:
    wt = WriteThrough(client, kv, mode="set", policy=CachePolicy(ttl=60, jitter=5), **RETRY)
    key, other, gone = fresh_key(), fresh_key(), fresh_key()
    client.set(gone, b"stale")
    wt.write_many({key: {"n": 1}, other: [1, 2], gone: None})  # None is not cached: DEL
    assert kv.get(key) == {"n": 1} and kv.get(other) == [1, 2]
    cache = Cache(client)
    assert cache.get_or_load(key, never) == {"n": 1}
    assert cache.get_or_load(other, never) == [1, 2]
    assert client.exists(gone) == 0
    assert 0 < client.pttl(key) <= 65_000

    @cached(client=client, key="{name}", namespace="")
    def read(name: str) -> Any:
        raise AssertionError("not called")

    assert read(key) == {"n": 1}  # @cached reads the same entry format


def test_database_down_propagates_unchanged_and_leaves_the_cache_alone(
    client: SmartClient, kv: SQLiteKV
) -> None:
    for mode in ("invalidate", "set"):
        wt = WriteThrough(client, kv, mode=mode, **RETRY)  # type: ignore[arg-type]
        key = fresh_key()
        wt.write(key, "v1")
        Cache(client).get_or_load(key, lambda: kv.get(key))  # noqa: B023
        before = client.get(key)
        kv.fail = True
        with pytest.raises(sqlite3.OperationalError, match="simulated outage"):
            wt.write(key, "v2")
        with pytest.raises(sqlite3.OperationalError):
            wt.delete(key)
        kv.fail = False
        assert kv.get(key) == "v1"
        assert client.get(key) == before
        stats = wt.stats()
        assert stats["store_errors"] == 2 and stats["writes"] == 1
        assert stats["cache_errors"] == 0 and wt.pending_repairs() == []


def test_redis_down_after_the_database_write_is_recorded_then_repaired(
    private: Standalone, kv: SQLiteKV, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    log_path = tmp_path / "repairs.jsonl"
    key = fresh_key()
    with SmartClient.from_url(private.url, **FAST) as client:
        wt = WriteThrough(client, kv, repair_log=log_path, **RETRY)
        wt.write(key, "v1")
        Cache(client).get_or_load(key, lambda: kv.get(key))
        client.save()  # the restarted server comes back with this (soon stale) entry
        private.kill()

        started = time.monotonic()
        with caplog.at_level("WARNING", logger="smartcache.cache"):
            wt.write(key, "v2")  # returns: the database write succeeded
        assert time.monotonic() - started < 5
        assert kv.get(key) == "v2"
        assert wt.pending_repairs() == [key]
        assert [r.key for r in read_repair_log(log_path)] == [key]
        assert wt.stats()["cache_errors"] == 1 and wt.stats()["repairs_pending"] == 1
        assert key in caplog.text and "v2" not in caplog.text  # keys logged, values never

        assert wt.repair() == 0  # still down: the key stays recorded
        assert wt.pending_repairs() == [key]

        private.restart()
        assert Cache(client).peek(key).value == "v1"  # type: ignore[union-attr]  # stale
        assert wt.repair() == 1
        assert client.exists(key) == 0
        assert wt.pending_repairs() == [] and read_repair_log(log_path) == []
        assert log_path.read_text() == ""
        assert Cache(client).get_or_load(key, lambda: kv.get(key)) == "v2"
        assert wt.stats()["repaired"] == 1


def test_a_new_process_repairs_from_the_repair_log(
    private: Standalone, kv: SQLiteKV, tmp_path: Path
) -> None:
    log_path = tmp_path / "repairs.jsonl"
    key, untouched = fresh_key(), fresh_key()
    with SmartClient.from_url(private.url, **FAST) as client:
        wt = WriteThrough(client, kv, mode="set", repair_log=log_path, **RETRY)
        wt.write(key, "v1")
        client.set(untouched, b"keep")
        client.save()
        private.kill()
        wt.write(key, "v2")  # SET fails, DEL fails: recorded
        assert wt.pending_repairs() == [key]
    private.restart()

    with SmartClient.from_url(private.url, **FAST) as client:
        assert Cache(client).peek(key).value == "v1"  # type: ignore[union-attr]
        restarted = WriteThrough(client, kv, repair_log=log_path, **RETRY)
        assert restarted.pending_repairs() == [key]
        assert restarted.repair() == 1
        assert client.exists(key) == 0 and client.get(untouched) == b"keep"
        assert read_repair_log(log_path) == []
        assert WriteThrough(client, kv, repair_log=log_path).pending_repairs() == []


def test_the_next_write_heals_pending_keys_once_redis_is_back(
    private: Standalone, kv: SQLiteKV
) -> None:
    key, later = fresh_key(), fresh_key()
    with SmartClient.from_url(private.url, **FAST) as client:
        wt = WriteThrough(client, kv, **RETRY)
        wt.write(key, "v1")
        client.set(key, b"stale entry")
        client.save()
        private.kill()
        wt.write(key, "v2")
        private.restart()
        assert client.exists(key) == 1
        time.sleep(RETRY["retry_max_delay"])  # the heal runs at most once per retry_max_delay
        wt.write(later, "x")
        assert client.exists(key) == 0
        assert wt.pending_repairs() == []
        assert wt.stats()["repaired"] == 1


def test_on_cache_error_raise_records_then_raises(private: Standalone, kv: SQLiteKV) -> None:
    key = fresh_key()
    with SmartClient.from_url(private.url, **FAST) as client:
        wt = WriteThrough(client, kv, on_cache_error="raise", **RETRY)
        private.kill()
        with pytest.raises(CacheInconsistencyError, match="repair") as err:
            wt.write(key, "v2")
        assert err.value.keys == (key,)
        assert err.value.attempts == RETRY["retry_attempts"] + 1
        assert kv.get(key) == "v2"  # the database write stands
        assert wt.pending_repairs() == [key]
        private.restart()
        assert wt.repair() == 1


def test_sync_and_async_mismatches_are_refused_before_the_database(
    client: SmartClient, kv: SQLiteKV
) -> None:
    wt = WriteThrough(client, kv)
    with pytest.raises(InvalidArgumentError, match="async client"):
        asyncio.run(wt.awrite(fresh_key(), 1))
    with pytest.raises(InvalidArgumentError, match="async"):
        WriteThrough(client, AsyncSQLiteKV(kv))
    assert kv.calls == 0


# -- decorator ----------------------------------------------------------------------------
def test_decorated_update_function_invalidates_the_cached_reader(
    client: SmartClient, kv: SQLiteKV
) -> None:
    ns = f"d{uuid.uuid4().hex[:6]}"
    reads: list[int] = []

    @cached(client=client, namespace=ns, key="user:{user_id}")
    def get_user(user_id: int) -> Any:
        reads.append(user_id)
        return kv.get(f"user:{user_id}")

    @write_through("user:{user_id}", client=client, namespace=ns, **RETRY)
    def update_user(user_id: int, name: str) -> dict[str, Any]:
        """Update the user row."""
        row = {"id": user_id, "name": name}
        if name == "bad":
            raise ValueError("rejected by the database")
        kv.write_many([StoreItem(f"user:{user_id}", row)])
        return row

    assert update_user.__doc__ == "Update the user row."
    assert update_user.key_for(7, "x") == get_user.key_for(7) == f"{ns}:user:7"
    assert update_user(7, name="ann") == {"id": 7, "name": "ann"}
    assert get_user(7) == {"id": 7, "name": "ann"}
    assert get_user(7) == {"id": 7, "name": "ann"} and reads == [7]

    with pytest.raises(ValueError, match="rejected"):
        update_user(7, "bad")
    assert get_user(7) == {"id": 7, "name": "ann"} and reads == [7]  # cache untouched

    update_user(7, "bob")
    assert get_user(7) == {"id": 7, "name": "bob"} and reads == [7, 7]
    assert update_user.stats()["writes"] == 2 and update_user.stats()["store_errors"] == 1
    assert update_user.pending_repairs() == [] and update_user.repair() == 0


def test_decorator_set_mode_with_the_default_client(client: SmartClient, kv: SQLiteKV) -> None:
    ns = f"d{uuid.uuid4().hex[:6]}"

    @write_through("item:{item_id}", mode="set", namespace=ns, ttl=30, **RETRY)
    def save_item(item_id: int, payload: dict[str, Any]) -> dict[str, Any]:
        kv.write_many([StoreItem(f"item:{item_id}", payload)])
        return payload

    @cached(namespace=ns, key="item:{item_id}")
    def get_item(item_id: int) -> Any:
        raise AssertionError("served from the entry save_item wrote")

    configure(client=client)
    try:
        save_item(3, {"qty": 2})
        assert get_item(3) == {"qty": 2}
        assert 0 < client.pttl(f"{ns}:item:3") <= 30_000
    finally:
        configure(client=None)


def test_decorator_with_a_key_function(client: SmartClient, kv: SQLiteKV) -> None:
    key = fresh_key()

    @write_through(lambda name, value: f"{key}:{name}", client=client)
    def put(name: str, value: int) -> None:
        kv.write_many([StoreItem(name, value)])

    client.set(f"{key}:a", b"old")
    put("a", 1)
    assert client.exists(f"{key}:a") == 0 and kv.get("a") == 1


# -- async --------------------------------------------------------------------------------
@pytest.mark.asyncio
@pytest.mark.parametrize("store_kind", ["sync", "async"])
async def test_async_write_through(
    redis_standalone: Standalone, kv: SQLiteKV, store_kind: str
) -> None:
    store: Any = kv if store_kind == "sync" else AsyncSQLiteKV(kv)
    async with AsyncSmartClient.from_url(redis_standalone.url, **FAST) as client:
        cache = Cache(client)
        key = fresh_key()
        wt = WriteThrough(client, store, **RETRY)
        await wt.awrite(key, "v1")
        assert await cache.aget_or_load(key, lambda: kv.get(key)) == "v1"
        await wt.awrite(key, "v2")
        assert await client.exists(key) == 0
        assert await cache.aget_or_load(key, lambda: kv.get(key)) == "v2"

        setter = WriteThrough(client, store, mode="set", **RETRY)
        await setter.awrite_many({key: "v3"})
        assert kv.get(key) == "v3"
        assert await cache.aget_or_load(key, never) == "v3"
        await setter.adelete(key)
        assert kv.get(key) is None and await client.exists(key) == 0

        kv.fail = True
        with pytest.raises(sqlite3.OperationalError):
            await wt.awrite(key, "v4")
        kv.fail = False
        with pytest.raises(InvalidArgumentError, match="sync client"):
            wt.write(key, "v5")
        assert kv.get(key) is None


@pytest.mark.asyncio
async def test_async_redis_down_then_arepair(
    private: Standalone, kv: SQLiteKV, tmp_path: Path
) -> None:
    log_path = tmp_path / "repairs.jsonl"
    key = fresh_key()
    async with AsyncSmartClient.from_url(private.url, **FAST) as client:
        wt = WriteThrough(client, AsyncSQLiteKV(kv), repair_log=log_path, **RETRY)
        await wt.awrite(key, "v1")
        await client.set(key, b"cached v1")
        await client.save()
        private.kill()
        await wt.awrite(key, "v2")
        assert kv.get(key) == "v2" and wt.pending_repairs() == [key]
        assert [r.key for r in read_repair_log(log_path)] == [key]
        private.restart()
        assert await wt.arepair() == 1
        assert await client.exists(key) == 0 and read_repair_log(log_path) == []


@pytest.mark.asyncio
async def test_async_decorator(redis_standalone: Standalone, kv: SQLiteKV) -> None:
    ns = f"d{uuid.uuid4().hex[:6]}"
    async with AsyncSmartClient.from_url(redis_standalone.url, **FAST) as client:

        @cached(client=client, namespace=ns, key="user:{user_id}")
        async def get_user(user_id: int) -> Any:
            return kv.get(f"user:{user_id}")

        @write_through("user:{user_id}", client=client, namespace=ns, **RETRY)
        async def rename(user_id: int, name: str) -> str:
            await asyncio.sleep(0)
            if not name:
                raise ValueError("empty name")
            kv.write_many([StoreItem(f"user:{user_id}", name)])
            return name

        assert await rename(1, "ann") == "ann"
        assert await get_user(1) == "ann"
        await rename(1, "bob")
        assert await get_user(1) == "bob"
        with pytest.raises(ValueError, match="empty"):
            await rename(1, "")
        assert await get_user(1) == "bob"
        assert rename.stats()["writes"] == 2 and await rename.repair() == 0

        @write_through("user:{user_id}", client=client, namespace=ns)
        def sync_rename(user_id: int, name: str) -> None:
            kv.write_many([StoreItem(f"user:{user_id}", name)])

        with pytest.raises(InvalidArgumentError, match="async def"):
            sync_rename(1, "eve")
        assert kv.get("user:1") == "bob"  # refused before the database


class _HeldStore:
    """A dict database; a write of a value in ``hold`` commits, then waits for its gate
    before returning (its writer's cache step comes late)."""

    def __init__(self) -> None:
        import threading

        self.rows: dict[str, Any] = {}
        self.hold: dict[Any, Any] = {}
        self.committed = threading.Event()
        self._threading = threading

    def gate(self, value: Any) -> Any:
        event = self._threading.Event()
        self.hold[value] = event
        return event

    def write_many(self, items: Sequence[StoreItem]) -> None:
        for item in items:
            self.rows[item.key] = item.value
        for item in items:
            gate = self.hold.get(item.value)
            if gate is not None:
                self.committed.set()
                assert gate.wait(30)

    def delete_many(self, items: Sequence[StoreItem]) -> None:
        for item in items:
            self.rows.pop(item.key, None)


def test_set_mode_racing_writers_never_leave_the_older_value_cached(
    redis_standalone: Standalone,
) -> None:
    """ "DB A, DB B, cache B, cache A": A's cache step comes after B's, A's value is the
    older. The cache must not end with A (it did before leases)."""
    import threading

    client = SmartClient.from_url(redis_standalone.url)
    store = _HeldStore()
    wt = WriteThrough(client, store, mode="set", policy=CachePolicy(ttl=60), **RETRY)
    key = f"race:{uuid.uuid4().hex[:8]}"
    cache = Cache(client)
    loads: list[Any] = []

    def load() -> Any:
        loads.append(1)
        return store.rows.get(key)

    try:
        release_a = store.gate("A")
        writer_a = threading.Thread(target=wt.write, args=(key, "A"))
        writer_a.start()
        assert store.committed.wait(30)  # DB A, A's cache step held back
        wt.write(key, "B")  # DB B, cache B: overlapped A, so it deletes
        release_a.set()
        writer_a.join(30)  # cache A: overlapped B, deletes too
        assert store.rows[key] == "B"
        assert client.get(key) is None  # nothing cached: no older value
        assert cache.get_or_load(key, load) == "B" and loads == [1]
        assert client.hkeys(f"{{{key}}}:wt-lease") == [b"last"]  # both leases ended
        wt.write(key, "C")  # alone: sets, the next read is a hit
        assert cache.get_or_load(key, load) == "C" and loads == [1]
        wt.delete(key)
        assert client.get(key) is None and store.rows.get(key) is None
    finally:
        client.delete(key, f"{{{key}}}:wt-lease")
        client.close()


def test_set_mode_decorator_racing_writers(redis_standalone: Standalone) -> None:
    import threading

    client = SmartClient.from_url(redis_standalone.url)
    store = _HeldStore()
    ns = f"wtrace{uuid.uuid4().hex[:6]}"

    @write_through("item:{item_id}", client=client, mode="set", namespace=ns, ttl=30, **RETRY)
    def save(item_id: int, value: str) -> str:
        store.write_many([StoreItem(f"item:{item_id}", value)])
        return value

    key = save.key_for(1, "x")
    try:
        release = store.gate("old")
        older = threading.Thread(target=save, args=(1, "old"))
        older.start()
        assert store.committed.wait(30)
        assert save(1, "new") == "new"
        release.set()
        older.join(30)
        assert client.get(key) is None  # neither overlapping write left its value
        assert save(1, "newest") == "newest"  # alone: cached
        assert Cache(client).get_or_load(key, lambda: pytest.fail("loaded")) == "newest"
    finally:
        client.delete(key)
        client.close()
