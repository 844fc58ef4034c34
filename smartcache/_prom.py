"""Prometheus collectors (``smartcache[prometheus]``), fed by smartcache's own aggregation.

``SmartClient(..., prometheus_registry=registry)`` (``True``: prometheus-client's default
``REGISTRY``). A command then adds its duration to a local histogram (a bisect and two
increments under a lock, well under a microsecond); a scrape reads the histograms and
``client.stats()`` of every client registered on that registry. One collector per
registry serves all its clients; series with the same labels (two clients of one
server) are summed, as a process-wide view should be.

Why not the OpenTelemetry Prometheus exporter: it goes through the OpenTelemetry SDK,
whose ``Histogram.record`` costs ~7 µs of CPU per command in Python (see
docs/benchmarks.md). The names follow the OpenTelemetry conventions as that exporter
spells them (``db_client_operation_duration_seconds``, dots as underscores), so dashboards
work with either.
"""

from __future__ import annotations

import inspect
import threading
import weakref
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import Any

from smartcache._metrics import Timed
from smartcache._otel import (
    _CACHE_FIELDS,
    _WRITE_BEHIND_FIELDS,
    _WRITE_BEHIND_GAUGES,
    DURATION_BUCKETS,
    _error_type,
    _operation,
    _status_code,
    scaled,
)
from smartcache.exceptions import ConfigurationError

__all__ = ["LocalHistogram", "register"]

_INSTALL = "prometheus_registry= needs prometheus-client: pip install 'smartcache[prometheus]'"

_LABELS = (
    "db_system_name",
    "db_operation_name",
    "db_namespace",
    "server_address",
    "server_port",
    "error_type",
    "db_response_status_code",
    "db_operation_batch_size",
    "network_peer_address",
    "network_peer_port",
)


_Key = tuple[Any, str, str, int, str | None]


class LocalHistogram(Timed):
    """Durations by operation and outcome, in the conventions' buckets (seconds)."""

    def __init__(
        self, *, server_address: str, server_port: int, namespace: str, threaded: bool = True
    ) -> None:
        self._lock = threading.Lock()
        if not threaded:
            # An asyncio client records from its event loop's thread only: no lock on the
            # command path (a scrape from another thread copies under the GIL; a sum may
            # trail its counts by the one observation being added).
            self.finish = self._finish_one_thread  # type: ignore[method-assign]
        #: (name, error, status code, batch size, peer) -> counts per bucket, [sum]
        self._series: dict[_Key, _Series] = {}
        self._base = ("redis", namespace, server_address, str(server_port))
        #: pool (node address) -> [count per bucket (+inf last)], [sum]: create times
        self._created: dict[str, _Series] = {}
        #: the same for the waits for a connection
        self._waits: dict[str, _Series] = {}

    def waited(self, address: str, seconds: float) -> None:
        """A wait for a pooled connection."""
        with self._lock:
            _observe(self._waits, address, seconds)

    def waits(self) -> list[tuple[str, list[int], float]]:
        """``(pool address, counts per bucket, sum)`` of the waits (copies)."""
        with self._lock:
            return _copies(self._waits)

    def connected(self, address: str, seconds: float) -> None:
        """A pooled connection's create time."""
        with self._lock:
            _observe(self._created, address, seconds)

    def created(self) -> list[tuple[str, list[int], float]]:
        """``(pool address, counts per bucket, sum)`` of the create times (copies)."""
        with self._lock:
            return _copies(self._created)

    def record(
        self, name: Any, seconds: float, error: BaseException | None, peer: str | None = None
    ) -> None:
        """One operation's duration."""
        key = (name, "", "", 0, peer) if error is None else _error_key(name, error, 0, peer)
        with self._lock:
            _observe(self._series, key, seconds)

    def _finish_one_thread(
        self,
        handle: Any,
        name: Any,
        peer: str | None,
        seconds: float,
        error: BaseException | None,
    ) -> None:
        key = (name, "", "", 0, peer) if error is None else _error_key(name, error, 0, peer)
        series = self._series.get(key)
        if series is None:
            with self._lock:
                series = self._series.setdefault(key, _empty())
        series[0][bisect_left(DURATION_BUCKETS, seconds)] += 1
        series[1][0] += seconds

    def record_batch(
        self, transaction: bool, size: int, seconds: float, error: BaseException | None
    ) -> None:
        """A pipeline's duration, as one operation."""
        name = "MULTI" if transaction else "PIPELINE"
        batch = size if size >= 2 else 0
        key = (name, "", "", batch, None) if error is None else _error_key(name, error, batch, None)
        with self._lock:
            _observe(self._series, key, seconds)

    def series(self) -> list[tuple[tuple[str, ...], list[int], float]]:
        """``(labels, counts per bucket, sum)`` of every series (copies)."""
        with self._lock:
            items = _copies(self._series)
        out: list[tuple[tuple[str, ...], list[int], float]] = []
        for (name, error, code, batch, peer), counts, total in items:
            system, namespace, address, port = self._base
            peer_host, _, peer_port = (peer or "").rpartition(":")
            labels = (
                system,
                _operation(name),
                namespace,
                address,
                port,
                error,
                code,
                str(batch) if batch else "",
                peer_host,
                peer_port,
            )
            out.append((labels, counts, total))
        return out


