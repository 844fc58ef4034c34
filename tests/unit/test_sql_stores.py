"""The ready SQL stores: SQLiteStore, SQLAlchemyStore and AsyncSQLAlchemyStore on SQLite files.

:class:`StoreBehaviour` is the shared suite: every store kind runs it here on a SQLite file,
and tests/integration/test_sql_stores_servers.py runs it again on PostgreSQL and MySQL.
An async store runs it through :class:`SyncFacade` (its coroutines awaited on a loop in a
background thread, so threads calling it are real concurrent tasks).
"""

from __future__ import annotations

import asyncio
import inspect
import random
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from smartcache.cache import (
    AsyncSQLAlchemyStore,
    SQLAlchemyStore,
    SQLiteStore,
    Store,
    StoreItem,
)
from smartcache.cache._store import is_async_store, stream_version
from smartcache.exceptions import ConfigurationError, InvalidArgumentError, StaleWriteError

I = StoreItem
OpenStore = Callable[..., Any]


class AsyncRunner:
    """An event loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, awaitable: Any, timeout: float = 60.0) -> Any:
        async def wrap() -> Any:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class SyncFacade:
    """An async store driven with plain calls (``close`` awaits ``aclose``)."""

    def __init__(self, store: AsyncSQLAlchemyStore, runner: AsyncRunner) -> None:
        self.store = store
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.store, name)
        if not inspect.iscoroutinefunction(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._runner.run(attr(*args, **kwargs))

        return call

    def close(self) -> None:
        self._runner.run(self.store.aclose())

    def __repr__(self) -> str:
        return repr(self.store)


def force_generic(store: Any) -> Any:
    """Make a SQLAlchemy store take the SELECT ... FOR UPDATE path (any other dialect)."""
    target = store.store if isinstance(store, SyncFacade) else store
    target._sql.kind = "generic"
    target._sql.upsert = None
    return store


def new_table() -> str:
    return f"sc_test_{uuid.uuid4().hex[:12]}"


def retrying(fn: Callable[[], None], errors: tuple[type[BaseException], ...]) -> int:
    """Run ``fn`` until it succeeds, as a write-behind flusher does; the retries made."""
    for attempt in range(50):
        try:
            fn()
        except errors:
            continue
        return attempt
    raise AssertionError("a write kept failing after 50 attempts")


class StoreBehaviour:
    """What every store kind does. Subclasses provide the ``open_store`` fixture.

    ``open_store(**kwargs)`` opens a new store (its own connection or engine) on the test's
    database and table (``table=`` overrides it); every store opened is closed at teardown.
    ``open_store.retry_on`` lists the errors a concurrent writer retries on (deadlocks, busy).
    """

    def test_upsert_and_read(self, open_store: OpenStore) -> None:
        store = open_store()
        assert store.items() == {} and store.get("a") is None and store.get("a", 0) == 0
        store.write_many([I("a", {"n": 1, "s": "é"}, "001"), I("b", [1, 2], None)])
        store.write_many([I("a", {"n": 2}, "002")])
        assert store.get("a") == {"n": 2}
        assert store.get_many(["b", "zz", "a", "b"]) == {"b": [1, 2], "a": {"n": 2}}
        assert list(store.get_many(["b", "a"])) == ["b", "a"]
        assert store.items() == {"a": {"n": 2}, "b": [1, 2]}
        assert store.version_of("a") == "002"
        assert store.version_of("b") is None and store.version_of("zz") is None

    def test_bytes_encoded_by_the_same_serializer_are_stored_as_they_are(
        self, open_store: OpenStore
    ) -> None:
        # (the bytes differ from the value on purpose, to see which one was stored)
        store = open_store()
        store.write_many([I("a", {"n": 1}, "1", b'{"n":1,"as":"written"}', "json")])
        store.write_many([I("b", {"n": 1}, "1", b"\x80\x04K\x02.", "pickle")])  # another
        store.write_many([I("c", {"n": 1}, "1", b'{"n":2}', None)])  # not said whose
        assert store.items() == {"a": {"n": 1, "as": "written"}, "b": {"n": 1}, "c": {"n": 1}}

    def test_tombstones_are_purged_and_old_replays_still_lose(self, open_store: OpenStore) -> None:
        """Bounded: tombstones past the horizon go; a replayed older write loses to a delete
        within the horizon (the tombstone) and after it (refused: StaleWriteError)."""
        t0 = 2_000_000.0
        now = [t0]

        def v(seconds: float) -> str:  # a write-behind version from the time of the change
            return stream_version(f"{int(seconds * 1000)}-0")

        store = open_store(tombstone_horizon=100, purge_interval=50, clock=lambda: now[0])
        store.write_many([I("k", "v1", v(t0 - 10)), I("j", "j1", v(t0 - 10))])
        store.delete_many([I("k", None, v(t0 - 5))])
        store.write_many([I("k", "replayed", v(t0 - 8))])  # older than the delete
        assert store.get("k") is None and store.version_of("k") == v(t0 - 5)

        now[0] = t0 + 200  # the tombstone is past the horizon
        assert store.purge_tombstones() == 1
        assert store.version_of("k") is None  # gone: the table stays small
        with pytest.raises(StaleWriteError) as err:
            store.write_many([I("k", "replayed", v(t0 - 8)), I("n", "new", v(t0 + 150))])
        assert err.value.keys == ("k",)
        assert store.get("k") is None and store.get("n") is None  # nothing of the batch
        store.write_many([I("j", "j2", v(t0 - 9))])  # old, but its row exists: the guard
        assert store.get("j") == "j2"
        store.write_many([I("k", "fresh", v(t0 + 150)), I("u", "plain", None)])
        assert store.get("k") == "fresh" and store.get("u") == "plain"

        # by itself: a write after purge_interval purges what passed the horizon
        store.delete_many([I("m", None, v(t0 + 160)), I("x", None, "custom-scheme-1")])
        now[0] = t0 + 400
        store.write_many([I("other", 1, v(t0 + 390))])
        assert store.version_of("m") is None
        assert store.version_of("x") == "custom-scheme-1"  # not a timed version: kept

    def test_empty_batches_are_noops(self, open_store: OpenStore) -> None:
        store = open_store()
        store.write_many([])
        store.delete_many([])
        assert store.items() == {} and store.get_many([]) == {}

    def test_older_version_is_ignored_none_always_applies(self, open_store: OpenStore) -> None:
        store = open_store()
        store.write_many([I("k", "v5", "005")])
        store.write_many([I("k", "v3", "003")])
        assert store.get("k") == "v5"
        store.write_many([I("k", "again", "005")])  # the same version: already applied
        assert store.get("k") == "v5"
        store.write_many([I("k", "unversioned", None)])
        assert store.get("k") == "unversioned" and store.version_of("k") is None
        store.write_many([I("k", "v1", "001")])  # the row has no version: any write applies
        assert store.get("k") == "v1" and store.version_of("k") == "001"

    def test_tombstone_blocks_older_writes(self, open_store: OpenStore) -> None:
        store = open_store()
        store.write_many([I("k", "v1", "001"), I("other", 1, "001")])
        store.delete_many([I("k", None, "003"), I("never-written", None, "003")])
        assert store.get("k", "gone") == "gone" and store.items() == {"other": 1}
        assert store.version_of("k") == "003"
        store.write_many([I("k", "late", "002"), I("never-written", "late", "002")])
        assert store.get_many(["k", "never-written"]) == {}
        store.delete_many([I("k", None, "001")])  # an older delete changes nothing
        assert store.version_of("k") == "003"

    def test_newer_write_revives_a_deleted_key(self, open_store: OpenStore) -> None:
        store = open_store()
        store.write_many([I("k", "v1", "001")])
        store.delete_many([I("k", None, "002")])
        store.write_many([I("k", "v3", "003")])
        assert store.get("k") == "v3" and store.items() == {"k": "v3"}
        store.delete_many([I("k")])  # an unversioned delete always applies
        assert store.get("k", "gone") == "gone" and store.version_of("k") is None
        store.write_many([I("k", "any", "000")])
        assert store.get("k") == "any"

    def test_duplicate_keys_in_one_batch(self, open_store: OpenStore) -> None:
        store = open_store()
        store.write_many([I("k", "new", "002"), I("k", "old", "001"), I("j", "x", "001")])
        assert store.get("k") == "new" and store.version_of("k") == "002"
        store.write_many([I("e", "first", "005"), I("e", "second", "005")])
        assert store.get("e") == "second"
        store.write_many([I("n", "versioned", "009"), I("n", "unversioned", None)])
        assert store.get("n") == "unversioned"
        store.write_many([I("m", "a", None), I("m", "b", None)])
        assert store.get("m") == "b"
        store.delete_many([I("j", None, "004"), I("j", None, "003")])
        assert store.version_of("j") == "004" and store.get("j") is None

    def test_values_keys_and_sizes(self, open_store: OpenStore) -> None:
        store = open_store()
        big = "x" * 300_000
        keys = {"User:1": 1, "user:1": 2, "ключ:🔑": 3, "a" * 500: 4, "null": None, "big": big}
        store.write_many([I(k, v, "001") for k, v in keys.items()])
        assert store.items() == dict(sorted(keys.items()))
        assert store.get("null", "default") is None  # a stored JSON null is a live value

    def test_many_keys_in_one_call(self, open_store: OpenStore) -> None:
        store = open_store()
        store.write_many([I(f"k{i:04d}", i, "001") for i in range(1200)])
        found = store.get_many([f"k{i:04d}" for i in range(0, 1300, 2)])
        assert found == {f"k{i:04d}": i for i in range(0, 1200, 2)}
        store.delete_many([I(f"k{i:04d}", None, "002") for i in range(600)])
        assert len(store.items()) == 600

    def test_pickle_serializer(self, open_store: OpenStore) -> None:
        store = open_store(serializer="pickle")
        store.write_many([I("s", {1, 2}, None), I("t", (1, b"\x00"), None)])
        assert store.get_many(["s", "t"]) == {"s": {1, 2}, "t": (1, b"\x00")}

    def test_second_connection_sees_committed_data(self, open_store: OpenStore) -> None:
        writer, reader = open_store(), open_store()
        writer.write_many([I("a", 1, "001")])
        assert reader.get("a") == 1
        reader.delete_many([I("a", None, "002")])
        assert writer.get("a") is None and writer.version_of("a") == "002"

    def test_concurrent_writers_keep_the_greatest_version(self, open_store: OpenStore) -> None:
        keys = [f"key:{i}" for i in range(12)]
        writers, rounds = 4, 12
        # Versions 0..47 dealt round-robin, each writer's share shuffled: older versions of a
        # key keep arriving after newer ones, from several connections at once.
        plans = [list(range(w, writers * rounds, writers)) for w in range(writers)]
        for seed, plan in enumerate(plans):
            random.Random(seed).shuffle(plan)
        stores = [open_store() for _ in range(writers)]
        retry_on = open_store.retry_on  # type: ignore[attr-defined]
        start = threading.Barrier(writers)
        failures: list[BaseException] = []

        def write(store: Any, plan: list[int]) -> None:
            rng = random.Random(plan[0])
            try:
                start.wait()
                for n in plan:
                    version = f"{n:06d}"
                    batch = [I(k, f"{k}@{n}", version) for k in rng.sample(keys, len(keys))]
                    if n % 5 == 3:
                        retrying(lambda b=batch: store.delete_many(b), retry_on)
                    else:
                        retrying(lambda b=batch: store.write_many(b), retry_on)
            except BaseException as exc:
                failures.append(exc)

        threads = [
            threading.Thread(target=write, args=(s, p)) for s, p in zip(stores, plans, strict=True)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert not failures, failures
        last = writers * rounds - 1  # 47: a write (47 % 5 == 2)
        final = open_store()
        assert final.items() == {k: f"{k}@{last}" for k in keys}
        assert {final.version_of(k) for k in keys} == {f"{last:06d}"}

    @pytest.mark.parametrize("bad", ["", "1abc", "a-b", "t; DROP TABLE x", "x" * 64, "é", 5])
    def test_bad_table_name(self, open_store: OpenStore, bad: Any) -> None:
        with pytest.raises(InvalidArgumentError, match="table name .* letters"):
            open_store(table=bad)

    def test_bad_input(self, open_store: OpenStore) -> None:
        with pytest.raises(InvalidArgumentError, match="serializer 'yaml' is unknown"):
            open_store(serializer="yaml")
        store = open_store()
        with pytest.raises(InvalidArgumentError, match="keys must be str"):
            store.write_many([I(b"k", 1)])  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="versions must be str or None"):
            store.delete_many([I("k", None, 5)])  # type: ignore[arg-type]
        with pytest.raises(InvalidArgumentError, match="not one key"):
            store.get_many("abc")

    def test_repr_shows_location_and_table_only(self, open_store: OpenStore) -> None:
        store = open_store(table="shown_table")
        text = repr(store)
        assert type(getattr(store, "store", store)).__name__ in text
        assert "table='shown_table'" in text and "serializer" not in text.lower()


# --- the SQLite file kinds ---------------------------------------------------------------

KINDS = ["sqlite", "sqlalchemy", "sqlalchemy-generic", "async-sqlalchemy"]


@pytest.fixture
def runner() -> Iterator[AsyncRunner]:
    loop_runner = AsyncRunner()
    yield loop_runner
    loop_runner.stop()


def make_opener(
    kind: str, sync_url: str, async_url: str, runner: AsyncRunner, opened: list[Any]
) -> OpenStore:
    """``open_store`` for ``kind`` on the given database (shared by the integration suite)."""
    table = new_table()

    def open_store(**kwargs: Any) -> Any:
        kwargs.setdefault("table", table)
        store: Any
        if kind == "sqlite":
            store = SQLiteStore(sync_url, **kwargs)
        elif kind.startswith("async"):
            store = SyncFacade(AsyncSQLAlchemyStore(async_url, **kwargs), runner)
        else:
            store = SQLAlchemyStore(sync_url, **kwargs)
        opened.append(store)
        return force_generic(store) if kind.endswith("generic") else store

    open_store.table = table  # type: ignore[attr-defined]
    # Concurrent writers retry, as a flusher does: SQLAlchemy's SQLite "database is locked",
    # server deadlocks, and the generic path's primary-key race on a new key.
    retries = () if kind == "sqlite" else (sa.exc.OperationalError, sa.exc.IntegrityError)
    open_store.retry_on = retries  # type: ignore[attr-defined]
    return open_store


class TestOnSQLiteFile(StoreBehaviour):
    """The shared suite on a SQLite file, through each store kind."""

    @pytest.fixture(params=KINDS)
    def open_store(
        self, request: pytest.FixtureRequest, tmp_path: Path, runner: AsyncRunner
    ) -> Iterator[OpenStore]:
        path = tmp_path / "store.db"
        kind, opened = request.param, []
        sync_url = str(path) if kind == "sqlite" else f"sqlite:///{path}"
        yield make_opener(kind, sync_url, f"sqlite+aiosqlite:///{path}", runner, opened)
        for store in opened:
            store.close()


# --- SQLiteStore only ----------------------------------------------------------------------


def test_sqlite_store_uses_wal_and_readers_are_not_blocked(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    with SQLiteStore(path, timeout=0.2) as store:
        store.write_many([I("a", 1, "001")])
        other = sqlite3.connect(path, isolation_level=None)
        try:
            assert other.execute("PRAGMA journal_mode").fetchone() == ("wal",)
            other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            other.execute("UPDATE smartcache_store SET deleted = 0")
            assert store.get("a") == 1  # WAL: the reader is not blocked
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                store.write_many([I("a", 2, "002")])  # unchanged sqlite error: caller retries
            other.execute("COMMIT")
        finally:
            other.close()
        store.write_many([I("a", 2, "002")])  # the failed transaction was rolled back
        assert store.get("a") == 2
    assert "store" in repr(store)


def test_sqlite_store_checks_its_options(tmp_path: Path) -> None:
    for timeout in (-1, "5", True, None):
        with pytest.raises(InvalidArgumentError, match="timeout="):
            SQLiteStore(tmp_path / "x.db", timeout=timeout)  # type: ignore[arg-type]
    store = SQLiteStore(tmp_path / "x.db", table="custom")
    assert repr(store) == f"SQLiteStore(path={str(tmp_path / 'x.db')!r}, table='custom')"
    store.close()
    store.close()  # idempotent
    with pytest.raises(sqlite3.ProgrammingError):
        store.get("a")


def test_stores_are_recognised_by_the_protocol(tmp_path: Path) -> None:
    with (
        SQLiteStore(tmp_path / "a.db") as lite,
        SQLAlchemyStore(f"sqlite:///{tmp_path / 'b.db'}") as alchemy,
    ):
        assert isinstance(lite, Store) and isinstance(alchemy, Store)
        assert not is_async_store(lite) and not is_async_store(alchemy)
    async_store = AsyncSQLAlchemyStore(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    assert is_async_store(async_store)
    asyncio.run(async_store.aclose())


# --- SQLAlchemyStore / AsyncSQLAlchemyStore only -----------------------------------------


def test_repr_hides_the_password() -> None:
    url = "postgresql+psycopg://app:hunter2@db.example:5432/prod"
    store = SQLAlchemyStore(url, create=False)  # no connection is made
    assert repr(store) == (
        "SQLAlchemyStore(url='postgresql+psycopg://app:***@db.example:5432/prod', "
        "table='smartcache_store')"
    )
    store.close()
    async_store = AsyncSQLAlchemyStore(sa.make_url(url), table="t", create=False)
    assert "hunter2" not in repr(async_store) and "app:***@" in repr(async_store)
    asyncio.run(async_store.aclose())


def test_sqlalchemy_store_on_a_given_engine(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'e.db'}")
    with SQLAlchemyStore(engine, table="mine") as store:
        store.write_many([I("a", 1, "1")])
        assert store.table.name == "mine"
    with engine.connect() as conn:  # the caller's engine is left open
        assert conn.execute(sa.select(sa.func.count()).select_from(store.table)).scalar() == 1
    engine.dispose()
    with pytest.raises(InvalidArgumentError, match="Engine or a database URL"):
        SQLAlchemyStore(object())  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="AsyncEngine"):
        AsyncSQLAlchemyStore(engine)  # type: ignore[arg-type]


def test_without_create_a_missing_table_error_propagates(tmp_path: Path) -> None:
    with SQLAlchemyStore(f"sqlite:///{tmp_path / 'n.db'}", create=False) as store:
        with pytest.raises(sa.exc.OperationalError, match="no such table"):
            store.write_many([I("a", 1)])
        assert store.get_many([]) == {}


def test_missing_sqlalchemy_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    for cls in (SQLAlchemyStore, AsyncSQLAlchemyStore):
        with pytest.raises(ConfigurationError, match=r"pip install 'smartcache\[sqlalchemy\]'"):
            cls("sqlite://")
    with SQLiteStore(tmp_path / "ok.db") as store:  # needs only the standard library
        store.write_many([I("a", 1)])


def test_cache_package_imports_without_sqlalchemy() -> None:
    code = (
        "import sys; sys.modules['sqlalchemy'] = None\n"
        "import smartcache.cache as c\n"
        "assert c.SQLiteStore and c.SQLAlchemyStore and c.AsyncSQLAlchemyStore\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.stdout.strip() == "ok", out.stderr


@pytest.mark.asyncio
async def test_async_store_natively(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'a.db'}"
    async with AsyncSQLAlchemyStore(url, table="native") as store:
        # The first calls race to create the table: it is created once, all succeed.
        await asyncio.gather(*(store.write_many([I(f"k{i}", i, "001")]) for i in range(5)))
        await store.write_many([I("k0", "old", "000")])
        await store.delete_many([I("k1", None, "002")])
        await store.write_many([I("k1", "late", "001")])
        assert await store.items() == {"k0": 0, "k2": 2, "k3": 3, "k4": 4}
        assert await store.get("k1", "gone") == "gone"
        assert await store.get_many(["k2", "k9"]) == {"k2": 2}
        assert await store.version_of("k1") == "002"
        await store.write_many([])
        await store.delete_many([])


@pytest.mark.asyncio
async def test_async_store_concurrent_tasks_keep_the_greatest_version(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'c.db'}"
    versions = list(range(40))
    random.Random(3).shuffle(versions)
    async with AsyncSQLAlchemyStore(url) as store:
        await store.write_many([I("seed", 0)])  # create the table before the race

        async def write(n: int) -> None:
            for _ in range(50):
                try:
                    await store.write_many([I("a", n, f"{n:04d}"), I("b", n, f"{n:04d}")])
                except sa.exc.OperationalError:  # "database is locked": retry, as a flusher does
                    continue
                return
            raise AssertionError("kept failing")

        await asyncio.gather(*(write(n) for n in versions))
        assert await store.get_many(["a", "b"]) == {"a": 39, "b": 39}
