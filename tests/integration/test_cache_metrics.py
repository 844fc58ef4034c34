"""A real ``@cached`` stampede, seen through ``client.stats()``, OpenTelemetry's in-memory
reader and a Prometheus scrape: one load for many callers, and the same counts in all
three; sync (threads) and async (tasks)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from smartcache.testing import Standalone
from tests.integration._cache_db import CountingDB
from tests.integration._cache_world import World

otel_sdk = pytest.importorskip("opentelemetry.sdk.metrics")
export = pytest.importorskip("opentelemetry.sdk.metrics.export")
prometheus_client = pytest.importorskip("prometheus_client")
parser = pytest.importorskip("prometheus_client.parser")

USER = {"id": 1, "name": "user-1"}
FIELDS = ("hits", "misses", "loads", "lock_waits", "stale_serves", "errors")


def otel_values(reader: Any, name: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name.startswith("smartcache.cache."):
                    for p in m.data.data_points:
                        if p.attributes["smartcache.cache.name"] == name:
                            out[m.name.removeprefix("smartcache.cache.")] = p.value
    return out


def prom_values(registry: Any, name: str) -> dict[str, float]:
    text = prometheus_client.generate_latest(registry).decode()
    out: dict[str, float] = {}
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            if s.name.startswith("smartcache_cache_") and s.labels.get("cache") == name:
                field = s.name.removeprefix("smartcache_cache_").removesuffix("_total")
                out[field] = s.value
    return out


def test_a_stampede_in_stats_otel_and_prometheus(
    world: World, redis_standalone: Standalone, tmp_path: Path
) -> None:
    reader = export.InMemoryMetricReader()
    registry = prometheus_client.CollectorRegistry()
    client = world.client(
        url=redis_standalone.url,
        meter_provider=otel_sdk.MeterProvider(metric_readers=[reader]),
        prometheus_registry=registry,
    )
    db = CountingDB(tmp_path / "db.sqlite", delay=0.1)

    @world.cached(client=client, namespace=f"m{uuid.uuid4().hex[:8]}", key="hot:{user_id}")
    def get_user(user_id: int) -> Any:
        return db.get_user(user_id)

    n = world.callers
    assert world.concurrently([(get_user, 1)] * n) == [USER] * n
    assert get_user(1) == USER  # a plain hit afterwards
    assert db.logged_queries() == 1

    name = f"{__name__}.test_a_stampede_in_stats_otel_and_prometheus.<locals>.get_user"
    counts = world.raw(client).stats().caches[name]
    assert counts["loads"] == 1  # one load for all the callers
    assert counts["hits"] >= 1 and counts["misses"] >= 1
    assert counts == get_user.stats()
    otel = otel_values(reader, name)
    prom = prom_values(registry, name)
    for field in FIELDS:
        assert otel[field] == counts[field], field
        assert prom[field] == counts[field], field


def test_write_behind_flusher_counts_in_stats_otel_and_prometheus(
    world: World, redis_standalone: Standalone, tmp_path: Path
) -> None:
    from smartcache.cache import SQLiteStore

    reader = export.InMemoryMetricReader()
    registry = prometheus_client.CollectorRegistry()
    client = world.client(
        url=redis_standalone.url,
        meter_provider=otel_sdk.MeterProvider(metric_readers=[reader]),
        prometheus_registry=registry,
    )
    db = SQLiteStore(str(tmp_path / "app.db"))
    name = f"wb{uuid.uuid4().hex[:8]}"
    try:
        with world.write_behind(client, db, name=name, ttl=60) as wb:
            for i in range(20):
                wb.set(f"user:{i}", {"id": i})
            wb.flush(timeout=20)
            counts = world.raw(client).stats().write_behind[name]
            assert counts["applied"] >= 1 and counts["acked"] == 20 and counts["dead"] == 0
            values: dict[str, float] = {}
            for rm in reader.get_metrics_data().resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        if m.name.startswith("smartcache.write_behind."):
                            for p in m.data.data_points:
                                if p.attributes["smartcache.write_behind.name"] == name:
                                    values[m.name.rsplit(".", 1)[1]] = p.value
            text = prometheus_client.generate_latest(registry).decode()
            acked = [
                s.value
                for f in parser.text_string_to_metric_families(text)
                for s in f.samples
                if s.name == "smartcache_write_behind_acked_total" and s.labels["queue"] == name
            ]
            for field in ("rounds", "applied", "acked", "dead", "store_errors", "redis_errors"):
                assert values[field] <= world.raw(client).stats().write_behind[name][field]
            assert values["acked"] == 20 and acked == [20]
    finally:
        db.close()
