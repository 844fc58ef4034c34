"""SmartClient against redis-py on the same servers, in one run, as ratios.

    .venv/bin/python -m benchmarks.bench_client [--n 20000] [--rounds 7]

Cases (a real 3-primary cluster and a standalone server, started here):
- sequential GET / SET: SmartClient on the cluster vs redis-py's RedisCluster, and vs
  ``redis.Redis`` talking to one standalone node (the ceiling: no routing at all);
- the same on a standalone server: SmartClient vs ``redis.Redis``;
- a 100-command pipeline: SmartClient's cluster pipeline vs RedisCluster's pipeline;
- MGET of 100 keys spread over slots: ``mget_nonatomic`` of both clients (a plain MGET
  across slots is refused by both).

Each round times both clients back to back (interleaved, so background noise hits both);
the reported ratio is the median of the per-round ratios, throughput the best round.
On a machine with 2+ CPUs the servers and this process are pinned to one and the same
CPU, as in ``wire_bench.py``: on small VMs a cross-CPU wake-up costs more than a round trip
and varies wildly from run to run, which would drown the client-side difference
(``--no-pin`` to skip). Server time is then part of every column, which lowers the
ratios against ``redis.Redis`` compared with an unpinned run on an idle machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import redis
from redis.cluster import ClusterNode, RedisCluster

from smartcache.sync.client import SmartClient
from smartcache.testing import Cluster, Standalone

Op = Callable[[], object]


def _time(fn: Op, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - t


def compare(ours: Op, theirs: Op, n: int, rounds: int) -> tuple[float, float, float]:
    """Return (our ops/s, their ops/s, median ratio ours/theirs)."""
    for fn in (ours, theirs):
        _time(fn, max(1, n // 10))  # warm up connections and caches
    ratios, best_ours, best_theirs = [], 0.0, 0.0
    for _ in range(rounds):
        t_ours = _time(ours, n)
        t_theirs = _time(theirs, n)
        ratios.append(t_theirs / t_ours)
        best_ours = max(best_ours, n / t_ours)
        best_theirs = max(best_theirs, n / t_theirs)
    return best_ours, best_theirs, statistics.median(ratios)


def _pin(server_pids: list[int]) -> None:
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return
    for pid in server_pids:
        os.sched_setaffinity(pid, {cpus[0]})
    os.sched_setaffinity(0, {cpus[0]})


def run(n: int, rounds: int, pin: bool = True) -> list[tuple[str, str, float, float, float]]:
    """Return rows (case, compared with, our ops/s, their ops/s, ratio)."""
    rows: list[tuple[str, str, float, float, float]] = []
    with Standalone() as single, Cluster(primaries=3, replicas=0) as cluster:
        if pin:
            _pin(single.pids + cluster.pids)
        r_single = redis.Redis(port=single.port)
        s_single = SmartClient(port=single.port)
        nodes = [ClusterNode(h, p) for h, p in cluster.startup_nodes]
        rc = RedisCluster(startup_nodes=nodes)
        sc = SmartClient(startup_nodes=cluster.startup_nodes)
        value = "x" * 64
        for c in (r_single, rc):
            c.set("bench:key", value)
        keys = [f"bench:{i}" for i in range(100)]
        rc.mset_nonatomic(dict.fromkeys(keys, value))

        def add(case: str, label: str, ours: Op, theirs: Op, count: int) -> None:
            rows.append((case, label, *compare(ours, theirs, count, rounds)))

        add(
            "GET, cluster",
            "RedisCluster",
            lambda: sc.get("bench:key"),
            lambda: rc.get("bench:key"),
            n,
        )
        add(
            "GET, cluster",
            "redis.Redis, 1 node",
            lambda: sc.get("bench:key"),
            lambda: r_single.get("bench:key"),
            n,
        )
        add(
            "SET, cluster",
            "RedisCluster",
            lambda: sc.set("bench:key", value),
            lambda: rc.set("bench:key", value),
            n,
        )
        add(
            "SET, cluster",
            "redis.Redis, 1 node",
            lambda: sc.set("bench:key", value),
            lambda: r_single.set("bench:key", value),
            n,
        )
        add(
            "GET, standalone",
            "redis.Redis",
            lambda: s_single.get("bench:key"),
            lambda: r_single.get("bench:key"),
            n,
        )

        def our_pipeline() -> object:
            pipe = sc.pipeline(transaction=False)
            for k in keys:
                pipe.get(k)
            return pipe.execute()

        def their_pipeline() -> object:
            pipe = rc.pipeline()
            for k in keys:
                pipe.get(k)
            return pipe.execute()

        add(
            "pipeline 100 GET",
            "RedisCluster pipeline",
            our_pipeline,
            their_pipeline,
            max(20, n // 100),
        )
        add(
            "MGET 100 keys",
            "RedisCluster.mget_nonatomic",
            lambda: sc.mget_nonatomic(keys),
            lambda: rc.mget_nonatomic(keys),
            max(20, n // 100),
        )
        for c in (rc, sc, r_single, s_single):
            c.close()
    return rows


def table(rows: list[tuple[str, str, float, float, float]]) -> str:
    """A Markdown table of the rows."""
    lines = [
        "| case | compared with | smartcache ops/s | other ops/s | ratio |",
        "|---|---|---:|---:|---:|",
    ]
    lines += [
        f"| {case} | {label} | {ours:,.0f} | {theirs:,.0f} | {ratio:.2f}x |"
        for case, label, ours, theirs, ratio in rows
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    print(table(run(args.n, args.rounds, pin=not args.no_pin)))


if __name__ == "__main__":
    main()
