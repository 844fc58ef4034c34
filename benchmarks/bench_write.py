"""Write latency of write-behind against write-through and a plain database write; flusher
throughput with batching against row-by-row.

    .venv/bin/python -m benchmarks.bench_write [--n 500] [--rounds 5] [--rows 20000]
        [--slow-rows 5000] [--flush-rounds 3] [--no-pin]
    SMARTCACHE_BENCH_POSTGRES_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test \\
        .venv/bin/python -m benchmarks.bench_write

One ``smartcache.testing.Standalone()`` server is started here and used for every case; on a
machine with 2+ CPUs it and this process are pinned to one CPU, as in ``bench_client``
(``--no-pin`` to skip; a PostgreSQL server is left alone). The databases: a SQLite file in a
temporary directory (WAL, as ``SQLiteStore`` sets it) and, when ``SMARTCACHE_BENCH_POSTGRES_URL``
names one, PostgreSQL through ``SQLAlchemyStore`` on a table of its own, dropped at the end.

Latency: ``--n`` writes per case and round, each to a new key with a ~70-byte JSON value, the
cases timed back to back in every round (interleaved, so background noise hits all):
- plain database write: ``store.write_many([StoreItem(key, value)])``, one transaction each;
- write-through: ``WriteThrough(client, store).write(key, value)`` (commit, then cache DEL);
- write-through ``mode="set"``: a lease script, the commit, the lease's end script (SET);
- write-behind: ``WriteBehind(client, store, flusher=False).set(key, value)``: the Redis
  round trip alone (the flushing is the second benchmark);
- for reference, ``SmartClient.set(key, json.dumps(value))``: one plain Redis round trip.
Reported: the median per-call time over ``--rounds`` rounds (range in brackets) and the median
of the per-round time ratios against the plain database write.

Flusher throughput: a queue of fresh name is pre-filled with ``WriteBehind(flusher=False)``,
one change per distinct key (coalescing cannot help), then one ``Flusher`` drains it with
``run_once()`` until a round reads nothing; rows/s = rows applied / seconds of that loop.
Batched: ``FlushOptions(batch_size=500)`` on the store. Row-by-row: ``batch_size=1`` and a
store wrapper committing every item on its own, what a naive flush loop does (it drains
``--slow-rows`` changes: its rate does not depend on the queue's length, and 20,000 of them
would add about a minute per database). The median rate of ``--flush-rounds`` rounds is
reported, and the median of the per-round ratios batched / row-by-row.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from benchmarks.bench_client import _pin
from smartcache.cache import (
    Flusher,
    FlushOptions,
    QueueLayout,
    SQLAlchemyStore,
    SQLiteStore,
    StoreItem,
    WriteBehind,
    WriteThrough,
)
from smartcache.sync.client import SmartClient
from smartcache.testing import Standalone

POSTGRES_ENV = "SMARTCACHE_BENCH_POSTGRES_URL"
PLAIN = "plain DB write (write_many, 1 row)"
REFERENCE = "reference: SmartClient.set (1 round trip)"
LatencyRow = tuple[str, str, list[float], float]  # database, case, per-round µs, time ratio
FlushRow = tuple[str, str, int, list[float], float]  # database, flusher, rows, rows/s, ratio
Write = Callable[[str, Any], Any]


def value(i: int) -> dict[str, Any]:
    """A small JSON row (~70 bytes serialized)."""
    return {"id": i, "name": f"user-{i}", "email": f"user{i}@example.com"}


@contextlib.contextmanager
def sqlite_store() -> Iterator[SQLiteStore]:
    with tempfile.TemporaryDirectory(prefix="smartcache-bench-") as tmp:
        store = SQLiteStore(os.path.join(tmp, "bench.db"))
        try:
            yield store
        finally:
            store.close()


@contextlib.contextmanager
def postgres_store(url: str) -> Iterator[SQLAlchemyStore]:
    store = SQLAlchemyStore(url, table=f"bench_write_{uuid.uuid4().hex[:12]}")
    try:
        yield store
    finally:
        store.table.drop(store.engine)
        store.close()


def databases(postgres_url: str | None) -> list[tuple[str, Callable[[], Any]]]:
    """``(label, store context manager factory)`` for SQLite and, if given, PostgreSQL."""
    out: list[tuple[str, Callable[[], Any]]] = [("SQLite", sqlite_store)]
    if postgres_url:
        out.append(("PostgreSQL", lambda: postgres_store(postgres_url)))
    return out


def drop_queue(client: SmartClient, layout: QueueLayout) -> None:
    """Delete a write-behind queue's streams, meta hash and cache entries."""
    keys = [layout.meta()]
    for p in range(layout.partitions):
        keys += [layout.stream(p), layout.dead(p), layout.attempts(p)]
    client.delete(*keys)
    # every partition tag starts with "<name>." (see QueueLayout): one scan finds the entries
    _delete_matching(client, f"{layout.namespace}:wb:{{{layout.name}.*")


