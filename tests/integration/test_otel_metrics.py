"""OpenTelemetry metrics on real servers, read back with the SDK's in-memory reader: names,
units, attributes and values of ``db.client.operation.duration`` and smartcache's own
counters, for a server, a real slot migration and a Sentinel failover; sync and async."""

from __future__ import annotations

import time
from typing import Any

import pytest

from smartcache._otel import DURATION_BUCKETS
from smartcache.exceptions import ConfigurationError

otel_sdk = pytest.importorskip("opentelemetry.sdk.metrics")
export = pytest.importorskip("opentelemetry.sdk.metrics.export")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def reader() -> Any:
    return export.InMemoryMetricReader()


def provider(reader: Any) -> Any:
    return otel_sdk.MeterProvider(metric_readers=[reader])


def metrics(reader: Any) -> dict[str, Any]:
    data = reader.get_metrics_data()
    out: dict[str, Any] = {}
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "smartcache"
            for m in sm.metrics:
                out[m.name] = m
    return out


def points(metric: Any) -> dict[tuple[tuple[str, Any], ...], Any]:
    return {tuple(sorted(p.attributes.items())): p for p in metric.data.data_points}


def value(reader: Any, name: str, **attrs: Any) -> Any:
    m = metrics(reader)[name]
    for p in m.data.data_points:
        if all(p.attributes.get(k) == v for k, v in attrs.items()):
            return p.value
    return None


def test_operation_duration_follows_the_conventions(
    redis_standalone: Any, client_factory: Any, reader: Any
) -> None:
    c = client_factory(url=redis_standalone.url, meter_provider=provider(reader))
    c.set("otel:k", "v")
    for _ in range(3):
        assert c.get("otel:k") == b"v"
    c.lpush("otel:list", 1)
    with pytest.raises(Exception, match="WRONGTYPE"):
        c.get("otel:list")
    pipe = c.pipeline(transaction=False)
    pipe.get("otel:k").get("otel:k").get("otel:k")
    pipe.execute()
    tx = c.pipeline()
    tx.set("otel:a", 1).incr("otel:a")
    tx.execute()
    c.delete("otel:list")

    duration = metrics(reader)["db.client.operation.duration"]
    assert duration.unit == "s"
    base = {
        "db.system.name": "redis",
        "db.namespace": "0",
        "server.address": "127.0.0.1",
        "server.port": redis_standalone.port,
    }
    by_attrs = points(duration)
    peer = {"network.peer.address": "127.0.0.1", "network.peer.port": redis_standalone.port}

    def point(**extra: Any) -> Any:
        return by_attrs[tuple(sorted({**base, **extra}.items()))]

    get = point(**{"db.operation.name": "GET", **peer})
    assert get.count == 3 and get.sum > 0
    assert tuple(get.explicit_bounds) == DURATION_BUCKETS
    failed = point(
        **{
            "db.operation.name": "GET",
            "error.type": "redis.exceptions.ResponseError",
            "db.response.status_code": "WRONGTYPE",
            **peer,
        }
    )
    assert failed.count == 1
    assert point(**{"db.operation.name": "SET", **peer}).count == 1
    assert point(**{"db.operation.name": "PIPELINE", "db.operation.batch.size": 3}).count == 1
    assert point(**{"db.operation.name": "MULTI", "db.operation.batch.size": 2}).count == 1
    # the pipelines' commands are not counted one by one
    # SET, 3 GET, LPUSH, the failed GET, PIPELINE, MULTI, DEL
    assert sum(p.count for p in duration.data.data_points) == 9


def test_metrics_are_off_unless_asked_for(redis_standalone: Any, client_factory: Any) -> None:
    c = client_factory(url=redis_standalone.url)
    inner = getattr(c, "_client", c)  # the async client behind the test's sync proxy
    assert inner._telemetry is None


def test_a_wrong_meter_provider_is_refused(redis_standalone: Any, client_factory: Any) -> None:
    with pytest.raises(ConfigurationError, match="MeterProvider"):
        client_factory(url=redis_standalone.url, meter_provider="yes")


