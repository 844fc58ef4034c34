"""OpenTelemetry spans on real servers, read back with the SDK's in-memory exporter: one
CLIENT span per command and per pipeline with the conventions' attributes, errors, the
redirects of a real slot migration as events, statements only on request and never with
values; sync and async."""

from __future__ import annotations

from typing import Any

import pytest

from smartcache.exceptions import ConfigurationError

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
in_memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
export = pytest.importorskip("opentelemetry.sdk.trace.export")
trace = pytest.importorskip("opentelemetry.trace")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def spans() -> Any:
    exporter = in_memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    return provider, exporter


def test_a_span_per_command_and_pipeline(
    redis_standalone: Any, client_factory: Any, spans: Any
) -> None:
    provider, exporter = spans
    c = client_factory(url=redis_standalone.url, tracer_provider=provider)
    parent_tracer = provider.get_tracer("test")
    c.set("trace:k", "s3cret-value")
    with parent_tracer.start_as_current_span("request") as parent:
        assert c.get("trace:k") == b"s3cret-value"
    c.lpush("trace:list", 1)
    with pytest.raises(Exception, match="WRONGTYPE"):
        c.get("trace:list")
    pipe = c.pipeline()
    pipe.set("trace:a", 1).incr("trace:a")
    pipe.execute()
    c.delete("trace:list")

    done = [
        s for s in exporter.get_finished_spans() if s.instrumentation_scope.name == "smartcache"
    ]
    names = [s.name for s in done]
    assert names == ["SET", "GET", "LPUSH", "GET", "MULTI", "DEL"]
    set_span, get_span, _, failed, multi, _ = done
    assert set_span.kind == trace.SpanKind.CLIENT
    assert dict(get_span.attributes) == {
        "db.system.name": "redis",
        "db.namespace": "0",
        "server.address": "127.0.0.1",
        "server.port": redis_standalone.port,
        "db.operation.name": "GET",
        "network.peer.address": "127.0.0.1",
        "network.peer.port": redis_standalone.port,
    }
    assert (
        get_span.parent is not None and get_span.parent.span_id == parent.get_span_context().span_id
    )
    assert failed.status.status_code == trace.StatusCode.ERROR
    assert failed.attributes["error.type"] == "redis.exceptions.ResponseError"
    assert failed.attributes["db.response.status_code"] == "WRONGTYPE"
    assert multi.attributes["db.operation.batch.size"] == 2
    assert all("db.query.text" not in s.attributes for s in done)  # not asked for


def test_statements_only_when_asked_and_never_values(
    redis_standalone: Any, client_factory: Any, spans: Any
) -> None:
    provider, exporter = spans
    c = client_factory(url=redis_standalone.url, tracer_provider=provider, trace_statements=True)
    c.set("trace:secret", "hunter2", ex=60)
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "SET"]
    assert span.attributes["db.query.text"] == "SET ? ? ? ?"
    text = repr([dict(s.attributes) for s in exporter.get_finished_spans()])
    assert "hunter2" not in text and "trace:secret" not in text


def test_a_wrong_tracer_provider_is_refused(redis_standalone: Any, client_factory: Any) -> None:
    with pytest.raises(ConfigurationError, match="TracerProvider"):
        client_factory(url=redis_standalone.url, tracer_provider=object())
    with pytest.raises(ConfigurationError, match="trace_statements must be True or False"):
        client_factory(url=redis_standalone.url, trace_statements="yes")


def test_redirects_of_a_real_migration_are_span_events(
    redis_topologies: Any, client_factory: Any, spans: Any
) -> None:
    provider, exporter = spans
    cluster = redis_topologies.cluster(primaries=3, replicas=0)
    c = client_factory(startup_nodes=cluster.startup_nodes, tracer_provider=provider)
    k = "{trace-move}k"
    c.set(k, "v")
    slot = c.keyslot(k)
    source = cluster.primary_of_slot(slot)
    target = next(p for p in cluster.primaries() if p is not source)
    with source.client() as src, target.client() as dst:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.node_id(source))
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.node_id(target))
        src.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", k)
        exporter.clear()
        assert c.get(k) == b"v"  # ASK, then ASKING + GET on the target
    (span,) = [s for s in exporter.get_finished_spans() if s.name == "GET"]
    (event,) = span.events
    assert event.name == "smartcache.redirect"
    assert dict(event.attributes) == {
        "smartcache.redirect.kind": "ask",
        "smartcache.redirect.target": target.address,
        "smartcache.redirect.slot": slot,
    }
