"""Write-behind on real servers and a real SQLite file (PostgreSQL when configured).

Crash safety (a SIGKILLed flusher mid-batch), poison entries, several flushers, and the three
topologies: standalone, Sentinel with a failover during flushing, and Cluster. Each scenario
runs in both worlds (the ``world`` fixture): WriteBehind over a SmartClient, or
AsyncWriteBehind over an AsyncSmartClient (its flusher a task), the store a sync one in both.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from smartcache import SmartClient
from smartcache.asyncio import AsyncSmartClient
from smartcache.cache import SQLiteStore, StoreItem
from smartcache.cache._wb_core import FlushOptions, QueueLayout
from smartcache.cache._write_behind import WriteBehind
from smartcache.cache._write_behind_async import AsyncWriteBehind
from smartcache.core.slots import key_slot
from smartcache.exceptions import FlushTimeoutError
from tests.integration._cache_world import World

ROOT = Path(__file__).resolve().parents[2]


def _name() -> str:
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def db(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(str(tmp_path / "app.db"))
    yield store
    store.close()


@pytest.fixture
def client(world: World, redis_standalone: Any) -> Any:
    return world.client(url=redis_standalone.url)


def test_set_answers_from_cache_and_flushes_last_write_per_key(
    world: World, client: Any, db: SQLiteStore
) -> None:
    with world.write_behind(client, db, name=_name(), ttl=60) as wb:
        for r in range(3):  # each round's 50 writes at once (threads, or tasks)
            world.concurrently(
                [(world.raw(wb).set, f"user:{i}", {"id": i, "r": r}) for i in range(50)]
            )
        wb.delete("user:7")
        assert wb.get("user:3") == {"id": 3, "r": 2}  # served by Redis at once
        assert wb.get("user:7") is None
        wb.flush(timeout=20)
        rows = db.items()
        assert rows == {f"user:{i}": {"id": i, "r": 2} for i in range(50) if i != 7}
        stats = wb.stats()
        assert stats["backlog"] == 0 and stats["sets"] == 150 and stats["deletes"] == 1
        # batches, not row by row: 151 changes took far fewer store calls
        assert stats["flusher_applied"] <= 151
    assert wb.flusher is not None and wb.flusher._worker is not None
    assert not world.alive(wb.flusher._worker)  # the thread / task never outlives close()


def test_versions_order_a_key_and_the_cache_entry_is_readable_by_cache(
    world: World, client: Any, db: SQLiteStore
) -> None:
    with world.write_behind(client, db, name=_name()) as wb:
        v1 = wb.set("k", 1)
        v2 = wb.set("k", 2)
        assert v1 < v2
        wb.flush(20)
        assert db.version_of("k") == v2
        # the read side finds the entry without calling the loader
        cache = world.cache(client)
        assert cache.get_or_load(wb.key_for("k"), lambda: pytest.fail("loaded")) == 2


def test_crash_mid_batch_loses_nothing_and_applies_nothing_out_of_order(
    world: World, redis_standalone: Any, tmp_path: Path
) -> None:
    """The child (a process of the same world) is SIGKILLed mid-batch; this world recovers."""
    path = str(tmp_path / "crash.db")
    SQLiteStore(path).close()  # the table exists before the child starts
    name = _name()
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.integration._wb_child",
            world.kind,
            redis_standalone.url,
            path,
            name,
            "120",
            "4",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        expected: dict[str, list[Any]] = {}
        mid_batch = False
        while not (expected and mid_batch):
            line = child.stdout.readline()
            assert line, f"the child exited early with {child.wait()}"
            if line.startswith("WRITES "):
                expected = json.loads(line[len("WRITES ") :])
            elif line.startswith("MIDBATCH"):
                mid_batch = True
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if child.stdout is not None:
            child.stdout.close()

    client = world.client(url=redis_standalone.url)
    store = SQLiteStore(path)
    try:
        before = store.items()
        assert "torn" not in json.dumps(before)  # the killed batch never committed
        wb = world.write_behind(
            client,
            store,
            name=name,
            partitions=4,
            options=FlushOptions(claim_idle=0.3, claim_interval=0.1),
        )
        assert wb.stats()["backlog"] > 0  # the dead child left work behind
        wb.drain(timeout=30)
        world.close_write_behind(wb)
        rows = store.items()
        for key, (value, version) in expected.items():
            if value is None:
                assert key not in rows
            else:
                assert rows[key] == value, key
                assert wb.get(key) == value  # the cache equals the database
            assert store.version_of(key) == version, key  # the last write, nothing later
    finally:
        store.close()


def test_drain_alone_flushes_what_other_writers_left(
    world: World, client: Any, db: SQLiteStore
) -> None:
    """A process that only drains (no write of its own) still starts its flusher: the
    AsyncWriteBehind's ``drain()`` used to wait for a flusher nothing had started."""
    name = _name()
    with world.write_behind(client, db, name=name, flusher=False) as writer:
        for i in range(20):
            writer.set(f"d{i}", i)
    assert db.items() == {}
    recovering = world.write_behind(client, db, name=name)
    recovering.drain(timeout=20)
    assert db.items() == {f"d{i}": i for i in range(20)}
    assert recovering.stats()["backlog"] == 0
    world.close_write_behind(recovering)