_Series = tuple[list[int], list[float]]


def _empty() -> _Series:
    """No observation yet: a count per bucket (+Inf last) and the sum."""
    return [0] * (len(DURATION_BUCKETS) + 1), [0.0]


def _observe(table: dict[Any, _Series], key: Any, seconds: float) -> None:
    """Add one observation to ``table[key]`` (the caller holds the lock)."""
    series = table.get(key)
    if series is None:
        series = table[key] = _empty()
    series[0][bisect_left(DURATION_BUCKETS, seconds)] += 1
    series[1][0] += seconds


def _copies(table: dict[Any, _Series]) -> list[tuple[Any, list[int], float]]:
    """``(key, counts per bucket, sum)`` of each series (the caller holds the lock)."""
    return [(k, list(c), s[0]) for k, (c, s) in table.items()]


def _merge(
    into: dict[tuple[str, ...], tuple[list[int], float]],
    key: tuple[str, ...],
    counts: list[int],
    total: float,
) -> None:
    """Sum a series into ``into`` (equal series of several clients)."""
    before = into.get(key)
    if before is None:
        into[key] = (counts, total)
    else:
        into[key] = ([a + b for a, b in zip(before[0], counts, strict=True)], before[1] + total)


def _cumulative(bounds: list[str], counts: list[int]) -> list[tuple[str, int]]:
    """Per-bucket counts as Prometheus's cumulative ``le`` buckets."""
    running, buckets = 0, []
    for bound, count in zip(bounds, counts, strict=True):
        running += count
        buckets.append((bound, running))
    return buckets


def _error_key(
    name: Any, error: BaseException, batch: int, peer: str | None
) -> tuple[Any, str, str, int, str | None]:
    return (name, _error_type(error), _status_code(error) or "", batch, peer)


# -- the collector: one per registry, for every client registered on it --------------------
_collectors: weakref.WeakKeyDictionary[Any, _Collector] = weakref.WeakKeyDictionary()
_collectors_lock = threading.Lock()


def register(client: Any, registry: Any) -> LocalHistogram:
    """Aggregate ``client``'s durations locally and serve them (with its stats) to
    ``registry`` (``True``: the default one)."""
    try:
        import prometheus_client  # noqa: PLC0415  # imported only when asked for
    except ImportError as exc:
        raise ConfigurationError(_INSTALL) from exc
    if registry is True:
        registry = prometheus_client.REGISTRY
    if not hasattr(registry, "register"):
        raise ConfigurationError(
            f"prometheus_registry={registry!r} is not a prometheus_client CollectorRegistry "
            "(pass one, or True for the default registry)"
        )
    settings = client._settings
    histogram = LocalHistogram(
        server_address=client._server_id[0],
        server_port=client._server_id[1],
        namespace=str(settings.db),
        threaded=not inspect.iscoroutinefunction(client.execute_command),
    )
    with _collectors_lock:
        collector = _collectors.get(registry)
        if collector is None:
            collector = _collectors[registry] = _Collector()
            registry.register(collector)
    collector.add(client, histogram)
    return histogram


