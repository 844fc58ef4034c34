"""Hit latency of ``@cached`` against a hand-written GET + json.loads, and other cache libraries.

    .venv/bin/python -m benchmarks.bench_cache [--n 20000] [--rounds 5] [--no-pin]

Every case reads one warm key (a ~100-byte JSON object) through a decorated function whose
argument is an int, so the per-call cost includes binding the arguments and building the key.
Baselines: redis-py ``Redis.get`` + ``json.loads`` on a fixed key (the goal is @cached on
SmartClient <= 1.1x its time) and the same by hand on SmartClient. cashews, aiocache and
dogpile.cache are measured when installed (they are not smartcache dependencies).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio

from benchmarks.bench_client import _pin, compare
from smartcache.asyncio.client import AsyncSmartClient
from smartcache.cache import cached
from smartcache.client import SmartClient
from smartcache.testing import Standalone

VALUE = {"id": 42, "name": "user-42", "email": "user42@example.com", "tags": ["a", "b", "c"]}
Row = tuple[str, str, float, float, float]


async def _atime(fn: Callable[[], Awaitable[Any]], n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        await fn()
    return time.perf_counter() - t


async def acompare(
    ours: Callable[[], Awaitable[Any]], theirs: Callable[[], Awaitable[Any]], n: int, rounds: int
) -> tuple[float, float, float]:
    """Async :func:`compare`: (our ops/s, their ops/s, median ratio ours/theirs)."""
    for fn in (ours, theirs):
        await _atime(fn, max(1, n // 10))
    ratios, best_o, best_t = [], 0.0, 0.0
    for _ in range(rounds):
        t_o, t_t = await _atime(ours, n), await _atime(theirs, n)
        ratios.append(t_t / t_o)
        best_o, best_t = max(best_o, n / t_o), max(best_t, n / t_t)
    return best_o, best_t, statistics.median(ratios)


def sync_rows(url: str, port: int, n: int, rounds: int) -> list[Row]:
    raw = redis.Redis(port=port)
    smart = SmartClient.from_url(url)
    raw.set("raw:42", json.dumps(VALUE))

    def raw_get() -> Any:
        return json.loads(raw.get("raw:42"))  # type: ignore[arg-type]

    def smart_get() -> Any:
        return json.loads(smart.get("raw:42"))

    @cached(client=smart, namespace="bench", ttl=3600)
    def on_smart(user_id: int) -> Any:
        return VALUE

    @cached(client=raw, namespace="bench-r", ttl=3600)
    def on_redis_py(user_id: int) -> Any:
        return VALUE

    on_smart(42), on_redis_py(42)
    rows: list[Row] = []
    for case, ours, other, theirs in (
        ("@cached(SmartClient) hit", lambda: on_smart(42), "redis-py GET+json", raw_get),
        ("@cached(SmartClient) hit", lambda: on_smart(42), "SmartClient GET+json", smart_get),
        ("@cached(redis.Redis) hit", lambda: on_redis_py(42), "redis-py GET+json", raw_get),
    ):
        rows.append((case, other, *compare(ours, theirs, n, rounds)))
    with contextlib.suppress(ImportError):
        from dogpile.cache import make_region

        region = make_region().configure(
            "dogpile.cache.redis", expiration_time=3600, arguments={"url": url}
        )

        @region.cache_on_arguments()
        def dogpile_user(user_id: int) -> Any:
            return VALUE

        dogpile_user(42)
        ours = lambda: on_smart(42)  # noqa: E731
        rows.append(
            (
                "@cached(SmartClient) hit",
                "dogpile.cache redis",
                *compare(ours, lambda: dogpile_user(42), n, rounds),
            )
        )
    smart.close()
    raw.close()
    return rows


async def async_rows(url: str, n: int, rounds: int) -> list[Row]:
    raw = redis.asyncio.Redis.from_url(url)
    smart = AsyncSmartClient.from_url(url)
    await raw.set("raw:42", json.dumps(VALUE))

    async def raw_get() -> Any:
        return json.loads(await raw.get("raw:42"))  # type: ignore[arg-type]

    @cached(client=smart, namespace="bench-a", ttl=3600)
    async def on_smart(user_id: int) -> Any:
        return VALUE

    async def ours() -> Any:
        return await on_smart(42)

    await ours()
    rows: list[Row] = [
        (
            "@cached(AsyncSmartClient) hit",
            "redis.asyncio GET+json",
            *await acompare(ours, raw_get, n, rounds),
        )
    ]
    with contextlib.suppress(ImportError):
        from cashews import cache as cashews_cache

        cashews_cache.setup(url)

        @cashews_cache(ttl="1h")
        async def cashews_user(user_id: int) -> Any:
            return VALUE

        await cashews_user(42)
        rows.append(
            (
                "@cached(AsyncSmartClient) hit",
                "cashews redis",
                *await acompare(ours, lambda: cashews_user(42), n, rounds),
            )
        )
        await cashews_cache.close()
    with contextlib.suppress(ImportError):
        from aiocache import Cache as AioCache
        from aiocache import cached as aio_cached
        from aiocache.serializers import JsonSerializer

        port = int(url.rsplit(":", 1)[1].split("/", maxsplit=1)[0])

        @aio_cached(
            cache=AioCache.REDIS,
            endpoint="127.0.0.1",
            port=port,
            ttl=3600,
            serializer=JsonSerializer(),
            namespace="aio",
        )
        async def aio_user(user_id: int) -> Any:
            return VALUE

        await aio_user(42)
        rows.append(
            (
                "@cached(AsyncSmartClient) hit",
                "aiocache redis",
                *await acompare(ours, lambda: aio_user(42), n, rounds),
            )
        )
    await smart.aclose()
    await raw.aclose()
    return rows


def table(rows: list[Row]) -> str:
    """A markdown table; ratio > 1 means smartcache is faster."""
    lines = [
        "| case | compared with | smartcache ops/s | other ops/s | speed ratio | time ratio |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for case, other, ours, theirs, ratio in rows:
        lines.append(
            f"| {case} | {other} | {ours:,.0f} | {theirs:,.0f} | {ratio:.2f}x | {1 / ratio:.2f}x |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-pin", action="store_true")
    args = parser.parse_args()
    with Standalone() as server:
        if not args.no_pin:
            _pin(server.pids)
        rows = sync_rows(server.url, server.port, args.n, args.rounds)
        rows += asyncio.run(async_rows(server.url, args.n // 2, args.rounds))
    print(table(rows))


if __name__ == "__main__":
    main()