def test_redirects_and_refreshes_of_a_real_migration(
    redis_topologies: Any, client_factory: Any, reader: Any
) -> None:
    cluster = redis_topologies.cluster(primaries=3, replicas=0)
    c = client_factory(startup_nodes=cluster.startup_nodes, meter_provider=provider(reader))
    keys = [f"otel:mig:{i}" for i in range(200)]
    for k in keys:
        c.set(k, "v")
    source = cluster.primaries()[0]
    target = cluster.primaries()[1]
    moving = [s for s in cluster.slots_of(source) if any(c.keyslot(k) == s for k in keys)][:5]
    cluster.migrate_slots(source, target, slots=moving)
    time.sleep(0.15)  # past the refresh rate limit: MOVED's refresh runs at once
    assert all(c.get(k) == b"v" for k in keys)
    stats = c.stats()
    assert stats.moved >= 1
    assert value(reader, "smartcache.redirects", **{"smartcache.redirect.kind": "moved"}) == (
        stats.moved
    )
    assert value(reader, "smartcache.redirects", **{"smartcache.redirect.kind": "ask"}) == 0
    refreshes = metrics(reader)["smartcache.topology.refreshes"]
    assert refreshes.unit == "{refresh}"
    assert value(reader, "smartcache.topology.refreshes", **{"smartcache.refresh.cause": "moved"})
    assert value(reader, "smartcache.topology.refreshes", **{"smartcache.refresh.cause": "startup"})
    assert value(reader, "smartcache.ambiguous_failures") == 0


def test_a_sentinel_failover_is_exported(
    redis_topologies: Any, client_factory: Any, reader: Any
) -> None:
    group = redis_topologies.sentinel(replicas=1, sentinels=3)
    c = client_factory(
        sentinels=group.sentinel_addresses,
        service_name=group.service_name,
        meter_provider=provider(reader),
    )
    c.set("otel:fo", 0)
    assert value(reader, "smartcache.sentinel.failovers") == 0
    group.failover()
    deadline = time.monotonic() + 30
    while c.stats().failovers == 0 and time.monotonic() < deadline:
        c.set("otel:fo", 1)
        time.sleep(0.01)
    assert value(reader, "smartcache.sentinel.failovers") == 1
    fence = metrics(reader)["smartcache.sentinel.write_fence.time"]
    assert fence.unit == "s"


def test_connection_pool_metrics(redis_standalone: Any, client_factory: Any, reader: Any) -> None:
    """Two BLPOPs hold both pooled connections; a third caller waits, then times out
    (PoolExhaustedError): used, pending, max and timeouts as the conventions name them."""
    import threading

    from smartcache.exceptions import PoolExhaustedError

    c = client_factory(
        url=redis_standalone.url,
        max_connections=2,
        pool_timeout=0.5,
        meter_provider=provider(reader),
    )
    c.ping()
    key = f"otel:pool:{time.monotonic_ns()}"
    errors: list[BaseException] = []

    def block() -> None:
        try:
            c.blpop(key, timeout=2)
        except BaseException as exc:  # reported below
            errors.append(exc)

    holders = [threading.Thread(target=block) for _ in range(2)]
    for t in holders:
        t.start()
    pool = f"127.0.0.1:{redis_standalone.port}"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # until both BLPOPs hold their connection
        if (
            value(reader, "db.client.connection.count", **{"db.client.connection.state": "used"})
            or 0
        ) >= 2:
            break
        time.sleep(0.01)
    waiter = threading.Thread(target=block)
    waiter.start()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # the third caller waits for a connection
        if value(reader, "db.client.connection.pending_requests") == 1:
            break
        time.sleep(0.01)
    assert value(reader, "db.client.connection.pending_requests") == 1
    waiter.join(5)
    assert len(errors) == 1 and isinstance(errors[0], PoolExhaustedError), errors
    assert value(reader, "db.client.connection.timeouts") == 1
    assert c.stats().pool_timeouts == 1
    assert (
        value(reader, "db.client.connection.max", **{"db.client.connection.pool.name": pool}) == 2
    )
    import redis

    with redis.Redis.from_url(redis_standalone.url) as other:  # the pool is full: not c
        other.lpush(key, "a", "b")  # wake the holders
    for t in holders:
        t.join(5)
    assert value(reader, "db.client.connection.pending_requests") == 0
    create = metrics(reader)["db.client.connection.create_time"]
    assert create.unit == "s"
    (point,) = create.data.data_points
    assert point.attributes["db.client.connection.pool.name"] == pool
    opened = 2 if client_factory.kind == "sync" else 3  # the asyncio pool's shared one too
    assert point.count == opened and 0 < point.sum < 5
    (wait,) = metrics(reader)["db.client.connection.wait_time"].data.data_points
    assert wait.attributes["db.client.connection.pool.name"] == pool
    # every connection handed out: sync, each command's (PING, the BLPOPs, the waiter's
    # retry-free failure is not one); asyncio, the BLPOPs' dedicated ones only
    assert wait.count >= (3 if client_factory.kind == "sync" else 2)
