"""``wait_replicas=N`` on every topology and every write path: single commands, commands
split by slot, pipelines, transactions and scripts, on a cluster (per shard: WAIT runs on
the connection of the primary that applied the write), on a Sentinel group and on a
server given by address. Proved by the servers' own ``INFO commandstats`` (WAIT calls
counted where the writes went) and by ``DurabilityError`` when too few replicas exist."""

from __future__ import annotations

from typing import Any

import pytest

from smartcache.exceptions import DurabilityError
from smartcache.testing import Cluster, SentinelGroup

pytestmark = pytest.mark.timeout(120)


def wait_calls(processes: Any) -> dict[str, int]:
    """WAIT calls each server counted so far."""
    out = {}
    for proc in processes:
        with proc.client() as c:
            stat = c.info("commandstats").get("cmdstat_wait", {})
            out[proc.address] = int(stat.get("calls", 0))
    return out


def grew(before: dict[str, int], after: dict[str, int]) -> set[str]:
    return {a for a in after if after[a] > before.get(a, 0)}


def test_cluster_waits_per_shard_on_every_write_path(
    redis_cluster: Cluster, client_factory: Any
) -> None:
    primaries = redis_cluster.primaries()
    keys = [f"dur:{i}" for i in range(60)]  # spread over every primary
    c = client_factory(url=redis_cluster.url, wait_replicas=1, wait_timeout_ms=2000)
    before = wait_calls(primaries)
    for k in keys[:30]:
        assert c.set(k, "v") is True  # from_url: detected as a cluster, WAIT still sent
    assert grew(before, wait_calls(primaries)) == {p.address for p in primaries}
    after_sets = wait_calls(primaries)
    assert sum(after_sets.values()) - sum(before.values()) == 30  # one WAIT per write

    assert c.get(keys[0]) == b"v"  # reads never wait
    assert wait_calls(primaries) == after_sets

    assert all(c.mset_nonatomic(dict.fromkeys(keys, "m")))  # split by slot: each part
    assert c.delete(*keys[:10]) == 10
    pipe = c.pipeline(transaction=False)
    for k in keys[10:]:
        pipe.incr(f"{k}:n")
    assert pipe.execute() == [1] * 50
    tx = c.pipeline(transaction=True)
    tx.set("{dur}a", 1).incr("{dur}a")
    assert tx.execute() == [True, 2]
    assert c.eval("return redis.call('SET', KEYS[1], 'e')", 1, "{dur}e") == b"OK"
    after = wait_calls(primaries)
    assert grew(after_sets, after) == {p.address for p in primaries}
    c.delete(*keys, *[f"{k}:n" for k in keys], "{dur}a", "{dur}e")


def test_cluster_too_few_replicas_raises_on_every_write_path(
    redis_cluster: Cluster, client_factory: Any
) -> None:
    c = client_factory(url=redis_cluster.url, wait_replicas=2, wait_timeout_ms=100)
    with pytest.raises(DurabilityError) as err:
        c.set("dur:short", "v")  # each primary has one replica
    assert err.value.replicas == 1 and err.value.wanted == 2
    assert c.get("dur:short") == b"v"  # applied, only not durable enough
    pipe = c.pipeline(transaction=False)
    pipe.set("dur:p1", 1).set("dur:p2", 2)
    with pytest.raises(DurabilityError, match="PIPELINE .* reached only 1 of 2"):
        pipe.execute()
    tx = c.pipeline(transaction=True)
    tx.set("{dur}t", 1)
    with pytest.raises(DurabilityError, match="MULTI"):
        tx.execute()
    plain = client_factory(url=redis_cluster.url)
    assert plain.delete("dur:short", "dur:p1", "dur:p2", "{dur}t") == 4


def test_sentinel_pipelines_and_transactions_wait(
    redis_sentinel: SentinelGroup, client_factory: Any
) -> None:
    c = client_factory(url=redis_sentinel.url, wait_replicas=2, wait_timeout_ms=2000)
    primary = redis_sentinel.primary()
    before = wait_calls([primary])[primary.address]
    pipe = c.pipeline(transaction=False)
    pipe.set("sdur:a", 1).get("sdur:a").incr("sdur:b")
    assert pipe.execute() == [True, b"1", 1]
    tx = c.pipeline(transaction=True)
    tx.set("sdur:c", 1).incr("sdur:c")
    assert tx.execute() == [True, 2]
    read_only = c.pipeline(transaction=False)
    read_only.get("sdur:a")
    assert read_only.execute() == [b"1"]
    assert wait_calls([primary])[primary.address] - before == 2  # the read-only one: none
    short = client_factory(url=redis_sentinel.url, wait_replicas=3, wait_timeout_ms=100)
    pipe = short.pipeline(transaction=False)
    pipe.set("sdur:a", 2)
    with pytest.raises(DurabilityError) as err:
        pipe.execute()
    assert err.value.replicas == 2 and err.value.wanted == 3
    assert c.get("sdur:a") == b"2"  # applied, only not durable enough
    c.delete("sdur:a", "sdur:b", "sdur:c")


def test_cached_writes_wait_on_a_cluster(redis_cluster: Cluster) -> None:
    """``@cached`` stores through a pipeline: with wait_replicas it is followed by WAIT."""
    from smartcache import SmartClient
    from smartcache.cache import cached

    client = SmartClient.from_url(redis_cluster.url, wait_replicas=1, wait_timeout_ms=2000)
    primaries = redis_cluster.primaries()
    try:

        @cached(client=client, ttl=60, namespace="durcache")
        def square(x: int) -> int:
            return x * x

        before = wait_calls(primaries)
        assert [square(i) for i in range(20)] == [i * i for i in range(20)]
        assert sum(wait_calls(primaries).values()) - sum(before.values()) >= 20
    finally:
        client.close()
