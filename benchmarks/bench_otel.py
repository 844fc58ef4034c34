"""The cost of metrics (OpenTelemetry, Prometheus), in one run on one local server.

    .venv/bin/python -m benchmarks.bench_otel [--n 30000] [--rounds 5]

Sequential GET (sync) and 100 concurrent GETs (asyncio, ``gather``), each measured
for: redis-py, smartcache with metrics off (the default), smartcache with OpenTelemetry
metrics on (the SDK's ``MeterProvider`` and an in-memory reader: the record path an
application pays, whatever exporter it uses), and smartcache with Prometheus collectors
(``prometheus_registry=``: the local aggregation; a scrape costs nothing per command),
and smartcache with OpenTelemetry spans (``tracer_provider=``, the SDK's batch processor).
Rounds are interleaved and the best of each kept; ratios are against smartcache with
metrics off.

Metrics off adds nothing to a command's path: the timed ``execute_command`` is an
instance attribute set only when a meter provider is given (so "off" is the client as
it is without metrics); pipelines check one attribute.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import redis
import redis.asyncio

from smartcache import AsyncSmartClient, SmartClient
from smartcache.testing import Standalone


def provider() -> Any:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    return MeterProvider(metric_readers=[InMemoryMetricReader()])


def tracer() -> Any:
    """The SDK's tracer with its batch processor and an exporter that drops the batches
    (an exporter's network cost is outside the client; keeping every span in memory, as
    the in-memory exporter does, would measure the garbage collector instead)."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Dropped(SpanExporter):
        def export(self, spans: Any) -> Any:
            return SpanExportResult.SUCCESS

    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Dropped()))
    return provider


def registry() -> Any:
    from prometheus_client import CollectorRegistry

    return CollectorRegistry()


def sequential(client: Any, n: int) -> tuple[float, float]:
    """Wall and CPU (this process, every thread: a drainer's work counts) µs per GET."""
    t, c = time.perf_counter(), time.process_time()
    for _ in range(n):
        client.get("bench:otel")
    return (time.perf_counter() - t) / n * 1e6, (time.process_time() - c) / n * 1e6


async def concurrent(client: Any, n: int, width: int = 100) -> float:
    rounds = max(1, n // width)
    t = time.perf_counter()
    for _ in range(rounds):
        await asyncio.gather(*[client.get("bench:otel") for _ in range(width)])
    return (time.perf_counter() - t) / (rounds * width) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with Standalone() as server:
        url = server.url
        sync = {
            "redis-py": redis.Redis.from_url(url),
            "smartcache, metrics off": SmartClient.from_url(url),
            "smartcache, metrics on": SmartClient.from_url(url, meter_provider=provider()),
            "smartcache, prometheus": SmartClient.from_url(url, prometheus_registry=registry()),
            "smartcache, otel spans": SmartClient.from_url(url, tracer_provider=tracer()),
        }
        sync["redis-py"].set("bench:otel", "x" * 100)
        best = {k: float("inf") for k in sync}
        cpu = {k: float("inf") for k in sync}
        for _ in range(args.rounds):
            for name, client in sync.items():
                wall, spent = sequential(client, args.n)
                best[name] = min(best[name], wall)
                cpu[name] = min(cpu[name], spent)
        print("sequential GET, sync (us per call, best of rounds; wall, then CPU of the process):")
        off, off_cpu = best["smartcache, metrics off"], cpu["smartcache, metrics off"]
        for name, us in best.items():
            print(
                f"  {name:28s} {us:8.2f}  ({us / off:.3f}x)   CPU {cpu[name]:7.2f} "
                f"({cpu[name] / off_cpu:.3f}x of metrics off)"
            )

        async def run() -> dict[str, float]:
            clients = {
                "redis-py": redis.asyncio.Redis.from_url(url),
                "smartcache, metrics off": AsyncSmartClient.from_url(url),
                "smartcache, metrics on": AsyncSmartClient.from_url(url, meter_provider=provider()),
                "smartcache, prometheus": AsyncSmartClient.from_url(
                    url, prometheus_registry=registry()
                ),
                "smartcache, otel spans": AsyncSmartClient.from_url(url, tracer_provider=tracer()),
            }
            out = {k: float("inf") for k in clients}
            for _ in range(args.rounds):
                for name, client in clients.items():
                    out[name] = min(out[name], await concurrent(client, args.n))
            for client in clients.values():
                await client.aclose()
            return out

        best = asyncio.run(run())
        print("100 concurrent GETs, asyncio (us per GET, best of rounds):")
        off = best["smartcache, metrics off"]
        for name, us in best.items():
            print(f"  {name:28s} {us:8.2f}  ({us / off:.3f}x of metrics off)")


if __name__ == "__main__":
    main()
