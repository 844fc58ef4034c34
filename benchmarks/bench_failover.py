"""The longest operation while a cluster primary hangs (SIGSTOP), against the moment the
cluster promoted a replica: issue 12's bound is ``longest <= promotion + 0.5 s``.

    .venv/bin/python -m benchmarks.bench_failover [--rounds 2] [--node-timeout-ms 2000]

Each round starts a real 3-primary + 3-replica cluster, runs a SET/GET load on keys of one
primary (sync: 4 threads on one SmartClient; async: 20 tasks on one AsyncSmartClient),
SIGSTOPs that primary, watches ``CLUSTER NODES`` on another node every 10 ms for the
moment a replica owns its slots (the promotion), keeps the load going 2 s more, and
reports the longest single operation and how far it ran past the promotion. Errors are
counted (there should be none: SET and GET are safe to retry).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
from typing import Any

from smartcache import AsyncSmartClient, SmartClient
from smartcache.core.slots import key_slot
from smartcache.testing import Cluster


def _victim_keys(cluster: Cluster) -> tuple[Any, list[str]]:
    victim = cluster.primaries()[0]
    slots = set(cluster.slots_of(victim))
    keys = [k for k in (f"hang:{i}" for i in range(50_000)) if key_slot(k) in slots][:200]
    return victim, keys


def _promotion_moment(cluster: Cluster, victim: Any, deadline: float) -> float:
    """Poll another node's view until a replica of ``victim`` serves its slots."""
    witness = next(p for p in cluster.primaries() if p is not victim)
    old_id = cluster.node_id(victim)
    candidates = {v.address for v in cluster.nodes_view(witness) if v.primary_id == old_id}
    while time.monotonic() < deadline:
        for v in cluster.nodes_view(witness):
            if v.address in candidates and v.is_primary and v.slots:
                return time.monotonic()
        time.sleep(0.01)
    raise TimeoutError("no replica was promoted")


class _Load:
    def __init__(self) -> None:
        self.spans: list[tuple[float, float]] = []  # (start, end) of every operation
        self.errors: list[str] = []

    def record(self, started: float, ended: float) -> None:
        self.spans.append((started, ended))  # list.append is atomic under the GIL

    def longest(self) -> float:
        return max(end - start for start, end in self.spans)

    def last_end_of_ops_started_before(self, moment: float) -> float:
        return max(end for start, end in self.spans if start <= moment)


def _sync_round(cluster: Cluster, keys: list[str], victim: Any, load: _Load) -> tuple[float, float]:
    client = SmartClient(startup_nodes=cluster.startup_nodes, socket_timeout=1.0)
    stop = threading.Event()

    def worker(offset: int) -> None:
        i = offset
        while not stop.is_set():
            key = keys[i % len(keys)]
            i += 1
            t = time.monotonic()
            try:
                client.set(key, i)
                client.get(key)
            except Exception as exc:  # counted, the load goes on
                load.errors.append(f"{type(exc).__name__}: {exc}")
            load.record(t, time.monotonic())

    threads = [threading.Thread(target=worker, args=(n * 50,)) for n in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.5)  # the load runs against the victim before the hang
    paused_at = time.monotonic()
    cluster.pause(victim)
    promoted_at = _promotion_moment(cluster, victim, paused_at + 30)
    time.sleep(2.0)  # load on the promoted primary
    stop.set()
    for t in threads:
        t.join(30)
    client.close()
    return paused_at, promoted_at


def _async_round(
    cluster: Cluster, keys: list[str], victim: Any, load: _Load
) -> tuple[float, float]:
    moments: dict[str, float] = {}

    async def main() -> None:
        client = AsyncSmartClient(startup_nodes=cluster.startup_nodes, socket_timeout=1.0)
        await client.initialize()
        stop = asyncio.Event()

        async def worker(offset: int) -> None:
            i = offset
            while not stop.is_set():
                key = keys[i % len(keys)]
                i += 1
                t = time.monotonic()
                try:
                    await client.set(key, i)
                    await client.get(key)
                except Exception as exc:  # counted, the load goes on
                    load.errors.append(f"{type(exc).__name__}: {exc}")
                load.record(t, time.monotonic())

        tasks = [asyncio.create_task(worker(n * 10)) for n in range(20)]
        await asyncio.sleep(0.5)
        moments["paused"] = time.monotonic()
        cluster.pause(victim)
        moments["promoted"] = await asyncio.to_thread(
            _promotion_moment, cluster, victim, moments["paused"] + 30
        )
        await asyncio.sleep(2.0)
        stop.set()
        await asyncio.gather(*tasks)
        await client.aclose()

    asyncio.run(main())
    return moments["paused"], moments["promoted"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--node-timeout-ms", type=int, default=2000)
    args = parser.parse_args()
    print(f"cluster-node-timeout {args.node_timeout_ms} ms, socket_timeout 1.0 s")
    print(
        f"{'client':<8} {'promotion s':>11} {'longest op s':>12} {'over promotion s':>16} "
        f"{'ops':>7} {'errors':>6}"
    )
    overs: dict[str, list[float]] = {"sync": [], "async": []}
    for _ in range(args.rounds):
        for world, run in (("sync", _sync_round), ("async", _async_round)):
            with Cluster(primaries=3, replicas=1, node_timeout_ms=args.node_timeout_ms) as cl:
                victim, keys = _victim_keys(cl)
                load = _Load()
                paused_at, promoted_at = run(cl, keys, victim, load)
                promotion = promoted_at - paused_at
                # how long past the promotion an operation begun before it was still running
                over = load.last_end_of_ops_started_before(promoted_at) - promoted_at
                overs[world].append(over)
                print(
                    f"{world:<8} {promotion:11.2f} {load.longest():12.2f} {over:16.2f} "
                    f"{len(load.spans):7d} {len(load.errors):6d}"
                )
                for e in load.errors[:3]:
                    print(f"    {e}")
    for world, values in overs.items():
        print(
            f"{world}: the longest operation ended at most {max(values):.2f} s after the "
            f"promotion (median {statistics.median(values):.2f} s); goal <= 0.5 s"
        )


if __name__ == "__main__":
    main()
