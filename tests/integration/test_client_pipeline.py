"""Pipelines and transactions, on a standalone server and on a cluster."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from smartcache import CrossSlotError, key_slot
from smartcache.sync.client import SmartClient
from smartcache.testing import Cluster, Standalone
from smartcache.testing.pytest_plugin import TopologyFactory

pytestmark = pytest.mark.dropin


@pytest.fixture(params=["standalone", "cluster"])
def client(
    request: pytest.FixtureRequest,
    redis_standalone: Standalone,
    redis_cluster: Cluster,
    client_factory: Any,
) -> Iterator[SmartClient]:
    """A SmartClient, or an AsyncSmartClient behind a SyncProxy: every scenario runs for both."""
    url = redis_standalone.url if request.param == "standalone" else redis_cluster.url
    c = client_factory(url=url)
    c.flushall()
    yield c
    c.flushall()


def test_pipeline_results_in_caller_order(client: SmartClient) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(100):
        pipe.set(f"p:{i}", i)
    for i in range(100):
        pipe.get(f"p:{i}")
    pipe.incr("p:counter").hgetall("p:none").exists(*[f"p:{i}" for i in range(10)])
    pipe.dbsize()
    results = pipe.execute()
    assert results[:100] == [True] * 100
    assert results[100:200] == [str(i).encode() for i in range(100)]
    assert results[200] == 1
    assert results[201] == {}
    assert results[202] == 10
    assert results[203] == 101
    assert len(pipe) == 0 and pipe.execute() == []


def test_pipeline_errors(client: SmartClient) -> None:
    client.set("p:str", "x")
    pipe = client.pipeline(transaction=False)
    pipe.set("p:a", 1).lpush("p:str", 1).get("p:a")
    with pytest.raises(redis.ResponseError, match=r"Command # 2 \(LPUSH p:str 1\)"):
        pipe.execute()
    pipe.set("p:a", 1).lpush("p:str", 1).get("p:a")
    results = pipe.execute(raise_on_error=False)
    assert results[0] is True and results[2] == b"1"
    assert isinstance(results[1], redis.ResponseError)


def test_transactions(client: SmartClient) -> None:
    with client.pipeline() as pipe:
        pipe.set("{t}a", 1).incr("{t}a").get("{t}a")
        assert pipe.execute() == [True, 2, b"2"]
    pipe = client.pipeline()
    pipe.set("{t}s", "x").lpush("{t}s", 1).set("{t}b", 2)
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        pipe.execute()
    assert client.get("{t}b") == b"2"  # a runtime error does not roll back (Redis semantics)


def test_watch(client: SmartClient, client_factory: Any) -> None:
    if client_factory.kind == "async":
        pytest.skip("callbacks that read inside WATCH are async code: test_async_client.py")
    client.set("{w}balance", 10)

    def spend(pipe: redis.client.Pipeline) -> None:
        balance = int(pipe.get("{w}balance"))
        pipe.multi()
        pipe.set("{w}balance", balance - 3)

    assert client.transaction(spend, "{w}balance") == [True]
    assert client.get("{w}balance") == b"7"
    with client.pipeline() as pipe:
        pipe.watch("{w}balance")
        client.set("{w}balance", 100)  # someone else writes
        pipe.multi()
        pipe.set("{w}balance", 0)
        with pytest.raises(redis.WatchError):
            pipe.execute()
    assert client.get("{w}balance") == b"100"


def test_cluster_transaction_across_slots_is_refused(redis_cluster: Cluster) -> None:
    with SmartClient.from_url(redis_cluster.url) as c:
        assert key_slot("a") != key_slot("b")
        pipe = c.pipeline()
        pipe.set("a", 1).set("b", 2)
        with pytest.raises(CrossSlotError) as err:
            pipe.execute()
        assert err.value.slots == tuple(sorted({key_slot("a"), key_slot("b")}))
        assert c.exists("a", "b") == 0


def test_cluster_pipeline_follows_moved(redis_topologies: TopologyFactory) -> None:
    cluster = redis_topologies.cluster(primaries=2, replicas=0)
    client = SmartClient(startup_nodes=cluster.startup_nodes)
    source, target = cluster.primaries()
    moving = cluster.slots_of(source)[:100]
    wanted = set(moving)
    keys = [k for k in (f"mv:{i}" for i in range(20000)) if key_slot(k) in wanted]
    assert len(keys) > 50
    for k in keys:
        client.set(k, k)
    cluster.migrate_slots(source, target, slots=moving)
    pipe = client.pipeline(transaction=False)
    for k in keys:
        pipe.get(k)
    assert pipe.execute() == [k.encode() for k in keys]  # every one got MOVED first
    client.close()


@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_reset_ends_the_watch_on_the_connection_it_keeps(
    redis_standalone: Standalone, redis_cluster: Cluster, client_factory: Any, topology: str
) -> None:
    """``reset()`` after WATCH sends UNWATCH and keeps the connection (both clients, one
    source): the next transaction, likely on that same connection, is not aborted by a
    change to the key the finished WATCH looked at."""
    url = redis_cluster.url if topology == "cluster" else redis_standalone.url
    r = client_factory(url=url)
    pipe = r.pipeline()
    pipe.watch("{wr}:watched")
    pipe.reset()
    r.set("{wr}:watched", "changed")
    pipe.multi()
    pipe.set("{wr}:other", "1")
    assert pipe.execute() == [True]
    assert pipe.shard_hint is None and len(pipe) == 0
