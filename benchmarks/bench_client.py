"""SmartClient against redis-py on the same servers, in one run, as ratios.

    .venv/bin/python -m benchmarks.bench_client [--n 20000]

Cases: sequential GET and SET (SmartClient on a cluster vs RedisCluster, and vs redis.Redis
on a single standalone node as the ceiling), a 100-command pipeline, and an MGET of 100
keys spread over slots (vs RedisCluster.mget_nonatomic).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import redis
from redis.cluster import ClusterNode, RedisCluster

from smartcache.client import SmartClient
from smartcache.testing import Cluster, Standalone


def _rate(fn: Callable[[], object], n: int, rounds: int = 5) -> float:
    best = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        for _ in range(n):
            fn()
        best = max(best, n / (time.perf_counter() - t))
    return best


def run(n: int) -> list[tuple[str, str, float, float]]:
    rows: list[tuple[str, str, float, float]] = []
    with Standalone() as single, Cluster(primaries=3, replicas=1) as cluster:
        r_single = redis.Redis(port=single.port)
        s_single = SmartClient(port=single.port)
        nodes = [ClusterNode(h, p) for h, p in cluster.startup_nodes]
        rc = RedisCluster(startup_nodes=nodes)
        sc = SmartClient(startup_nodes=cluster.startup_nodes)
        for c in (r_single, rc):
            c.set("bench:key", "x" * 64)
        keys = [f"bench:{i}" for i in range(100)]
        rc.mset_nonatomic(dict.fromkeys(keys, "v"))

        def ratio_rows(
            case: str,
            ours: Callable[[], object],
            pairs: list[tuple[str, Callable[[], object]]],
            count: int,
        ) -> None:
            ours_rate = _rate(ours, count)
            for label, theirs in pairs:
                rows.append((case, label, ours_rate, _rate(theirs, count)))

        ratio_rows(
            "GET sequential",
            lambda: sc.get("bench:key"),
            [
                ("redis.Redis (1 node)", lambda: r_single.get("bench:key")),
                ("RedisCluster", lambda: rc.get("bench:key")),
            ],
            n,
        )
        ratio_rows(
            "SET sequential",
            lambda: sc.set("bench:key", "y"),
            [
                ("redis.Redis (1 node)", lambda: r_single.set("bench:key", "y")),
                ("RedisCluster", lambda: rc.set("bench:key", "y")),
            ],
            n,
        )
        ratio_rows(
            "GET standalone",
            lambda: s_single.get("bench:key"),
            [("redis.Redis (1 node)", lambda: r_single.get("bench:key"))],
            n,
        )
        ratio_rows(
            "MGET 100 keys",
            lambda: sc.mget(keys),
            [("RedisCluster.mget_nonatomic", lambda: rc.mget_nonatomic(keys))],
            max(50, n // 100),
        )
        for c in (rc, sc, r_single, s_single):
            c.close()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=20000)
    args = parser.parse_args()
    rows = run(args.n)
    print(f"{'case':<18} {'vs':<30} {'smartcache ops/s':>16} {'other ops/s':>12} {'ratio':>7}")
    for case, label, ours, theirs in rows:
        print(f"{case:<18} {label:<30} {ours:>16,.0f} {theirs:>12,.0f} {ours / theirs:>6.2f}x")


if __name__ == "__main__":
    main()
