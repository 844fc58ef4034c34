"""The near cache: hit latency, invalidation cost, coherence, and a read-heavy workload.

    .venv/bin/python -m benchmarks.bench_near [--reads 100000] [--ops 200000]

On one local server started here (the launcher's binary), in one run:

- hit latency of ``GET`` served by the near cache, sync and async, next to a network GET
  by redis-py and by SmartClient without the near cache;
- invalidating one key in a 10,000-entry cache (the store's own cost, and end to end:
  a writer's SET until the reader's next GET returns the new value);
- coherence: a writer (redis-py) SETs, the reader waits 1 ms (sleeping, then spinning on
  the CPU) and reads 10 times; ``--reads`` reads in all, stale ones counted; and the stale
  window below 1 ms (reads started right after the SET returned);
- a Zipf(1.1) workload over 10,000 keys, 95% GET / 5% SET, ops/s with and without the near
  cache on the same client class.

redis-py's own client-side cache needs Redis >= 7.4 and refuses Valkey, so it cannot run
on the servers of this machine; it is reported as such, not faked.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from typing import Any

import redis

from smartcache import AsyncSmartClient, SmartClient
from smartcache.core.nearcache import NearCache, NearStore
from smartcache.testing import Standalone


def per_call_us(fn: Any, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t) / n * 1e6


def hit_latency(url: str, n: int) -> dict[str, float]:
    out: dict[str, float] = {}
    plain = redis.Redis.from_url(url)
    plain.set("bench:hit", "x" * 100)
    out["redis-py GET (network)"] = per_call_us(lambda: plain.get("bench:hit"), n)
    smart = SmartClient.from_url(url)
    out["SmartClient GET (network)"] = per_call_us(lambda: smart.get("bench:hit"), n)
    near = SmartClient.from_url(url, near_cache=NearCache())
    near.get("bench:hit")
    out["SmartClient GET (near hit)"] = per_call_us(lambda: near.get("bench:hit"), n)

    async def run() -> float:
        client = AsyncSmartClient.from_url(url, near_cache=NearCache())
        await client.get("bench:hit")
        t = time.perf_counter()
        for _ in range(n):
            await client.get("bench:hit")
        took = (time.perf_counter() - t) / n * 1e6
        await client.aclose()
        return took

    out["AsyncSmartClient GET (near hit)"] = asyncio.run(run())
    try:
        csc = redis.Redis.from_url(url, protocol=3, cache_config=redis.cache.CacheConfig())
        csc.get("bench:hit")
        out["redis-py client-side cache hit"] = per_call_us(lambda: csc.get("bench:hit"), n)
    except Exception as exc:  # reported, not hidden
        print(f"  redis-py client-side cache: not available here ({exc})")
    near.close()
    smart.close()
    return out


def invalidation_cost(url: str) -> tuple[float, float]:
    store = NearStore(NearCache(max_entries=20_000))
    for i in range(10_000):
        k = b"k%d" % i
        store.put(("GET", k), k, store.begin(k), b"v", 1e9, None, -1, None, None)
    keys = [[b"k%d" % i] for i in range(0, 10_000, 10)]
    t = time.perf_counter()
    for k in keys:
        store.invalidate(k)
    store_us = (time.perf_counter() - t) / len(keys) * 1e6
    reader = SmartClient.from_url(url, near_cache=NearCache(max_entries=20_000))
    writer = redis.Redis.from_url(url)
    pipe = writer.pipeline(transaction=False)
    for i in range(10_000):
        pipe.set(f"bench:inv:{i}", i)
    pipe.execute()
    for i in range(10_000):
        reader.get(f"bench:inv:{i}")
    lags = []
    for i in range(0, 10_000, 50):
        k = f"bench:inv:{i}"
        writer.set(k, "new")
        t = time.perf_counter()
        while reader.get(k) != b"new":
            pass
        lags.append(time.perf_counter() - t)
    reader.close()
    lags.sort()
    return store_us, lags[len(lags) // 2] * 1e6


def coherence(url: str, reads: int, spin: bool = False) -> tuple[int, int, int, int]:
    """``spin=True`` waits the millisecond by spinning on the CPU instead of sleeping: on a
    small machine the reader then competes with the server for a core, and the server's
    write of the invalidation can wait for the scheduler (reported, see docs)."""
    reader = SmartClient.from_url(url, near_cache=NearCache())
    writer = redis.Redis.from_url(url)
    stale = done = 0
    early_stale = early = 0
    i = 0
    while done < reads:
        i += 1
        writer.set("bench:coherent", i)
        want = str(i).encode()
        # right after the SET returned: the window below 1 ms
        if reader.get("bench:coherent") != want:
            early_stale += 1
        early += 1
        deadline = time.perf_counter() + 0.001
        if spin:
            while time.perf_counter() < deadline:
                pass
        else:
            time.sleep(0.001)
        for _ in range(10):
            if reader.get("bench:coherent") != want:
                stale += 1
            done += 1
    reader.close()
    return stale, done, early_stale, early


def zipf_keys(n_keys: int, count: int, s: float = 1.1) -> list[int]:
    weights = [1.0 / (r**s) for r in range(1, n_keys + 1)]
    return random.Random(7).choices(range(n_keys), weights=weights, k=count)


def workload(url: str, ops: int) -> dict[str, float]:
    keys = zipf_keys(10_000, ops)
    writes = random.Random(8).random
    out = {}
    for label, kwargs in (
        ("without near cache", {}),
        ("with near cache", {"near_cache": NearCache()}),
    ):
        client = SmartClient.from_url(url, **kwargs)
        for k in range(10_000):
            client.set(f"bench:z:{k}", k)
        t = time.perf_counter()
        for k in keys:
            if writes() < 0.05:
                client.set(f"bench:z:{k}", k)
            else:
                client.get(f"bench:z:{k}")
        out[label] = ops / (time.perf_counter() - t)
        client.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reads", type=int, default=100_000)
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--n", type=int, default=50_000)
    args = parser.parse_args()
    with Standalone() as server:
        print(f"server: {server.url}")
        print("hit latency (us per call):")
        for name, us in hit_latency(server.url, args.n).items():
            print(f"  {name:36s} {us:8.2f}")
        store_us, e2e_us = invalidation_cost(server.url)
        print(f"invalidate one key in a 10,000-entry cache: {store_us:.2f} us (store); "
              f"SET -> fresh GET, median {e2e_us:.0f} us (end to end)")  # fmt: skip
        for spin in (False, True):
            stale, done, early_stale, early = coherence(server.url, args.reads, spin)
            how = "spinning" if spin else "sleeping"
            print(
                f"coherence ({how} 1 ms): {stale} stale of {done} reads started >= 1 ms "
                f"after the SET; {early_stale} stale of {early} reads right after it"
            )
        result = workload(server.url, args.ops)
        for name, rate in result.items():
            print(f"  Zipf 95% reads {name:20s} {rate:10.0f} ops/s")
        ratio = result["with near cache"] / result["without near cache"]
        print(f"  ratio: {ratio:.1f}x")


if __name__ == "__main__":
    main()
