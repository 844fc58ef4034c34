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
- a Zipf(1.1) workload over 10,000 keys, 95% GET / 5% SET and 99% / 1%, ops/s with and
  without the near cache on the same client class, and the bound its writes set: every
  write and every read after an invalidation is a round trip, so the ratio cannot exceed
  1 / (the share of operations that reach the server);
- the same coherence rounds (a SmartClient writer without the near cache) on a 3-primary
  cluster while 40 slots migrate back and forth, and across a Sentinel failover
  (``--skip-topologies`` leaves these two out).

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

from smartcache import AsyncSmartClient, SmartClient, key_slot
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

    async def run_coredis() -> float | None:
        try:
            import coredis
            from coredis.cache import LRUCache
        except ImportError:
            print("  coredis: not installed (make bench-deps installs the competitors)")
            return None
        cache = LRUCache(max_keys=10_000)
        host, port = url.rsplit("//", 1)[1].rsplit(":", 1)
        client = coredis.Redis(host=host, port=int(port), cache=cache)
        async with client:
            await client.get("bench:hit")
            t = time.perf_counter()
            for _ in range(n):
                await client.get("bench:hit")
            took = (time.perf_counter() - t) / n * 1e6
        print(f"  coredis {coredis.__version__} cache after the loop: {cache.stats}")
        return took

    coredis_us = asyncio.run(run_coredis())
    if coredis_us is not None:
        out["coredis GET (client-side cache hit)"] = coredis_us
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


def rounds_of_reads(
    writer: Any, reader: Any, keys: list[str], reads: int, busy: Any, switched: Any
) -> tuple[int, int, int, int, int]:
    """Rounds of: SET a random half of the keys (acknowledged), wait 1 ms (sleeping), GET
    every key through the near cache (the unwritten half are hits that must still be
    right). Runs until ``reads`` reads were checked and ``busy()`` is false. Reads are
    split by ``switched()`` (a failover followed or not). Returns (stale, reads, stale
    before the switch, reads before it, rounds or reads lost to errors)."""
    pick = random.Random(3).random
    want = dict.fromkeys(keys, b"0")
    for k in keys:
        writer.set(k, 0)
    stale = done = stale_before = before = errors = 0
    n = 0
    while done < reads or busy():
        n += 1
        written = [k for k in keys if pick() < 0.5]
        try:
            for k in written:
                writer.set(k, n)
                want[k] = str(n).encode()
        except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
            errors += 1
            for k in written:  # the value of a write that failed is unknown: read it back
                want[k] = writer.get(k)
            continue
        time.sleep(0.001)
        for k in keys:
            after = switched()
            try:
                got = reader.get(k)
            except (redis.ConnectionError, redis.TimeoutError):
                errors += 1
                continue
            if after:
                done += 1
                stale += got != want[k]
            else:
                before += 1
                stale_before += got != want[k]
    return stale, done, stale_before, before, errors


def cluster_resharding(reads: int) -> str:
    """A 3-primary cluster, 400 slots moved back and forth between two primaries (MIGRATE,
    live) while the rounds run; 40 of the 120 keys live in those slots."""
    import threading

    from smartcache.testing import Cluster

    with Cluster(primaries=3, replicas=0) as cluster:
        reader = SmartClient(startup_nodes=cluster.startup_nodes, near_cache=NearCache())
        writer = SmartClient(startup_nodes=cluster.startup_nodes)
        a, b = cluster.primaries()[:2]
        moving = cluster.slots_of(a)[:400]
        inside = [k for k in (f"bench:rs:{i}" for i in range(100_000)) if key_slot(k) in moving]
        keys = inside[:40] + [f"bench:rs:other:{i}" for i in range(80)]
        stop = threading.Event()
        moves = [0]

        def reshard() -> None:
            src, dst = a, b
            while not stop.is_set():
                cluster.migrate_slots(src, dst, slots=moving, batch=10)
                moves[0] += 1
                src, dst = dst, src

        mover = threading.Thread(target=reshard, daemon=True)
        mover.start()
        t = time.perf_counter()
        stale, done, _, _, errors = rounds_of_reads(
            writer, reader, keys, reads, busy=lambda: moves[0] < 2, switched=lambda: True
        )
        took = time.perf_counter() - t
        stop.set()
        mover.join(60)
        stats = reader.near_cache.stats()
        reader.close()
        writer.close()
    return (
        f"{stale} stale of {done} reads started >= 1 ms after the SETs, during {moves[0]} "
        f"live migrations of 400 slots ({took:.0f} s; {errors} errors; served by the near "
        f"cache: {stats.hits} hits, {stats.misses} tracked misses)"
    )