class PoisonStore(SQLiteStore):
    """Rejects one key; everything else commits."""

    def __init__(self, path: str, poison: str) -> None:
        super().__init__(path)
        self.poison = poison

    def write_many(self, items: Sequence[StoreItem]) -> None:
        if any(item.key == self.poison for item in items):
            raise ValueError(f"constraint violated by {self.poison}")
        super().write_many(items)


def test_poison_entry_goes_to_dead_letters_after_n_attempts_while_others_flush(
    world: World, client: Any, tmp_path: Path
) -> None:
    store = PoisonStore(str(tmp_path / "p.db"), "user:13")
    wb = world.write_behind(client, store, name=_name(), options=FlushOptions(max_attempts=3))
    try:
        for i in range(40):
            wb.set(f"user:{i}", i)
        wb.flush(timeout=30)  # returns once the poison entry left the queue
        assert store.items() == {f"user:{i}": i for i in range(40) if i != 13}
        (dead,) = wb.dead_letters()
        assert dead["key"] == "user:13" and dead["attempts"] == 3
        assert "constraint violated by user:13" in dead["error"]
        assert json.loads(dead["raw_value"]) == 13
        assert wb.stats()["dead_letters"] == 1
    finally:
        world.close_write_behind(wb)
        store.close()


class DownStore(SQLiteStore):
    """A database that is down until ``up`` is set."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.up = threading.Event()

    def write_many(self, items: Sequence[StoreItem]) -> None:
        if not self.up.is_set():
            raise ConnectionError("database unreachable")
        super().write_many(items)

    def ping(self) -> bool:
        if not self.up.is_set():
            raise ConnectionError("database unreachable")
        return super().ping()


def test_a_database_outage_dead_letters_nothing_and_flush_times_out_without_loss(
    world: World, client: Any, tmp_path: Path
) -> None:
    store = DownStore(str(tmp_path / "down.db"))
    wb = world.write_behind(
        client, store, name=_name(), options=FlushOptions(max_attempts=1), max_backoff=0.2
    )
    try:
        for i in range(10):
            wb.set(f"k{i}", i)
        with pytest.raises(FlushTimeoutError):
            wb.flush(timeout=1.0)
        assert wb.stats()["backlog"] == 10 and wb.dead_letters() == []
        store.up.set()
        wb.flush(timeout=20)
        assert store.items() == {f"k{i}": i for i in range(10)}
    finally:
        world.close_write_behind(wb)
        store.close()


def test_several_flushers_keep_last_write_wins(world: World, client: Any, db: SQLiteStore) -> None:
    name = _name()
    layout = QueueLayout(name, partitions=4)
    flushers = [
        world.flusher(client, db, layout, FlushOptions(batch_size=7), poll_interval=0.01)
        for _ in range(3)
    ]
    for f in flushers:
        world.start(f)
    wb = world.write_behind(client, db, name=name, partitions=4, flusher=False)
    try:
        last = {}
        for r in range(30):
            for i in range(10):
                last[f"c{i}"] = r
                wb.set(f"c{i}", r)
        wb.flush(timeout=30)
        assert db.items() == last
        for f in flushers:
            f.stop()  # after its round: the counts below are complete
        assert sum(f.stats.snapshot()["applied"] for f in flushers) > 0
        assert sum(1 for f in flushers if f.stats.snapshot()["read"]) >= 2
    finally:
        for f in flushers:
            f.stop()


def test_bad_input_is_refused_with_a_clear_error(
    world: World, client: Any, db: SQLiteStore
) -> None:
    from smartcache.exceptions import ConfigurationError, InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="needs a store"):
        world.write_behind(client, name=_name())
    with pytest.raises(InvalidArgumentError, match="no braces"):
        world.write_behind(client, db, name="a{b}")
    name = _name()
    with (
        world.write_behind(client, db, name=name, partitions=8, flusher=False) as wb,
        pytest.raises(InvalidArgumentError, match="non-empty str"),
    ):
        wb.set(b"bytes-key", 1)
    # the partition count is checked when the queue is first used (at once for the sync
    # WriteBehind, at start for the async one: the context manager here)
    with (
        pytest.raises(ConfigurationError, match="created with 8 partitions"),
        world.write_behind(client, db, name=name, partitions=16),
    ):
        pass


def test_cluster_spreads_partitions_over_primaries(
    world: World, redis_cluster: Any, tmp_path: Path
) -> None:
    client = world.client(startup_nodes=redis_cluster.startup_nodes)
    store = SQLiteStore(str(tmp_path / "c.db"))
    try:
        with world.write_behind(client, store, name=_name(), partitions=6) as wb:
            owners = {
                client.get_node_from_key(wb.layout.stream(p)).name
                for p in range(wb.layout.partitions)
            }
            assert len(owners) == 3  # every primary holds partitions
            for p in range(wb.layout.partitions):
                assert key_slot(wb.layout.stream(p)) == key_slot(wb.layout.dead(p))
            for i in range(300):
                assert key_slot(wb.key_for(f"u{i}")) == key_slot(
                    wb.layout.stream(wb.layout.partition_of(f"u{i}"))
                )
                wb.set(f"u{i}", i)
            wb.flush(timeout=30)
        assert store.items() == {f"u{i}": i for i in range(300)}
    finally:
        store.close()


def test_sentinel_failover_during_flushing_loses_no_acknowledged_write(
    redis_topologies: Any, world: World, tmp_path: Path
) -> None:
    # redis_topologies first: its servers outlive the world's clients (closed at teardown)
    group = redis_topologies.sentinel()
    client = world.client(url=group.url, wait_replicas=1, wait_timeout_ms=500)
    store = SQLiteStore(str(tmp_path / "s.db"))
    wb = world.write_behind(client, store, name=_name(), partitions=4)
    acked: dict[str, int] = {}
    errors = 0
    try:
        old = group.primary()
        for n in range(400):
            key = f"s{n % 40}"
            if n == 150:
                group.kill(old)
            try:
                wb.set(key, n)
                acked[key] = n
            except Exception:
                errors += 1  # not acknowledged: may or may not be there
        group.wait_for_failover(old)
        wb.flush(timeout=60)
        rows = store.items()
        for key, n in acked.items():
            # the last acknowledged value, or a later one whose reply was lost
            assert rows[key] >= n, (key, rows.get(key), n)
            assert wb.get(key) == rows[key]
    finally:
        world.close_write_behind(wb, timeout=5)
        store.close()


POSTGRES = os.environ.get("SMARTCACHE_TEST_POSTGRES_URL")


@pytest.mark.skipif(not POSTGRES, reason="SMARTCACHE_TEST_POSTGRES_URL is not set")
def test_write_behind_into_postgresql(world: World, client: Any) -> None:
    from smartcache.cache import SQLAlchemyStore

    table = f"wb_{uuid.uuid4().hex[:8]}"
    store = SQLAlchemyStore(POSTGRES, table=table)
    try:
        with world.write_behind(client, store, name=_name()) as wb:
            for r in range(3):
                for i in range(100):
                    wb.set(f"pg:{i}", {"r": r})
            wb.flush(timeout=30)
        assert store.items() == {f"pg:{i}": {"r": 2} for i in range(100)}
    finally:
        store.table.drop(store.engine)
        store.close()


# One world each: an async store (awaited on the loop) is the async flusher's alone; the
# sync flusher refuses it (the test after this one).
@pytest.mark.asyncio
async def test_async_write_behind_with_an_async_store(
    redis_standalone: Any, tmp_path: Path
) -> None:
    from smartcache.cache import AsyncSQLAlchemyStore

    client = AsyncSmartClient.from_url(redis_standalone.url)
    store = AsyncSQLAlchemyStore(f"sqlite+aiosqlite:///{tmp_path / 'aa.db'}")
    try:
        async with AsyncWriteBehind(client, store, name=_name()) as wb:
            for r in range(3):
                await asyncio.gather(*(wb.set(f"b{i}", [i, r]) for i in range(50)))
            await wb.delete("b0")
            await wb.flush(timeout=20)
        assert await store.items() == {f"b{i}": [i, 2] for i in range(1, 50)}
    finally:
        await store.aclose()
        await client.aclose()


def test_a_sync_flusher_refuses_an_async_store(redis_standalone: Any, tmp_path: Path) -> None:
    from smartcache.cache import AsyncSQLAlchemyStore
    from smartcache.exceptions import InvalidArgumentError

    store = AsyncSQLAlchemyStore(f"sqlite+aiosqlite:///{tmp_path / 'x.db'}")
    with (
        SmartClient.from_url(redis_standalone.url) as client,
        pytest.raises(InvalidArgumentError, match="use AsyncWriteBehind"),
    ):
        WriteBehind(client, store, name=_name())
