"""AsyncSmartClient against redis.asyncio's RedisCluster, coredis and valkey-glide.

    make bench-deps && .venv/bin/python -m benchmarks.bench_async [--n 5000] [--rounds 5]

One run, the same 3-primary x 1-replica cluster for every client. Cases:
- sequential awaits of GET;
- 100 concurrent GETs via ``asyncio.gather`` (AsyncSmartClient auto-pipelines them);
- MGET of 100 keys spread over slots (``mget_nonatomic`` for redis-py and smartcache, which
  refuse a plain cross-slot MGET; coredis and glide split it themselves).

Clients are timed round after round, interleaved; a ratio is the median of per-round
ratios, throughput the best round. coredis and valkey-glide come from the ``bench`` extra;
a client that is not installed is skipped.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster

from smartcache.asyncio.client import AsyncSmartClient
from smartcache.testing import Cluster

Op = Callable[[], Awaitable[Any]]
KEYS = [f"bench:{i}" for i in range(100)]


async def _time(op: Op, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        await op()
    return time.perf_counter() - t


async def _clients(cluster: Cluster) -> dict[str, Any]:
    host, port = cluster.startup_nodes[0]
    clients: dict[str, Any] = {
        "smartcache": await AsyncSmartClient(startup_nodes=cluster.startup_nodes).initialize(),
        "redis.asyncio": RedisCluster(startup_nodes=[ClusterNode(host, port)]),
    }
    try:
        import coredis

        coredis_client = coredis.RedisCluster(host=host, port=port)
        await coredis_client.__aenter__()  # coredis 5+: the client is an async context
        clients["coredis"] = coredis_client
    except Exception as exc:
        print(f"coredis skipped: {exc!r}")
    try:
        from glide import (
            GlideClusterClient,
            GlideClusterClientConfiguration,
            NodeAddress,
        )

        config = GlideClusterClientConfiguration([NodeAddress(host, port)])
        clients["valkey-glide"] = await GlideClusterClient.create(config)
    except Exception as exc:
        print(f"valkey-glide skipped: {exc!r}")
    return clients


def _ops(name: str, client: Any) -> dict[str, Op]:
    def gather_get() -> Awaitable[Any]:
        return asyncio.gather(*[client.get("bench:key") for _ in range(100)])

    if name in ("redis.asyncio", "smartcache"):
        mget: Op = lambda: client.mget_nonatomic(KEYS)  # noqa: E731
    else:
        mget = lambda: client.mget(KEYS)  # noqa: E731
    return {
        "sequential GET": lambda: client.get("bench:key"),
        "100 concurrent GETs": gather_get,
        "MGET 100 keys": mget,
    }


async def run(n: int, rounds: int) -> list[tuple[str, str, float, float]]:
    """Rows: (case, client, ops/s, ratio smartcache/that client)."""
    with Cluster(primaries=3, replicas=1) as cluster:
        clients = await _clients(cluster)
        await clients["smartcache"].mset_nonatomic(dict.fromkeys([*KEYS, "bench:key"], "x" * 64))
        counts = {
            "sequential GET": n,
            "100 concurrent GETs": max(20, n // 50),
            "MGET 100 keys": max(20, n // 50),
        }
        rows: list[tuple[str, str, float, float]] = []
        for case, count in counts.items():
            ops = {name: _ops(name, c)[case] for name, c in clients.items()}
            for op in ops.values():
                await _time(op, max(1, count // 10))  # warm up
            times: dict[str, list[float]] = {name: [] for name in ops}
            for _ in range(rounds):
                for name, op in ops.items():
                    times[name].append(await _time(op, count))
            ours = times["smartcache"]
            for name, measured in times.items():
                ratio = statistics.median(t / o for t, o in zip(measured, ours, strict=True))
                rows.append((case, name, count / min(measured), ratio))
        for name, client in clients.items():
            if name == "coredis":
                await client.__aexit__(None, None, None)
            elif name == "smartcache":
                await client.aclose()
            else:
                await (client.aclose() if hasattr(client, "aclose") else client.close())
    return rows


def table(rows: list[tuple[str, str, float, float]]) -> str:
    """A Markdown table."""
    lines = ["| case | client | ops/s | smartcache speed-up |", "|---|---|---:|---:|"]
    lines += [f"| {c} | {n} | {r:,.0f} | {x:.2f}x |" for c, n, r, x in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(table(asyncio.run(run(args.n, args.rounds))))


if __name__ == "__main__":
    main()