class _Collector:
    """A prometheus-client custom collector over the clients registered with it."""

    def __init__(self) -> None:
        self._clients: weakref.WeakKeyDictionary[Any, LocalHistogram] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def add(self, client: Any, histogram: LocalHistogram) -> None:
        with self._lock:
            self._clients[client] = histogram

    def describe(self) -> list[Any]:
        return []  # names are checked at collection; several clients share them

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (  # noqa: PLC0415  # only when on
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        with self._lock:
            clients = list(self._clients.items())
        merged: dict[tuple[str, ...], tuple[list[int], float]] = {}
        counters: dict[str, dict[tuple[str, ...], float]] = {}
        for client, histogram in clients:
            for labels, counts, total in histogram.series():
                _merge(merged, labels, counts, total)
            address = (client._server_id[0], str(client._server_id[1]))
            for name, extra, value in _counter_values(client.stats()):
                key = ("redis", *address, *extra)
                series = counters.setdefault(name, {})
                if _COUNTERS[name][2] == "measure":  # one queue measured by several clients
                    series[key] = max(series.get(key, 0.0), value)
                else:
                    series[key] = series.get(key, 0.0) + value
        duration = HistogramMetricFamily(
            "db_client_operation_duration_seconds",
            "Duration of database client operations.",
            labels=list(_LABELS),
        )
        bounds = [_bound(b) for b in DURATION_BUCKETS] + ["+Inf"]
        for labels, (counts, total) in merged.items():
            duration.add_metric(list(labels), _cumulative(bounds, counts), total)
        yield duration
        pool_series: dict[tuple[str, ...], tuple[int, int, int, int | None]] = {}
        piped: dict[tuple[str, ...], tuple[int, int]] = {}
        for client, _ in clients:
            address = (client._server_id[0], str(client._server_id[1]))
            for u in client.pool_usage():
                key = ("redis", *address, u.address)
                if u.writes:
                    writes, commands = piped.get(key, (0, 0))
                    piped[key] = (writes + u.writes, commands + u.commands)
                idle, used, pending, limit = pool_series.get(key, (0, 0, 0, None))
                pool_series[key] = (
                    idle + u.idle,
                    used + u.used,
                    pending + u.pending,
                    u.max if limit is None else limit + (u.max or 0),
                )
        base_names = [
            "db_system_name",
            "server_address",
            "server_port",
            "db_client_connection_pool_name",
        ]
        states = GaugeMetricFamily(
            "db_client_connection_count",
            "The number of connections that are currently in the state described.",
            labels=[*base_names, "db_client_connection_state"],
        )
        pending_family = GaugeMetricFamily(
            "db_client_connection_pending_requests",
            "The number of current pending requests for an open connection.",
            labels=base_names,
        )
        max_family = GaugeMetricFamily(
            "db_client_connection_max",
            "The maximum number of open connections allowed.",
            labels=base_names,
        )
        for key, (idle, used, pending, limit) in pool_series.items():
            states.add_metric([*key, "idle"], idle)
            states.add_metric([*key, "used"], used)
            pending_family.add_metric(list(key), pending)
            if limit is not None:
                max_family.add_metric(list(key), limit)
        yield states
        yield pending_family
        writes_family = CounterMetricFamily(
            "smartcache_autopipeline_writes",
            "Socket writes of an asyncio client's shared, auto-pipelined connection.",
            labels=base_names,
        )
        commands_family = CounterMetricFamily(
            "smartcache_autopipeline_commands",
            "Commands those writes carried (commands / writes: the batch size).",
            labels=base_names,
        )
        for key, (writes, commands) in piped.items():
            writes_family.add_metric(list(key), writes)
            commands_family.add_metric(list(key), commands)
        yield writes_family
        yield commands_family
        for family_name, text, read in (
            (
                "db_client_connection_create_time_seconds",
                "The time it took to create a new connection.",
                LocalHistogram.created,
            ),
            (
                "db_client_connection_wait_time_seconds",
                "The time it took to obtain an open connection from the pool.",
                LocalHistogram.waits,
            ),
        ):
            yield _pool_histogram(family_name, text, clients, read, bounds)
        yield max_family
        for name, series in counters.items():
            help_text, extra_labels, kind = _COUNTERS[name]
            names = ["db_system_name", "server_address", "server_port", *extra_labels]
            family: Any
            if kind in ("gauge", "measure"):
                family = GaugeMetricFamily(name, help_text, labels=names)
            else:
                family = CounterMetricFamily(name, help_text, labels=names)
            for key, value in series.items():
                family.add_metric(list(key), value)
            yield family


def _pool_histogram(
    name: str,
    text: str,
    clients: list[tuple[Any, LocalHistogram]],
    read: Callable[[LocalHistogram], list[tuple[str, list[int], float]]],
    bounds: list[str],
) -> Any:
    """One pool histogram family over every client (equal series summed)."""
    from prometheus_client.core import HistogramMetricFamily  # noqa: PLC0415  # only when on

    family = HistogramMetricFamily(
        name,
        text,
        labels=[
            "db_system_name",
            "server_address",
            "server_port",
            "db_client_connection_pool_name",
        ],
    )
    merged: dict[tuple[str, ...], tuple[list[int], float]] = {}
    for client, histogram in clients:
        server_host, server_port = client._server_id[0], str(client._server_id[1])
        for pool_address, counts, total in read(histogram):
            _merge(merged, ("redis", server_host, server_port, pool_address), counts, total)
    for key, (counts, total) in merged.items():
        family.add_metric(list(key), _cumulative(bounds, counts), total)
    return family


def _bound(value: float) -> str:
    return repr(float(value))


def _prom_gauge_name(name: str, unit: str) -> str:
    """``smartcache_write_behind_<name>`` with dots as underscores, ``_seconds`` for time."""
    return "smartcache_write_behind_" + name.replace(".", "_") + ("_seconds" if unit == "s" else "")


_COUNTERS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "db_client_connection_timeouts": (
        "Connection timeouts trying to obtain a connection from the pool.",
        (),
        "counter",
    ),
    "smartcache_redirects": (
        "MOVED and ASK redirects followed.",
        ("smartcache_redirect_kind",),
        "counter",
    ),
    "smartcache_retries": (
        "Attempts re-sent after a failure, by reason.",
        ("smartcache_retry_reason",),
        "counter",
    ),
    "smartcache_ambiguous_failures": ("AmbiguousCommandError raised.", (), "counter"),
    "smartcache_topology_refreshes": (
        "Cluster slot maps installed.",
        ("smartcache_refresh_cause",),
        "counter",
    ),
    "smartcache_topology_nodes_added": ("Cluster nodes that appeared.", (), "counter"),
    "smartcache_topology_nodes_removed": ("Cluster nodes that left.", (), "counter"),
    "smartcache_sentinel_failovers": ("Sentinel primary switches followed.", (), "counter"),
    "smartcache_sentinel_write_fence_time_seconds": (
        "Time writes were held for failovers.",
        (),
        "counter",
    ),
    **{
        f"smartcache_cache_{field}": (text, ("smartcache_cache_name",), "counter")
        for field, _, text in _CACHE_FIELDS
    },
    **{
        f"smartcache_write_behind_{field}": (text, ("smartcache_write_behind_name",), "counter")
        for field, _, text in _WRITE_BEHIND_FIELDS
    },
    **{
        _prom_gauge_name(name, unit): (text, ("smartcache_write_behind_name",), "measure")
        for name, _, unit, _, text in _WRITE_BEHIND_GAUGES
    },
    "smartcache_near_cache_hits": ("Reads served by the near cache.", (), "counter"),
    "smartcache_near_cache_misses": ("Near-cache reads sent to the server.", (), "counter"),
    "smartcache_near_cache_invalidations": ("Entries invalidated.", (), "counter"),
    "smartcache_near_cache_evictions": ("Entries evicted by the limits.", (), "counter"),
    "smartcache_near_cache_expirations": ("Entries dropped at their expiry.", (), "counter"),
    "smartcache_near_cache_flushes": (
        "Entries dropped at once, by reason.",
        ("smartcache_flush_reason",),
        "counter",
    ),
    "smartcache_near_cache_entries": ("Entries in the near cache.", (), "gauge"),
    "smartcache_near_cache_size_bytes": ("Bytes held by the near cache.", (), "gauge"),
}