def sentinel_failover(reads: int) -> str:
    """A Sentinel group (1 primary, 1 replica, 3 sentinels); SENTINEL FAILOVER once a third
    of the reads are done. Reads are counted after the reader's client followed the switch;
    those before it are reported apart (the old primary still answers then)."""
    import threading

    from smartcache.testing import SentinelGroup

    with SentinelGroup(replicas=1, sentinels=3) as group:
        opts = {"sentinels": group.sentinel_addresses, "service_name": group.service_name}
        reader = SmartClient(**opts, near_cache=NearCache(health_check_interval=0.5))
        writer = SmartClient(**opts)
        old = group.primary().address
        keys = [f"bench:fo:{i}" for i in range(20)]
        done = threading.Event()
        progress = [0]

        def fail_over() -> None:
            try:
                group.failover()
            finally:
                done.set()

        def switched() -> bool:
            progress[0] += 1
            if progress[0] == reads // 3:
                threading.Thread(target=fail_over, daemon=True).start()
            return reader._sentinel.primary_address not in (None, old)

        t = time.perf_counter()
        stale, after, stale_before, before, errors = rounds_of_reads(
            writer, reader, keys, reads, busy=lambda: not done.is_set(), switched=switched
        )
        took = time.perf_counter() - t
        stats = reader.near_cache.stats()
        reader.close()
        writer.close()
    return (
        f"{stale} stale of {after} reads started >= 1 ms after the SETs once the client "
        f"followed the failover ({stats.hits} near-cache hits); before it, {stale_before} "
        f"stale of {before} ({took:.0f} s; {errors} reads or rounds lost to errors)"
    )


def zipf_keys(n_keys: int, count: int, s: float = 1.1) -> list[int]:
    weights = [1.0 / (r**s) for r in range(1, n_keys + 1)]
    return random.Random(7).choices(range(n_keys), weights=weights, k=count)


def workload(url: str, ops: int, write_share: float = 0.05) -> dict[str, float]:
    """The same key sequence on each client: a warm-up of ``ops // 4`` operations (not
    timed: a service's cache is warm after its first seconds), then ``ops`` timed."""
    keys = zipf_keys(10_000, ops + ops // 4)
    out = {}
    for label, kwargs in (
        ("without near cache", {}),
        ("with near cache", {"near_cache": NearCache()}),
    ):
        client = SmartClient.from_url(url, **kwargs)
        for k in range(10_000):
            client.set(f"bench:z:{k}", k)
        writes = random.Random(8).random
        for i, k in enumerate(keys):
            if i == ops // 4:
                t = time.perf_counter()
                trips = client.near_cache.stats().misses if client.near_cache else 0
            if writes() < write_share:
                client.set(f"bench:z:{k}", k)
            else:
                client.get(f"bench:z:{k}")
        out[label] = ops / (time.perf_counter() - t)
        if client.near_cache:
            misses = client.near_cache.stats().misses - trips
            out["near-cache misses (timed part)"] = misses
        client.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reads", type=int, default=100_000)
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--n", type=int, default=50_000)
    parser.add_argument(
        "--skip-topologies",
        action="store_true",
        help="standalone only (no cluster resharding, no Sentinel failover)",
    )
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
        for share in (0.05, 0.01):
            result = workload(server.url, args.ops, share)
            misses = result.pop("near-cache misses (timed part)")
            reads = f"{100 - share * 100:.0f}% reads"
            for name, rate in result.items():
                print(f"  Zipf {reads} {name:20s} {rate:10.0f} ops/s")
            ratio = result["with near cache"] / result["without near cache"]
            bound = 1 / (share + misses / args.ops)
            print(
                f"  ratio: {ratio:.1f}x; near-cache misses {misses:.0f} of {args.ops} "
                f"operations, so {share + misses / args.ops:.1%} of them reach the server, "
                f"which bounds the ratio at {bound:.1f}x even if hits cost nothing"
            )
    if not args.skip_topologies:
        print(f"coherence on a cluster during live resharding: {cluster_resharding(args.reads)}")
        print(f"coherence across a Sentinel failover: {sentinel_failover(args.reads)}")


if __name__ == "__main__":
    main()
