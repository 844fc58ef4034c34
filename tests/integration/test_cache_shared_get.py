"""Async readers of one key at the same time share one GET (a private server counts them)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from tenacity import stop_after_attempt

from smartcache import RetryPolicy
from smartcache.asyncio.client import AsyncSmartClient
from smartcache.cache import Cache
from smartcache.testing import Standalone


@pytest.fixture
def server(redis_topologies: Any) -> Iterator[Standalone]:
    yield redis_topologies.standalone()  # its own: the GET count is ours alone


def _gets(server: Standalone) -> int:
    with redis.Redis.from_url(server.url) as admin:
        stats = admin.info("commandstats")
    return int(stats.get("cmdstat_get", {}).get("calls", 0))


@pytest.mark.asyncio
async def test_a_burst_of_readers_sends_one_get_and_each_gets_its_own_value(
    server: Standalone,
) -> None:
    client = AsyncSmartClient.from_url(server.url)
    cache = Cache(client)
    try:
        await cache.aget_or_load("hot", lambda: {"v": 1})  # warm
        before = _gets(server)
        values = await asyncio.gather(
            *(cache.aget_or_load("hot", lambda: pytest.fail("loaded")) for _ in range(200))
        )
        assert _gets(server) - before == 1
        assert all(v == {"v": 1} for v in values)
        assert len({id(v) for v in values}) == 200  # decoded per caller: nothing shared
        assert cache.stats.snapshot()["hits"] == 200
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_cancelling_the_reader_that_sent_the_get_leaves_the_others_served(
    server: Standalone,
) -> None:
    client = AsyncSmartClient.from_url(server.url)
    cache = Cache(client)
    try:
        await cache.aget_or_load("k", lambda: "value")
        first = asyncio.ensure_future(cache.aget_or_load("k", lambda: "loaded"))
        await asyncio.sleep(0)  # it sends the GET and waits for the reply
        others = [asyncio.ensure_future(cache.aget_or_load("k", lambda: "x")) for _ in range(5)]
        await asyncio.sleep(0)  # they join its GET
        first.cancel()
        assert await asyncio.gather(*others) == ["value"] * 5
        with pytest.raises(asyncio.CancelledError):
            await first
    finally:
        await client.aclose()


@pytest.mark.asyncio
async def test_a_failed_shared_get_reaches_every_reader(server: Standalone) -> None:
    client = AsyncSmartClient.from_url(
        server.url,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry_policy=RetryPolicy(stop=stop_after_attempt(1)),
    )
    cache = Cache(client)
    try:
        server.kill()
        values = await asyncio.gather(
            *(cache.aget_or_load("gone", lambda: "from-db") for _ in range(10))
        )
        assert values == ["from-db"] * 10  # on_cache_error="load": every reader loads
        assert cache.stats.snapshot()["errors"] == 10
    finally:
        await client.aclose()
