"""Our Prometheus collector against the OpenTelemetry Prometheus exporter, on one client
fed by both (differential): every series, its name, its label names and its value, must
be what that exporter makes of the OpenTelemetry metrics, so dashboards and alerts work
with either. Real servers: a cluster with a live slot migration (redirects, refreshes),
the near cache, pipelines, an error reply; ``@cached`` and write-behind; sync and async."""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

import pytest

from smartcache.testing import Cluster, Standalone

prometheus_client = pytest.importorskip("prometheus_client")
parser = pytest.importorskip("prometheus_client.parser")
otel_sdk = pytest.importorskip("opentelemetry.sdk.metrics")
exporter = pytest.importorskip("opentelemetry.exporter.prometheus")

pytestmark = pytest.mark.timeout(120)

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def both(**kwargs: Any) -> tuple[dict[str, Any], Any, Any]:
    """Client kwargs feeding our collector (``ours``) and the exporter (``theirs``)."""
    ours, theirs = prometheus_client.CollectorRegistry(), prometheus_client.CollectorRegistry()
    reader = exporter.PrometheusMetricReader(
        disable_target_info=True, scope_info_enabled=False, registry=theirs
    )
    provider = otel_sdk.MeterProvider(metric_readers=[reader])
    return {"prometheus_registry": ours, "meter_provider": provider, **kwargs}, ours, theirs


def series(registry: Any) -> Series:
    """Every sample; a label with an empty value is dropped (to Prometheus it is the same
    as no label, which is how the exporter writes an attribute a series does not have)."""
    text = prometheus_client.generate_latest(registry).decode()
    return {
        (s.name, frozenset((k, v) for k, v in s.labels.items() if v != "")): s.value
        for family in parser.text_string_to_metric_families(text)
        for s in family.samples
        if not s.name.endswith("_created")
    }


def assert_same(ours: Series, theirs: Series) -> None:
    def names(s: Series) -> dict[str, set[frozenset[str]]]:
        out: dict[str, set[frozenset[str]]] = {}
        for name, labels in s:
            out.setdefault(name, set()).add(frozenset(k for k, _ in labels))
        return out

    mine, ref = names(ours), names(theirs)
    diff = {
        n: (sorted(map(sorted, mine.get(n, ()))), sorted(map(sorted, ref.get(n, ()))))
        for n in mine.keys() | ref.keys()
        if mine.get(n) != ref.get(n)
    }
    assert not diff, "\n".join(f"{n}: ours {o}, exporter {t}" for n, (o, t) in diff.items())
    assert set(ours) == set(theirs)  # the same series, label values included
    for key, value in ours.items():
        if key[0].endswith("_sum"):  # float sums of the same durations, in another order
            assert math.isclose(value, theirs[key], rel_tol=1e-9, abs_tol=1e-12), key
        else:
            assert value == theirs[key], key


def test_cluster_client_series_match_the_exporter(
    redis_cluster: Cluster, client_factory: Any
) -> None:
    from smartcache import NearCache

    kwargs, ours, theirs = both(near_cache=NearCache(max_entries=1000))
    c = client_factory(startup_nodes=redis_cluster.startup_nodes, **kwargs)
    keys = [f"names:{i}" for i in range(30)]
    for k in keys:
        c.set(k, "v")
        c.get(k)
        c.get(k)  # a near-cache hit
    c.lpush("names:list", 1)
    with pytest.raises(Exception, match="WRONGTYPE"):
        c.get("names:list")
    pipe = c.pipeline(transaction=False)
    for k in keys[:5]:
        pipe.get(k)
    pipe.execute()
    source, target = redis_cluster.primaries()[:2]
    moving = [s for s in redis_cluster.slots_of(source) if any(c.keyslot(k) == s for k in keys)]
    redis_cluster.migrate_slots(source, target, slots=moving[:3])
    assert all(c.get(k) == b"v" for k in keys)
    assert c.stats().moved >= 1  # the redirect and refresh series are there to compare
    a, b = series(ours), series(theirs)
    assert any(name == "smartcache_redirects_total" for name, _ in a)
    assert any(name == "smartcache_near_cache_hits_total" for name, _ in a)
    assert_same(a, b)


def test_cache_and_write_behind_series_match_the_exporter(
    redis_standalone: Standalone, tmp_path: Path
) -> None:
    from smartcache import SmartClient
    from smartcache.cache import SQLiteStore, WriteBehind, cached

    kwargs, ours, theirs = both()
    c = SmartClient.from_url(redis_standalone.url, **kwargs)
    store = SQLiteStore(str(tmp_path / "app.db"))
    try:

        @cached(client=c, ttl=60, namespace=f"n{uuid.uuid4().hex[:6]}")
        def double(x: int) -> int:
            return 2 * x

        assert [double(1), double(1), double(2)] == [2, 2, 4]
        with WriteBehind(c, store, name=f"q{uuid.uuid4().hex[:6]}", probe_interval=3600) as wb:
            for i in range(5):
                wb.set(f"k{i}", i)
            wb.flush(timeout=20)
            assert wb.flusher is not None
            wb.flusher.probe()
        # scraped once the flusher stopped: a round between the two scrapes would differ
        a, b = series(ours), series(theirs)
        assert any(name == "smartcache_cache_hits_total" for name, _ in a)
        assert any(name == "smartcache_write_behind_lag_seconds" for name, _ in a)
        assert_same(a, b)
    finally:
        c.close()
        store.close()
