"""The shared SQL store suite on real database servers, when their URLs are given.

``SMARTCACHE_TEST_POSTGRES_URL`` (e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/test``)
and ``SMARTCACHE_TEST_MYSQL_URL`` (e.g. ``mysql+pymysql://root@127.0.0.1:3306/test``): each
test uses a table of its own and drops it afterwards. PostgreSQL also runs the async store
(psycopg's async driver); MySQL has no async driver in the dev extra, so runs the sync ones.
"""

from __future__ import annotations

import multiprocessing
import os
import random
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa

from smartcache.cache import SQLAlchemyStore, StoreItem
from tests.unit.test_sql_stores import (
    AsyncRunner,
    OpenStore,
    StoreBehaviour,
    force_generic,
    make_opener,
    new_table,
    retrying,
)

POSTGRES_URL = os.environ.get("SMARTCACHE_TEST_POSTGRES_URL", "")
MYSQL_URL = os.environ.get("SMARTCACHE_TEST_MYSQL_URL", "")

needs_postgres = pytest.mark.skipif(
    not POSTGRES_URL,
    reason="set SMARTCACHE_TEST_POSTGRES_URL (e.g. postgresql+psycopg://postgres@127.0.0.1:5432"
    "/test) to run the SQL store suite on PostgreSQL",
)
needs_mysql = pytest.mark.skipif(
    not MYSQL_URL,
    reason="set SMARTCACHE_TEST_MYSQL_URL (e.g. mysql+pymysql://root@127.0.0.1:3306/test) "
    "to run the SQL store suite on MySQL/MariaDB",
)
SERVERS = {"postgresql": (POSTGRES_URL, needs_postgres), "mysql": (MYSQL_URL, needs_mysql)}
CASES = [
    pytest.param(("postgresql", "sqlalchemy"), marks=needs_postgres, id="postgresql"),
    pytest.param(("postgresql", "sqlalchemy-generic"), marks=needs_postgres, id="pg-generic"),
    pytest.param(("postgresql", "async-sqlalchemy"), marks=needs_postgres, id="pg-async"),
    pytest.param(("mysql", "sqlalchemy"), marks=needs_mysql, id="mysql"),
    pytest.param(("mysql", "sqlalchemy-generic"), marks=needs_mysql, id="mysql-generic"),
]
RETRY_ON = (sa.exc.OperationalError, sa.exc.IntegrityError)  # deadlocks, new-key races


def async_url(url: str) -> str:
    """The same PostgreSQL database through psycopg's async driver."""
    parsed = sa.make_url(url).set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def drop_tables(url: str, tables: list[str]) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for table in tables:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
    finally:
        engine.dispose()


class TestOnServers(StoreBehaviour):
    """The shared suite on PostgreSQL and MySQL/MariaDB."""

    @pytest.fixture(params=CASES)
    def open_store(self, request: pytest.FixtureRequest) -> Iterator[OpenStore]:
        server, kind = request.param
        url = SERVERS[server][0]
        runner = AsyncRunner()
        opened: list[Any] = []
        opener = make_opener(
            kind, url, async_url(url) if kind.startswith("async") else url, runner, opened
        )
        try:
            yield opener
        finally:
            for store in opened:
                store.close()
            runner.stop()
            drop_tables(url, [opener.table, "shown_table"])  # type: ignore[attr-defined]


def _write_in_process(url: str, table: str, generic: bool, plan: list[int]) -> int:
    """A writer process: its own engine, its versions in a shuffled order; retries made."""
    rng = random.Random(plan[0])
    keys = [f"key:{i}" for i in range(10)]
    retries = 0
    with SQLAlchemyStore(url, table=table, create=False) as store:
        if generic:
            force_generic(store)
        for n in plan:
            batch = [StoreItem(k, {"n": n}, f"{n:08d}") for k in rng.sample(keys, len(keys))]
            retries += retrying(lambda b=batch: store.write_many(b), RETRY_ON)
    return retries


@pytest.mark.parametrize("generic", [False, True], ids=["upsert", "generic"])
@pytest.mark.parametrize(
    "server",
    [pytest.param("postgresql", marks=needs_postgres), pytest.param("mysql", marks=needs_mysql)],
)
def test_processes_writing_interleaved_versions(server: str, generic: bool) -> None:
    url = SERVERS[server][0]
    table = new_table()
    SQLAlchemyStore(url, table=table).close()  # create the table once
    writers, per_writer = 3, 30
    plans = [list(range(w, writers * per_writer, writers)) for w in range(writers)]
    for seed, plan in enumerate(plans):
        random.Random(100 + seed).shuffle(plan)
    try:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(writers, mp_context=context) as pool:
            futures = [pool.submit(_write_in_process, url, table, generic, p) for p in plans]
            for future in futures:
                future.result(timeout=240)
        with SQLAlchemyStore(url, table=table, create=False) as store:
            last = writers * per_writer - 1
            assert store.items() == {f"key:{i}": {"n": last} for i in range(10)}
            assert store.version_of("key:0") == f"{last:08d}"
    finally:
        drop_tables(url, [table])
