"""Prometheus collectors on real servers, scraped as Prometheus would (the text format,
parsed back): the duration histogram's buckets and labels, the counters of a real slot
migration, two clients on one registry; sync and async."""

from __future__ import annotations

import time
from typing import Any

import pytest

from smartcache.exceptions import ConfigurationError

prometheus_client = pytest.importorskip("prometheus_client")
parser = pytest.importorskip("prometheus_client.parser")

pytestmark = pytest.mark.timeout(120)


def scrape(registry: Any) -> dict[str, list[Any]]:
    text = prometheus_client.generate_latest(registry).decode()
    out: dict[str, list[Any]] = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def total(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    return sum(
        s.value
        for s in samples.get(name, [])
        if all(s.labels.get(k) == v for k, v in labels.items())
    )


def sample(samples: dict[str, list[Any]], name: str, **labels: str) -> float:
    found = [
        s.value
        for s in samples.get(name, [])
        if all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, samples.get(name))
    return float(found[0])


def test_duration_histogram_as_scraped(redis_standalone: Any, client_factory: Any) -> None:
    registry = prometheus_client.CollectorRegistry()
    c = client_factory(url=redis_standalone.url, prometheus_registry=registry)
    c.set("prom:k", "v")
    for _ in range(4):
        c.get("prom:k")
    c.lpush("prom:list", 1)
    with pytest.raises(Exception, match="WRONGTYPE"):
        c.get("prom:list")
    c.delete("prom:list")
    pipe = c.pipeline(transaction=False)
    pipe.get("prom:k").get("prom:k")
    pipe.execute()
    s = scrape(registry)
    port = str(redis_standalone.port)
    get = {
        "db_system_name": "redis",
        "db_operation_name": "GET",
        "db_namespace": "0",
        "server_address": "127.0.0.1",
        "server_port": port,
        "error_type": "",
        "network_peer_address": "127.0.0.1",
        "network_peer_port": port,
    }
    assert sample(s, "db_client_operation_duration_seconds_count", **get) == 4
    assert sample(s, "db_client_operation_duration_seconds_bucket", **get, le="+Inf") == 4
    assert sample(s, "db_client_operation_duration_seconds_sum", **get) > 0
    buckets = [
        x
        for x in s["db_client_operation_duration_seconds_bucket"]
        if x.labels["db_operation_name"] == "GET" and not x.labels["error_type"]
    ]
    les = [x.labels["le"] for x in buckets]
    assert les == ["0.001", "0.005", "0.01", "0.05", "0.1", "0.5", "1.0", "5.0", "10.0", "+Inf"]
    values = [x.value for x in buckets]
    assert values == sorted(values)  # cumulative
    failed = sample(
        s,
        "db_client_operation_duration_seconds_count",
        db_operation_name="GET",
        error_type="redis.exceptions.ResponseError",
        db_response_status_code="WRONGTYPE",
    )
    assert failed == 1
    assert (
        sample(
            s,
            "db_client_operation_duration_seconds_count",
            db_operation_name="PIPELINE",
            db_operation_batch_size="2",
        )
        == 1
    )
    assert sample(s, "smartcache_redirects_total", smartcache_redirect_kind="moved") == 0
    opened = sample(
        s,
        "db_client_connection_create_time_seconds_count",
        db_client_connection_pool_name=f"127.0.0.1:{port}",
    )
    assert opened == 1  # one connection served all (the sync pool's, the asyncio shared one)
    waits = total(s, "db_client_connection_wait_time_seconds_count")
    # sync: one wait per command (SET, 4 GET, LPUSH, GET, DEL, the pipeline, and the
    # client's own INFO at start); asyncio: none (its shared, auto-pipelined connection is
    # never waited for)
    assert waits == (10 if client_factory.kind == "sync" else 0)
    assert (
        sample(s, "db_client_connection_count", db_client_connection_state="idle")
        + sample(s, "db_client_connection_count", db_client_connection_state="used")
        == 1
    )


def test_two_clients_on_one_registry_are_summed(redis_standalone: Any, client_factory: Any) -> None:
    registry = prometheus_client.CollectorRegistry()
    a = client_factory(url=redis_standalone.url, prometheus_registry=registry)
    b = client_factory(url=redis_standalone.url, prometheus_registry=registry)
    a.get("prom:two")
    b.get("prom:two")
    b.get("prom:two")
    s = scrape(registry)
    assert total(s, "db_client_operation_duration_seconds_count", db_operation_name="GET") == 3


def test_a_wrong_registry_is_refused(redis_standalone: Any, client_factory: Any) -> None:
    with pytest.raises(ConfigurationError, match="CollectorRegistry"):
        client_factory(url=redis_standalone.url, prometheus_registry="default")


def test_counters_of_a_real_migration(redis_topologies: Any, client_factory: Any) -> None:
    registry = prometheus_client.CollectorRegistry()
    cluster = redis_topologies.cluster(primaries=3, replicas=0)
    c = client_factory(startup_nodes=cluster.startup_nodes, prometheus_registry=registry)
    keys = [f"prom:mig:{i}" for i in range(200)]
    for k in keys:
        c.set(k, "v")
    source, target = cluster.primaries()[:2]
    moving = [s for s in cluster.slots_of(source) if any(c.keyslot(k) == s for k in keys)][:5]
    cluster.migrate_slots(source, target, slots=moving)
    time.sleep(0.15)  # past the refresh rate limit: MOVED's refresh runs at once
    assert all(c.get(k) == b"v" for k in keys)
    stats = c.stats()
    s = scrape(registry)
    assert stats.moved >= 1
    assert sample(s, "smartcache_redirects_total", smartcache_redirect_kind="moved") == stats.moved
    assert (
        sample(s, "smartcache_topology_refreshes_total", smartcache_refresh_cause="moved")
        == stats.refreshes["moved"]
    )
    get = total(s, "db_client_operation_duration_seconds_count", db_operation_name="GET")
    assert get == 200
    peers = {
        x.labels["network_peer_address"] + ":" + x.labels["network_peer_port"]
        for x in s["db_client_operation_duration_seconds_count"]
        if x.labels["db_operation_name"] == "GET"
    }
    assert peers == {p.address for p in cluster.primaries()}  # each GET by its slot's node
    first = cluster.startup_nodes[0]
    assert {x.labels["server_address"] for x in s["smartcache_redirects_total"]} == {first[0]}


def test_autopipelining_batches_are_counted(redis_standalone: Any) -> None:
    """100 concurrent GETs of an asyncio client leave in a few socket writes: the counters
    show the batching (commands / writes), in Prometheus and OpenTelemetry alike."""
    import asyncio

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from smartcache import AsyncSmartClient

    registry = prometheus_client.CollectorRegistry()
    reader = InMemoryMetricReader()

    async def run() -> tuple[dict[str, list[Any]], Any]:
        c = AsyncSmartClient.from_url(
            redis_standalone.url,
            prometheus_registry=registry,
            meter_provider=MeterProvider(metric_readers=[reader]),
        )
        await c.set("prom:batch", "v")
        assert await asyncio.gather(*[c.get("prom:batch") for _ in range(100)]) == [b"v"] * 100
        scraped, collected = scrape(registry), reader.get_metrics_data()  # while open
        await c.aclose()
        return scraped, collected

    s, collected = asyncio.run(run())
    pool = f"127.0.0.1:{redis_standalone.port}"
    commands = sample(
        s, "smartcache_autopipeline_commands_total", db_client_connection_pool_name=pool
    )
    writes = sample(s, "smartcache_autopipeline_writes_total", db_client_connection_pool_name=pool)
    assert commands >= 101  # the SET, the GETs (and the client's own first INFO)
    assert writes <= commands / 10  # batched: a handful of writes, not one per command
    otel = {
        m.name: m.data.data_points[0].value
        for rm in collected.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name.startswith("smartcache.autopipeline.")
    }
    assert otel == {
        "smartcache.autopipeline.writes": writes,
        "smartcache.autopipeline.commands": commands,
    }