def _delete_matching(client: SmartClient, pattern: str) -> None:
    keys = list(client.scan_iter(match=pattern, count=1000))
    for start in range(0, len(keys), 1000):
        client.delete(*keys[start : start + 1000])


def _timed(write: Write, keys: Sequence[str], values: Sequence[Any]) -> float:
    t = time.perf_counter()
    for key, val in zip(keys, values, strict=True):
        write(key, val)
    return time.perf_counter() - t


def latency_rows(
    client: SmartClient, database: str, store: Any, n: int, rounds: int
) -> list[LatencyRow]:
    token = f"bench-{uuid.uuid4().hex[:12]}"  # keys and queue name of this run only
    wt = WriteThrough(client, store)
    wt_set = WriteThrough(client, store, mode="set")
    wb = WriteBehind(client, store, name=token, flusher=False)
    cases: dict[str, Write] = {
        PLAIN: lambda key, val: store.write_many([StoreItem(key, val)]),
        "write-through (commit + DEL)": wt.write,
        "write-through mode=set (lease + commit + SET)": wt_set.write,
        "write-behind set (flusher=False)": wb.set,
        REFERENCE: lambda key, val: client.set(key, json.dumps(val)),
    }
    values = [value(i) for i in range(n)]
    for c, write in enumerate(cases.values()):  # warm up connections, statements, scripts
        _timed(write, [f"{token}:warm:{c}:{i}" for i in range(n // 10)], values[: n // 10])
    times: dict[str, list[float]] = {case: [] for case in cases}
    for r in range(rounds):
        for c, (case, write) in enumerate(cases.items()):
            keys = [f"{token}:{c}:{r}:{i}" for i in range(n)]
            times[case].append(_timed(write, keys, values))
    drop_queue(client, wb.layout)
    _delete_matching(client, f"{token}:*")  # the reference and write-through keys
    _delete_matching(client, f"{{{token}:*")  # write-through leases
    rows: list[LatencyRow] = []
    for case, ts in times.items():
        ratio = statistics.median(t / p for t, p in zip(ts, times[PLAIN], strict=True))
        rows.append((database, case, [t / n * 1e6 for t in ts], ratio))
    return rows


def run_latency(url: str, n: int, rounds: int, postgres_url: str | None) -> list[LatencyRow]:
    """Rows (database, case, per-round µs per call, median time ratio vs the plain write)."""
    client = SmartClient.from_url(url)
    rows: list[LatencyRow] = []
    try:
        for database, make_store in databases(postgres_url):
            with make_store() as store:
                rows += latency_rows(client, database, store, n, rounds)
    finally:
        client.close()
    return rows


class RowByRow:
    """A store committing each item in its own transaction (a naive flush loop)."""

    def __init__(self, store: Any) -> None:
        self.store = store

    def write_many(self, items: Sequence[StoreItem]) -> None:
        for item in items:
            self.store.write_many([item])

    def delete_many(self, items: Sequence[StoreItem]) -> None:
        for item in items:
            self.store.delete_many([item])

    def ping(self) -> bool:
        return bool(self.store.ping())


def drain(
    client: SmartClient,
    store: Any,
    rows: int,
    batch_size: int,
    meter: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> float:
    """Pre-fill a fresh queue with ``rows`` changes, drain it; the seconds the drain took.

    ``meter()`` is entered around the timed drain (bench_flusher measures CPU with it)."""
    wb = WriteBehind(client, name=f"bench-{uuid.uuid4().hex[:12]}", flusher=False)
    prefix = wb.layout.name
    for i in range(rows):
        wb.set(f"{prefix}:{i}", value(i))
    backlog = wb.stats()["backlog"]
    if backlog != rows:
        raise RuntimeError(f"queued {backlog} changes, expected {rows}")
    flusher = Flusher(
        client,
        store,
        wb.layout,
        FlushOptions(batch_size=batch_size),
        serializer=wb.policy.serializer,
    )
    applied = 0
    with meter():
        start = time.perf_counter()
        while True:
            result = flusher.run_once()
            if result.redis_error is not None or result.store_error is not None:
                raise RuntimeError(f"flush round failed: {result}")
            applied += result.applied
            if result.idle:
                break
        elapsed = time.perf_counter() - start
    if applied != rows or wb.stats()["backlog"]:
        raise RuntimeError(f"the flusher applied {applied} of {rows} changes")
    drop_queue(client, wb.layout)
    return elapsed


def run_flush(
    url: str, rows: int, slow_rows: int, rounds: int, postgres_url: str | None
) -> list[FlushRow]:
    """Rows (database, flusher, rows per drain, per-round rows/s, median ratio vs row-by-row)."""
    client = SmartClient.from_url(url)
    out: list[FlushRow] = []
    try:
        for database, make_store in databases(postgres_url):
            with make_store() as store:
                drain(client, store, 200, 500)  # warm up
                fast: list[float] = []
                slow: list[float] = []
                for _ in range(rounds):
                    fast.append(rows / drain(client, store, rows, 500))
                    slow.append(slow_rows / drain(client, RowByRow(store), slow_rows, 1))
                ratio = statistics.median(f / s for f, s in zip(fast, slow, strict=True))
                out.append((database, "batched (batch_size=500)", rows, fast, ratio))
                out.append(
                    (database, "row-by-row (batch_size=1, 1 row per commit)", slow_rows, slow, 1.0)
                )
    finally:
        client.close()
    return out


def _median_range(values: list[float], fmt: str) -> str:
    return (
        f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"
        if len(values) > 1
        else f"{values[0]:{fmt}}"
    )


def latency_table(rows: list[LatencyRow]) -> str:
    """Markdown: µs per call and time ratio vs the plain database write (< 1: faster)."""
    lines = [
        "| database | case | µs per call | time vs plain DB write | speed-up |",
        "|---|---|---:|---:|---:|",
    ]
    for database, case, us, ratio in rows:
        lines.append(
            f"| {database} | {case} | {_median_range(us, ',.0f')} | {ratio:.2f}x | "
            f"{1 / ratio:.2f}x |"
        )
    return "\n".join(lines)


def flush_table(rows: list[FlushRow]) -> str:
    """Markdown: rows/s per flusher and the batched / row-by-row ratio."""
    lines = [
        "| database | flusher | rows per drain | rows/s | vs row-by-row |",
        "|---|---|---:|---:|---:|",
    ]
    for database, flusher, n, rates, ratio in rows:
        lines.append(
            f"| {database} | {flusher} | {n:,} | {_median_range(rates, ',.0f')} | {ratio:.2f}x |"
        )
    return "\n".join(lines)


def _sqlite_sync() -> str:
    """The journal and sync mode a new SQLiteStore connection gets."""
    with tempfile.TemporaryDirectory() as tmp:
        conn = sqlite3.connect(os.path.join(tmp, "probe.db"))
        try:
            journal = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            sync = conn.execute("PRAGMA synchronous").fetchone()[0]
        finally:
            conn.close()
    return f"journal_mode={journal}, synchronous={['OFF', 'NORMAL', 'FULL', 'EXTRA'][sync]}"


def _postgres_version(url: str) -> str:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SHOW server_version")).scalar())
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=500, help="writes per case and round")
    parser.add_argument("--rounds", type=int, default=5, help="latency rounds")
    parser.add_argument("--rows", type=int, default=20_000, help="changes per batched drain")
    parser.add_argument("--slow-rows", type=int, default=5_000, help="per row-by-row drain")
    parser.add_argument("--flush-rounds", type=int, default=3, help="drains per flusher")
    parser.add_argument("--no-pin", action="store_true", help="leave the CPUs unpinned")
    args = parser.parse_args()
    postgres_url = os.environ.get(POSTGRES_ENV) or None
    with Standalone() as server:
        pin = not args.no_pin and len(os.sched_getaffinity(0)) >= 2
        if pin:
            _pin(server.pids)
        pinned = "pinned to one CPU" if pin else "unpinned"
        print(f"server: {server.binary.label} on port {server.port}, {pinned}")
        print(f"SQLite {sqlite3.sqlite_version} in {tempfile.gettempdir()}, {_sqlite_sync()}")
        if postgres_url:
            print(f"PostgreSQL {_postgres_version(postgres_url)} ({POSTGRES_ENV})")
        print(latency_table(run_latency(server.url, args.n, args.rounds, postgres_url)))
        print()
        flush = run_flush(server.url, args.rows, args.slow_rows, args.flush_rounds, postgres_url)
        print(flush_table(flush))


if __name__ == "__main__":
    main()
