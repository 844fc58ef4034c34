"""A real ``@cached`` stampede, seen through ``client.stats()``, OpenTelemetry's in-memory
reader and a Prometheus scrape: one load for many callers, and the same counts in all
three; sync (threads) and async (tasks)."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from smartcache.cache import SQLiteStore
from smartcache.cache._wb_core import FlushOptions
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
            if (
                s.name.startswith("smartcache_cache_")
                and s.labels.get("smartcache_cache_name") == name
            ):
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
        with world.write_behind(client, db, name=name, ttl=60, probe_interval=0.05) as wb:
            for i in range(20):
                wb.set(f"user:{i}", {"id": i})
            wb.flush(timeout=20)
            # flush() returns once the queue shows the changes acknowledged; the flusher's
            # thread counts its round just after, and measures its queue by itself, every
            # probe_interval: wait for both
            deadline = time.monotonic() + 10
            while True:
                counts = world.raw(client).stats().write_behind[name]
                if counts["acked"] >= 20 and counts.get("backlog", -1) == 0:
                    break
                assert time.monotonic() < deadline, f"the flusher never counted it all: {counts}"
                time.sleep(0.01)  # polls a condition (the async flusher runs in its loop's thread)
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
                if s.name == "smartcache_write_behind_acked_total"
                and s.labels["smartcache_write_behind_name"] == name
            ]
            for field in ("rounds", "applied", "acked", "dead", "store_errors", "redis_errors"):
                assert values[field] <= world.raw(client).stats().write_behind[name][field]
            assert values["acked"] == 20 and acked == [20]
    finally:
        db.close()


class _OutageStore(SQLiteStore):
    """A SQLite database that is down until ``up`` is set and always refuses one key."""

    def __init__(self, path: Path, poison: str) -> None:
        super().__init__(str(path))
        self.poison = poison
        self.up = threading.Event()

    def write_many(self, items: Any) -> None:
        if not self.up.is_set():
            raise ConnectionError("database unreachable")
        if any(item.key == self.poison for item in items):
            raise ValueError(f"constraint violated by {self.poison}")
        super().write_many(items)

    def ping(self) -> bool:
        if not self.up.is_set():
            raise ConnectionError("database unreachable")
        return super().ping()


def _queue_metrics(reader: Any, registry: Any, name: str) -> tuple[dict[str, float], ...]:
    otel: dict[str, float] = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                if m.name in (
                    "smartcache.write_behind.queue.depth",
                    "smartcache.write_behind.dead_letters",
                    "smartcache.write_behind.lag",
                ):
                    (point,) = [
                        p
                        for p in m.data.data_points
                        if p.attributes["smartcache.write_behind.name"] == name
                    ]
                    assert m.unit == ("s" if m.name.endswith(".lag") else "{change}")
                    otel[m.name.removeprefix("smartcache.write_behind.")] = point.value
    prom: dict[str, float] = {}
    text = prometheus_client.generate_latest(registry).decode()
    for family in parser.text_string_to_metric_families(text):
        for s in family.samples:
            if s.name in (
                "smartcache_write_behind_queue_depth",
                "smartcache_write_behind_dead_letters",
                "smartcache_write_behind_lag_seconds",
            ):
                assert family.type == "gauge"
                if s.labels["smartcache_write_behind_name"] == name:
                    prom[s.name.removeprefix("smartcache_write_behind_")] = s.value
    return otel, prom


def test_write_behind_queue_depth_lag_and_dead_letters_as_gauges(
    world: World, redis_standalone: Standalone, tmp_path: Path
) -> None:
    reader = export.InMemoryMetricReader()
    registry = prometheus_client.CollectorRegistry()
    client = world.client(
        url=redis_standalone.url,
        meter_provider=otel_sdk.MeterProvider(metric_readers=[reader]),
        prometheus_registry=registry,
    )
    db = _OutageStore(tmp_path / "app.db", poison="user:3")
    name = f"wb{uuid.uuid4().hex[:8]}"
    wb = world.write_behind(
        client,
        db,
        name=name,
        options=FlushOptions(max_attempts=2),
        max_backoff=0.2,
        probe_interval=3600,  # measured here only when the test asks
    )
    flusher = world.raw(wb).flusher
    try:
        otel, prom = _queue_metrics(reader, registry, name)
        assert otel == {} and prom == {}  # nothing measured yet: no made-up zeros
        started = time.time()
        wb.set("user:0", {"id": 0})
        first = time.time()  # the oldest change was queued between started and first
        for i in range(1, 10):
            wb.set(f"user:{i}", {"id": i})
        before = time.time()
        world.run(flusher.probe())  # the database is down: everything still queued
        after = time.time()
        counts = world.raw(client).stats().write_behind[name]
        assert counts["backlog"] == 10 and counts["dead_letters"] == 0
        assert (before - first) * 1000 - 2 <= counts["lag_ms"] <= (after - started) * 1000 + 2
        otel, prom = _queue_metrics(reader, registry, name)
        lag = counts["lag_ms"] / 1000
        assert otel == {"queue.depth": 10, "dead_letters": 0, "lag": lag}
        assert prom == {"queue_depth": 10, "dead_letters": 0, "lag_seconds": lag}

        db.up.set()
        wb.flush(timeout=30)  # returns once the poison change left the queue
        world.run(flusher.probe())
        deadline = time.monotonic() + 10
        while world.raw(client).stats().write_behind[name]["dead"] == 0:
            assert time.monotonic() < deadline, "the flusher never counted its dead letter"
            time.sleep(0.01)  # polls a condition: the flusher counts its round after flush()
        counts = world.raw(client).stats().write_behind[name]
        assert (counts["backlog"], counts["dead_letters"], counts["lag_ms"]) == (0, 1, 0)
        assert counts["dead"] == 1  # this flusher moved it
        otel, prom = _queue_metrics(reader, registry, name)
        assert otel == {"queue.depth": 0, "dead_letters": 1, "lag": 0}
        assert prom == {"queue_depth": 0, "dead_letters": 1, "lag_seconds": 0}
    finally:
        world.close_write_behind(wb, timeout=5)
        db.close()
