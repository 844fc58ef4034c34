"""``make demo``: the product tour, on local servers it starts itself.

Act 1: a real 3x1 cluster, 10,000 keys written and read back through SmartClient
(pipelined, routed per node), keys per node, the slots of hash-tagged keys, and a
cross-slot ``mget_nonatomic`` that SmartClient splits by slot and merges back in order
(a plain MGET across slots is refused, as redis-py's RedisCluster refuses it).

Act 2: a Sentinel group (1 primary, 2 replicas, 3 sentinels). A writer keeps writing
through SmartClient (with ``wait_replicas=1``) while the primary is SIGKILLed; the demo
prints how long writes stalled, how many errors the application saw, and checks that every
acknowledged value is still there on the new primary.

Act 3: write-behind. An application writes through ``WriteBehind`` (the cache answers at
once; changes queue in Redis Streams); a ``smartcache flush-worker`` process moves them into
a SQLite database and is SIGKILLed in the middle of a batch; a second worker claims what the
first left pending and finishes; the demo checks that the database equals the cache.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from smartcache.core.slots import key_slot
from smartcache.sync.client import SmartClient
from smartcache.testing import Cluster, SentinelGroup, Standalone

__all__ = ["run_demo"]

KEYS = 10_000


def run_demo() -> int:
    """Run the tour; return the process exit code."""
    t0 = time.perf_counter()
    print("== smartcache demo ==")
    with Cluster(primaries=3, replicas=1) as cluster:
        print(f"cluster up in {time.perf_counter() - t0:.1f}s: {cluster!r}")
        # The same line works for a standalone server: cluster mode is detected.
        client = SmartClient.from_url(cluster.url, decode_responses=True)
        try:
            _act_cluster(cluster, client)
        finally:
            client.close()
    print(f"cluster stopped after {time.perf_counter() - t0:.1f}s")
    _act_failover()
    _act_write_behind()
    print(f"demo took {time.perf_counter() - t0:.1f}s")
    return 0


def _act_failover() -> None:
    print("\n== act 2: Sentinel failover under a write load ==")
    with SentinelGroup(replicas=2, sentinels=3) as group:
        print(f"sentinel group up: {group.url}")
        client = SmartClient.from_url(group.url, wait_replicas=1, wait_timeout_ms=500)
        stop = threading.Event()
        acked: list[tuple[int, float]] = []
        errors: list[BaseException] = []

        def writer() -> None:
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    client.set(f"demo:fo:{i}", i)
                    acked.append((i, time.monotonic()))
                except Exception as exc:
                    errors.append(exc)

        thread = threading.Thread(target=writer)
        thread.start()
        while len(acked) < 200:
            time.sleep(0.01)  # let the writer get going before the kill
        old = group.primary()
        killed_at = time.monotonic()
        group.kill(old)
        print(f"SIGKILL primary {old.address} after {len(acked)} writes")
        new = group.wait_for_failover(old)
        promoted_after = time.monotonic() - killed_at
        count = len(acked)
        while len(acked) < count + 200:
            time.sleep(0.01)  # writes resume on the new primary
        stop.set()
        thread.join()
        times = [t for _, t in acked]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        stall = max(gaps) if gaps else 0.0
        print(f"sentinels promoted {new.address} {promoted_after:.1f}s after the kill")
        print(f"longest write stall: {stall:.2f}s; errors seen by the application: {len(errors)}")
        values = client.mget([f"demo:fo:{i}" for i, _ in acked])
        lost = sum(1 for (i, _), v in zip(acked, values, strict=True) if v != str(i).encode())
        print(f"{len(acked):,} acknowledged writes, {lost} missing on the new primary")
        client.close()
        if errors or lost:
            raise SystemExit(f"demo failed: {len(errors)} errors, {lost} lost writes")


def _act_cluster(cluster: Cluster, client: SmartClient) -> None:
    t = time.perf_counter()
    pipe = client.pipeline(transaction=False)
    for i in range(KEYS):
        pipe.set(f"demo:key:{i}", str(i))
    pipe.execute()
    pipe = client.pipeline(transaction=False)
    for i in range(KEYS):
        pipe.get(f"demo:key:{i}")
    values = pipe.execute()
    wrong = sum(1 for i, v in enumerate(values) if v != str(i))
    print(f"wrote and read back {KEYS:,} keys in {time.perf_counter() - t:.2f}s, {wrong} wrong")
    if wrong:
        raise SystemExit(f"demo failed: {wrong} values read back wrong")

    per_node: Counter[str] = Counter()
    for primary in cluster.primaries():
        with primary.client() as c:
            per_node[primary.address] = int(c.dbsize())
    print("keys per primary:")
    for address, count in sorted(per_node.items()):
        print(
            f"  {address}: {count:,} keys, {len(cluster.slots_of(cluster.node(address))):,} slots"
        )
    if sum(per_node.values()) != KEYS:
        raise SystemExit(f"demo failed: primaries hold {sum(per_node.values())} keys, not {KEYS}")

    print("hash tags keep related keys on one slot:")
    for key in ("user:{1000}:profile", "user:{1000}:orders", "user:1000:profile"):
        with cluster.processes[0].client() as node:
            server_slot = int(node.execute_command("CLUSTER", "KEYSLOT", key))
        print(
            f"  {key:<22} slot {key_slot(key):>5} (server agrees: {server_slot == key_slot(key)})"
        )
    try:
        client.mset({"user:{1000}:a": "1", "user:{1000}:b": "2"})
    except redis.RedisError as exc:  # pragma: no cover - a same-slot MSET must work
        raise SystemExit(f"demo failed: same-slot MSET refused: {exc}") from exc
    sample = [f"demo:key:{i}" for i in range(0, KEYS, 1000)]
    slots = {key_slot(k) for k in sample}
    values = client.mget_nonatomic(sample)
    print(
        f"mget_nonatomic of {len(sample)} keys over {len(slots)} slots, split and merged: {values}"
    )
    if values != [str(i) for i in range(0, KEYS, 1000)]:
        raise SystemExit("demo failed: cross-slot MGET came back wrong")


class SlowDemoStore:
    """The demo's first flusher's store: SQLite, slowed down so it can be killed mid-batch.

    Each batch opens a transaction, writes its rows one by one with a pause, announces
    ``BATCH <n>`` on stdout, and commits at the end (a SIGKILL in between commits nothing).
    """

    def __init__(self) -> None:
        from smartcache.cache import SQLiteStore  # noqa: PLC0415

        self._store = SQLiteStore(os.environ["SMARTCACHE_DEMO_DB"])

    def write_many(self, items: Sequence[Any]) -> None:
        print(f"BATCH {len(items)}", flush=True)
        time.sleep(0.3)  # a slow database: the demo kills the worker now
        self._store.write_many(items)

    def delete_many(self, items: Sequence[Any]) -> None:
        self._store.delete_many(items)

    def ping(self) -> bool:
        return self._store.ping()

    def close(self) -> None:
        self._store.close()


def _worker(url: str, store: str, env: dict[str, str], *extra: str) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "smartcache", "flush-worker", url, "--store", store, *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)


def _act_write_behind() -> None:
    from smartcache.cache import SQLiteStore, WriteBehind  # noqa: PLC0415

    print("\n== act 3: write-behind, a flusher killed mid-batch ==")
    with Standalone() as server, tempfile.TemporaryDirectory() as tmp:
        db = str(Path(tmp) / "app.db")
        SQLiteStore(db).close()
        env = {**os.environ, "SMARTCACHE_DEMO_DB": db}
        client = SmartClient.from_url(server.url)
        wb = WriteBehind(client, name="demo", flusher=False, ttl=3600)
        keys, rounds = 1_000, 5
        t = time.perf_counter()
        for r in range(rounds):
            for i in range(keys):
                wb.set(f"user:{i}", {"id": i, "version": r})
        per_write = (time.perf_counter() - t) / (keys * rounds) * 1e6
        print(f"{keys * rounds:,} writes through WriteBehind, {per_write:.0f} us each")
        print(f"queued in Redis: {wb.stats()['backlog']:,} changes; the database has none yet")

        first = _worker(server.url, "smartcache._demo:SlowDemoStore", env, "--name", "demo")
        assert first.stdout is not None
        line = first.stdout.readline()  # the banner
        while not line.startswith("BATCH"):
            line = first.stdout.readline()
            if not line:
                raise SystemExit("demo failed: the first flush-worker exited early")
        os.kill(first.pid, signal.SIGKILL)
        first.wait()
        first.stdout.close()
        print(f"SIGKILL flush-worker {first.pid} in the middle of a batch of {line.split()[1]}")
        print(f"still queued: {wb.stats()['backlog']:,} changes (nothing acknowledged early)")

        t = time.perf_counter()
        second = _worker(server.url, f"sqlite://{db}", env, "--name", "demo", "--claim-idle", "1")
        try:
            wb.drain(timeout=60)
        finally:
            second.send_signal(signal.SIGTERM)
            second.wait(10)
            if second.stdout is not None:
                second.stdout.close()
        print(
            f"a second flush-worker claimed the rest and drained the queue in "
            f"{time.perf_counter() - t:.1f}s"
        )
        store = SQLiteStore(db)
        rows = store.items()
        cached = {f"user:{i}": wb.get(f"user:{i}") for i in range(keys)}
        store.close()
        client.close()
        expected = {f"user:{i}": {"id": i, "version": rounds - 1} for i in range(keys)}
        same = rows == cached == expected
        print(f"database rows: {len(rows):,}; database equals cache: {same}")
        if not same:
            raise SystemExit("demo failed: the database does not equal the cache")
