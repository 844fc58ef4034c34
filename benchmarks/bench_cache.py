"""Hit latency of ``@cached`` against a hand-written GET + json.loads, and other cache libraries.

    .venv/bin/python -m benchmarks.bench_cache [--n 20000] [--rounds 5] [--no-pin]
    .venv/bin/python -m benchmarks.bench_cache --stampede [--rounds 5]

Every case reads one warm key (a ~100-byte JSON object) through a decorated function whose
argument is an int, so the per-call cost includes binding the arguments and building the key.
Baselines: redis-py ``Redis.get`` + ``json.loads`` on a fixed key (the goal is @cached on
SmartClient <= 1.1x its time) and the same by hand on SmartClient. cashews, aiocache and
dogpile.cache are measured when installed (they are not smartcache dependencies).

``--stampede``: one hot key, expired, whose loader takes 100 ms (``asyncio.sleep(0.1)``) and
counts its calls, hit at once by 200 asyncio tasks in one process, then by 4 spawned processes
x 50 tasks (each process with its own client). Cases: ``@cached`` on AsyncSmartClient
(single-flight + lease lock, the defaults), cashews ``@cache(lock=True)``, cashews' default
``@cache`` (in-process thunder protection only) and cashews with ``protected=False`` (no
protection at all, the reference). Reports loader calls per round, the p50/max latency of the
callers and the Redis commands the burst cost (``INFO stats`` delta).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis
import redis.asyncio

from benchmarks.bench_client import _pin, compare
from smartcache.asyncio.client import AsyncSmartClient
from smartcache.cache import cached
from smartcache.sync.client import SmartClient
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


STAMPEDE_LOAD_S = 0.1
STAMPEDE_CASES = {
    "smartcache": "@cached(AsyncSmartClient), single-flight + lease",
    "cashews-lock": "cashews @cache(lock=True)",
    "cashews": "cashews @cache (default: thunder protection, no lock)",
    "cashews-nolock": "cashews @cache(protected=False), no protection",
}
Call = Callable[[], Awaitable[Any]]
Round = tuple[int, list[float], int]  # loader calls, caller latencies (s), Redis commands


def _stampede_key(case: str) -> str:
    """The Redis key of the hot entry (``@cached`` prefixes its namespace, ``sc:``)."""
    return f"{'sc:' if case == 'smartcache' else ''}stampede:{case}:42"


async def _stampede_fn(case: str, url: str) -> tuple[Call, list[int], Call]:
    """The cached call for ``case``, its loader-call counter and a close coroutine."""
    loads = [0]

    async def load_row() -> Any:  # the "database query": 100 ms
        loads[0] += 1
        await asyncio.sleep(STAMPEDE_LOAD_S)
        return VALUE

    key = "stampede:" + case + ":{item_id}"
    if case == "smartcache":
        client = AsyncSmartClient.from_url(url)

        @cached(client=client, key=key, ttl=3600)
        async def sc_item(item_id: int) -> Any:
            return await load_row()

        return lambda: sc_item(42), loads, client.aclose
    from cashews import cache as cashews_cache

    cashews_cache.setup(url)
    options: dict[str, Any] = {
        "cashews-lock": {"lock": True},
        "cashews": {},
        "cashews-nolock": {"protected": False},
    }[case]

    @cashews_cache(ttl="1h", key=key, **options)
    async def cw_item(item_id: int) -> Any:
        return await load_row()

    return lambda: cw_item(42), loads, cashews_cache.close


async def _burst(call: Call, tasks: int) -> list[float]:
    async def one() -> float:
        start = time.perf_counter()
        await call()
        return time.perf_counter() - start

    return list(await asyncio.gather(*(one() for _ in range(tasks))))


async def _stampede_rounds(
    case: str,
    url: str,
    tasks: int,
    rounds: int,
    before: Callable[[], None],
    after: Callable[[], Any],
) -> list[tuple[int, list[float], Any]]:
    """Per round: warm the key, ``before()`` (expires it), the burst, ``after()``."""
    call, loads, close = await _stampede_fn(case, url)
    out = []
    for _ in range(rounds):
        await call()  # fills the key (first round) and warms the connections: a hit after
        loads[0] = 0
        before()
        latencies = await _burst(call, tasks)
        out.append((loads[0], latencies, after()))
    await close()
    return out


def _expire(r: redis.Redis, key: str) -> int:
    """Expire ``key`` for real (PEXPIRE 1 ms, wait until gone); the command count after."""
    if not r.exists(key):
        raise RuntimeError(f"{key} was not written: the benchmark would measure nothing")
    r.pexpire(key, 1)
    while r.exists(key):
        time.sleep(0.001)
    return int(r.info("stats")["total_commands_processed"])


def _commands(r: redis.Redis) -> int:
    return int(r.info("stats")["total_commands_processed"])


def stampede_in_process(case: str, url: str, tasks: int, rounds: int) -> list[Round]:
    r = redis.Redis.from_url(url)
    marks: list[int] = []
    result = asyncio.run(
        _stampede_rounds(
            case,
            url,
            tasks,
            rounds,
            lambda: marks.append(_expire(r, _stampede_key(case))),
            lambda: _commands(r) - marks[-1] - 1,
        )
    )
    r.close()
    return [(loads, lat, cmds) for loads, lat, cmds in result]


def _stampede_worker(
    case: str, url: str, tasks: int, rounds: int, barrier: Any, queue: Any
) -> None:
    def before() -> None:
        barrier.wait()  # ready: the coordinator expires the key
        barrier.wait()  # go

    out = asyncio.run(_stampede_rounds(case, url, tasks, rounds, before, barrier.wait))
    queue.put([(loads, lat) for loads, lat, _ in out])


def stampede_cross_process(case: str, url: str, procs: int, tasks: int, rounds: int) -> list[Round]:
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(procs + 1), ctx.Queue()
    workers = [
        ctx.Process(target=_stampede_worker, args=(case, url, tasks, rounds, barrier, queue))
        for _ in range(procs)
    ]
    for w in workers:
        w.start()
    r = redis.Redis.from_url(url)
    commands = []
    for _ in range(rounds):
        barrier.wait(timeout=120)
        mark = _expire(r, _stampede_key(case))
        barrier.wait(timeout=60)
        barrier.wait(timeout=60)  # every process finished its burst
        commands.append(_commands(r) - mark - 1)
    per_proc = [queue.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=30)
    r.close()
    return [
        (
            sum(p[i][0] for p in per_proc),
            [lat for p in per_proc for lat in p[i][1]],
            commands[i],
        )
        for i in range(rounds)
    ]


def stampede_table(rows: list[tuple[str, str, list[Round]]]) -> str:
    lines = [
        "| case | callers | loader calls per round | p50 ms | max ms | Redis commands per burst |",
        "|---|---|---|---:|---:|---:|",
    ]
    for case, callers, rounds in rows:
        loads = ", ".join(str(n) for n, _, _ in rounds)
        p50s = [statistics.median(lat) * 1000 for _, lat, _ in rounds]
        worst = max(max(lat) for _, lat, _ in rounds) * 1000
        cmds = statistics.median(c for _, _, c in rounds)
        lines.append(
            f"| {STAMPEDE_CASES[case]} | {callers} | {loads} | "
            f"{statistics.median(p50s):.1f} ({min(p50s):.0f}-{max(p50s):.0f}) | "
            f"{worst:.1f} | {cmds:,.0f} |"
        )
    return "\n".join(lines)


def stampede(url: str, rounds: int, tasks: int = 200, procs: int = 4) -> str:
    rows: list[tuple[str, str, list[Round]]] = []
    cases = ["smartcache"]
    with contextlib.suppress(ImportError):
        import cashews  # noqa: F401

        cases += ["cashews-lock", "cashews", "cashews-nolock"]
    for case in cases:
        rows.append(
            (case, f"1 process x {tasks} tasks", stampede_in_process(case, url, tasks, rounds))
        )
    for case in cases:
        rows.append(
            (
                case,
                f"{procs} processes x {tasks // procs} tasks",
                stampede_cross_process(case, url, procs, tasks // procs, rounds),
            )
        )
    return stampede_table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--stampede", action="store_true", help="the stampede benchmark")
    args = parser.parse_args()
    if args.stampede:
        with Standalone() as server:
            print(f"server: {server.binary.label} on port {server.port}")
            print(stampede(server.url, args.rounds))
        return
    with Standalone() as server:
        if not args.no_pin:
            _pin(server.pids)
        rows = sync_rows(server.url, server.port, args.n, args.rounds)
        rows += asyncio.run(async_rows(server.url, args.n // 2, args.rounds))
    print(table(rows))


if __name__ == "__main__":
    main()
