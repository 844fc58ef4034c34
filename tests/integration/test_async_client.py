"""What only asyncio has: many tasks on one client, cancellation, auto-pipelining, async
WATCH callbacks. (Command families and fault scenarios are shared with the sync client.)"""

from __future__ import annotations

import asyncio

import pytest
import redis

from smartcache import ConfigurationError, key_slot
from smartcache.asyncio.client import AsyncSmartClient
from smartcache.testing import Cluster, Standalone

pytestmark = [pytest.mark.asyncio, pytest.mark.dropin]


@pytest.fixture(params=["standalone", "cluster"])
def url(
    request: pytest.FixtureRequest, redis_standalone: Standalone, redis_cluster: Cluster
) -> str:
    return redis_standalone.url if request.param == "standalone" else redis_cluster.url


async def test_many_tasks_share_one_client_and_few_writes(url: str) -> None:
    async with AsyncSmartClient.from_url(url) as client:
        await client.mset_nonatomic({f"at:{i}": i for i in range(200)})
        writes_before = _writes(client)
        values = await asyncio.gather(*(client.get(f"at:{i}") for i in range(200)))
        assert values == [str(i).encode() for i in range(200)]
        writes = _writes(client) - writes_before
        # 200 GETs from 200 tasks went out in one write per node (auto-pipelining)
        assert writes <= (3 if client.is_cluster else 1), writes
        await client.delete(*[f"at:{i}" for i in range(200)])


def _writes(client: AsyncSmartClient) -> int:
    pools = [client._pool] if client._pool is not None else list(client._cluster.pools.values())
    return sum(p._shared.write_count for p in pools if p is not None and p._shared is not None)


async def test_cancelled_tasks_leave_no_reply_behind(url: str) -> None:
    async with AsyncSmartClient.from_url(url) as client:
        await client.mset_nonatomic({f"cx:{i}": i for i in range(100)})
        tasks = [asyncio.ensure_future(client.get(f"cx:{i}")) for i in range(100)]
        await asyncio.sleep(0)  # let them queue
        for task in tasks[::2]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, result in enumerate(results):
            if i % 2:
                assert result == str(i).encode()
            else:
                assert isinstance(result, asyncio.CancelledError | bytes)
        # the connection is still in step: every later reply goes to its own caller
        again = await asyncio.gather(*(client.get(f"cx:{i}") for i in range(100)))
        assert again == [str(i).encode() for i in range(100)]
        await client.delete(*[f"cx:{i}" for i in range(100)])


async def test_one_refresh_for_many_tasks(redis_cluster: Cluster) -> None:
    async with AsyncSmartClient.from_url(redis_cluster.url) as client:
        state = client._cluster
        assert state is not None
        before = state._generation
        state.refresh_pending = True
        await asyncio.gather(
            *(client.get(f"rf:{i}") for i in range(50)), *(state.refresh() for _ in range(20))
        )
        assert state._generation - before <= 2  # collapsed (one pending + one queued at most)


async def test_blocking_command_uses_its_own_connection(url: str) -> None:
    async with AsyncSmartClient.from_url(url, socket_timeout=0.3) as client:
        await client.delete("{bq}q")
        waiter = asyncio.ensure_future(client.blpop(["{bq}q"], timeout=5))
        await asyncio.sleep(0.6)  # longer than socket_timeout: BLPOP must still be waiting
        assert not waiter.done()
        assert await client.get("{bq}other") is None  # the shared connection is not blocked
        await client.rpush("{bq}q", "item")
        assert await waiter == (b"{bq}q", b"item")


async def test_async_watch_transaction(url: str) -> None:
    async with AsyncSmartClient.from_url(url) as client:
        await client.set("{w}balance", 10)
        async with client.pipeline() as pipe:
            await pipe.watch("{w}balance")
            balance = int(await client.get("{w}balance"))
            pipe.multi()
            pipe.set("{w}balance", balance - 3)
            assert await pipe.execute() == [True]
        async with client.pipeline() as pipe:
            await pipe.watch("{w}balance")
            await client.set("{w}balance", 100)
            pipe.multi()
            pipe.set("{w}balance", 0)
            with pytest.raises(redis.WatchError):
                await pipe.execute()
        assert await client.get("{w}balance") == b"100"


async def test_cross_slot_and_bad_input(redis_cluster: Cluster) -> None:
    async with AsyncSmartClient.from_url(redis_cluster.url) as client:
        assert key_slot("a") != key_slot("b")
        with pytest.raises(redis.exceptions.ClusterCrossSlotError):
            await client.msetnx({"a": 1, "b": 2})
        pipe = client.pipeline()
        pipe.set("a", 1).set("b", 2)
        with pytest.raises(redis.exceptions.ClusterCrossSlotError):
            await pipe.execute()
    with pytest.raises(ConfigurationError, match="read_from"):
        AsyncSmartClient(read_from="nearest")
    with pytest.raises(ConfigurationError, match="Sentinel"):
        AsyncSmartClient(sentinels=[("127.0.0.1", 26379)])


async def test_registered_script_in_a_pipeline(url: str) -> None:
    async with AsyncSmartClient.from_url(url) as client:
        await client.script_flush()
        incr = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
        pipe = client.pipeline()
        await incr(keys=["{sc}n"], args=[5], client=pipe)
        pipe.get("{sc}n")
        assert await pipe.execute() == [5, b"5"]
        assert await incr(keys=["{sc}n"], args=[1]) == 6
        await client.delete("{sc}n")