def _counter_values(s: Any) -> Iterator[tuple[str, tuple[str, ...], float]]:
    yield "db_client_connection_timeouts", (), s.pool_timeouts
    yield "smartcache_redirects", ("moved",), s.moved
    yield "smartcache_redirects", ("ask",), s.ask
    for reason, n in s.retries.items():
        yield "smartcache_retries", (reason,), n
    yield "smartcache_ambiguous_failures", (), s.ambiguous
    for cause, n in s.refreshes.items():
        yield "smartcache_topology_refreshes", (cause,), n
    yield "smartcache_topology_nodes_added", (), s.nodes_added
    yield "smartcache_topology_nodes_removed", (), s.nodes_removed
    yield "smartcache_sentinel_failovers", (), s.failovers
    yield "smartcache_sentinel_write_fence_time_seconds", (), s.write_fence_seconds
    for name, counts in s.caches.items():
        for field, _, _ in _CACHE_FIELDS:
            yield f"smartcache_cache_{field}", (name,), counts.get(field, 0)
    for name, counts in s.write_behind.items():
        for field, _, _ in _WRITE_BEHIND_FIELDS:
            yield f"smartcache_write_behind_{field}", (name,), counts.get(field, 0)
        for gauge, field, unit, per, _ in _WRITE_BEHIND_GAUGES:
            if field in counts:
                yield _prom_gauge_name(gauge, unit), (name,), scaled(counts[field], per)
    near = s.near_cache
    if near is not None:
        yield "smartcache_near_cache_hits", (), near.hits
        yield "smartcache_near_cache_misses", (), near.misses
        yield "smartcache_near_cache_invalidations", (), near.invalidations
        yield "smartcache_near_cache_evictions", (), near.evictions
        yield "smartcache_near_cache_expirations", (), near.expirations
        for reason, n in near.flushes.items():
            yield "smartcache_near_cache_flushes", (reason,), n
        yield "smartcache_near_cache_entries", (), near.entries
        yield "smartcache_near_cache_size_bytes", (), near.bytes
