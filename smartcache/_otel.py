"""OpenTelemetry metrics, on the stable database semantic conventions (``smartcache[otel]``).

Off unless the client is given ``meter_provider=`` (or ``meter_provider=True`` for the
global one): then, and only then, ``opentelemetry`` is imported. When off a command pays
one attribute check (see :mod:`smartcache._metrics`).

Exported:

- ``db.client.operation.duration`` (histogram, seconds, the conventions' recommended
  buckets): one point per command (``db.operation.name`` = its name, upper-cased) and per
  pipeline (``PIPELINE``, or ``MULTI`` for a transaction, with
  ``db.operation.batch.size``); ``db.system.name="redis"``, ``db.namespace`` (the database
  index), ``server.address`` / ``server.port`` as configured; on failure ``error.type``
  (the exception's qualified class name) and ``db.response.status_code`` (the error
  reply's prefix: ``WRONGTYPE``, ``ERR``...).
- smartcache's own counters, observed from :meth:`SmartClient.stats` at each collection
  (no cost between collections): ``smartcache.redirects`` (``smartcache.redirect.kind``:
  ``moved``/``ask``), ``smartcache.retries`` (``smartcache.retry.reason``),
  ``smartcache.ambiguous_failures``, ``smartcache.topology.refreshes``
  (``smartcache.refresh.cause``), ``smartcache.topology.nodes_added`` / ``nodes_removed``,
  ``smartcache.sentinel.failovers``, ``smartcache.sentinel.write_fence.time`` and, with a
  near cache, ``smartcache.near_cache.*`` (hits, misses, invalidations, evictions,
  flushes by reason, entries, bytes).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import redis.exceptions as rx

from smartcache._metrics import Timed, peer_attributes, provider_from

__all__ = ["DURATION_BUCKETS", "Telemetry", "telemetry_from"]

#: marks a queued pool wait (not an operation) in :class:`Telemetry`'s queue
_WAIT = object()

#: the database conventions' advisory buckets for ``db.client.operation.duration``
DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0)


def telemetry_from(meter_provider: Any) -> Any:
    """The meter provider a client was given (``True``: the global one), or ``None``."""
    return provider_from(
        meter_provider, argument="meter_provider", method="get_meter", kind="MeterProvider"
    )


def _status_code(error: BaseException) -> str | None:
    """The error reply's prefix (``WRONGTYPE``...), or ``None`` for a transport error."""
    if not isinstance(error, rx.ResponseError):
        return None
    text = str(error)
    head = text.split(" ", 1)[0]
    return head if head.isupper() and head.isalpha() else "ERR"


def _operation(name: Any) -> str:
    text = name.decode(errors="replace") if isinstance(name, bytes) else str(name)
    return text.upper()


class Telemetry(Timed):
    """The instruments of one client."""

    def __init__(
        self,
        provider: Any,
        client: Any,
        *,
        server_address: str,
        server_port: int,
        namespace: str,
    ) -> None:
        from smartcache import __version__  # noqa: PLC0415  # the package imports this module

        meter = provider.get_meter("smartcache", __version__)
        self.duration = meter.create_histogram(
            "db.client.operation.duration",
            unit="s",
            description="Duration of database client operations.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),
        )
        self.create_time = meter.create_histogram(
            "db.client.connection.create_time",
            unit="s",
            description="The time it took to create a new connection.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),  # seconds, as ours
        )
        self.wait_time = meter.create_histogram(
            "db.client.connection.wait_time",
            unit="s",
            description="The time it took to obtain an open connection from the pool.",
            explicit_bucket_boundaries_advisory=list(DURATION_BUCKETS),  # seconds, as ours
        )
        self._base = {
            "db.system.name": "redis",
            "db.namespace": namespace,
            "server.address": server_address,
            "server.port": server_port,
        }
        self._by_name: dict[tuple[Any, str | None], dict[str, Any]] = {}
        self._pool_attrs: dict[str | None, dict[str, Any]] = {}
        #: (name, seconds, error, batch size) of operations not yet handed to the SDK
        self._pending: deque[tuple[Any, float, BaseException | None, int, str | None]] = deque()
        self._observe(meter, weakref.ref(client))
        self._start_drainer()
        os.register_at_fork(after_in_child=_restart_in_child(weakref.ref(self)))

    # -- recording: a command appends; the SDK's aggregation runs on a drainer thread ------
    # The SDK's Histogram.record costs ~7 us in Python (attribute cleaning and hashing),
    # more than a tenth of a network round trip. Appending costs ~0.1 us; the drainer
    # hands the values over every 50 ms, while the caller waits on its sockets, and every
    # collection drains first (the observable callbacks run before the histogram is read),
    # so a reader never misses an operation that completed before it collected.
    _BACKLOG_LIMIT = 100_000

    def _start_drainer(self) -> None:
        thread = threading.Thread(
            target=_drain_forever, args=(weakref.ref(self),), name="smartcache-otel", daemon=True
        )
        thread.start()

    def flush(self) -> None:
        """Hand every pending operation to the SDK now."""
        pending, record = self._pending, self._record_now
        while True:
            try:
                item = pending.popleft()
            except IndexError:
                return
            record(*item)

    def attributes(self, name: Any, peer: str | None = None) -> dict[str, Any]:
        """The attributes of a successful ``name`` served by ``peer`` (memoized)."""
        key = (name, peer)
        attrs = self._by_name.get(key)
        if attrs is None:
            attrs = {**self._base, "db.operation.name": _operation(name)}
            if peer is not None:
                attrs.update(peer_attributes(peer))
            self._by_name[key] = attrs
        return attrs

    def record(
        self, name: Any, seconds: float, error: BaseException | None, peer: str | None = None
    ) -> None:
        """One operation's duration (with its error, if it failed)."""
        pending = self._pending
        pending.append((name, seconds, error, 0, peer))
        if len(pending) > self._BACKLOG_LIMIT:  # the drainer cannot keep up: help it
            self.flush()

    def waited(self, address: str, seconds: float) -> None:
        """A wait for a pooled connection (every sync command has one: queued like the
        durations, handed to the SDK by the drainer)."""
        self._pending.append((_WAIT, seconds, None, 0, address))

    def connected(self, address: str, seconds: float) -> None:
        """A pooled connection's create time (rare: handed to the SDK at once)."""
        attrs = {**self._base, "db.client.connection.pool.name": address}
        del attrs["db.namespace"]
        self.create_time.record(seconds, attrs)

    def record_batch(
        self, transaction: bool, size: int, seconds: float, error: BaseException | None
    ) -> None:
        """A pipeline's (or transaction's) duration, as one operation."""
        self._pending.append(("MULTI" if transaction else "PIPELINE", seconds, error, size, None))

    def _record_now(
        self, name: Any, seconds: float, error: BaseException | None, size: int, peer: str | None
    ) -> None:
        if name is _WAIT:
            attrs = self._pool_attrs.get(peer)
            if attrs is None:
                attrs = {k: v for k, v in self._base.items() if k != "db.namespace"}
                attrs["db.client.connection.pool.name"] = peer
                self._pool_attrs[peer] = attrs
            self.wait_time.record(seconds, attrs)
            return
        attrs = self.attributes(name, peer)
        if size >= 2 or error is not None:
            attrs = {**attrs}
            if size >= 2:
                attrs["db.operation.batch.size"] = size
            if error is not None:
                attrs["error.type"] = _error_type(error)
                code = _status_code(error)
                if code is not None:
                    attrs["db.response.status_code"] = code
        self.duration.record(seconds, attrs)

    # -- smartcache's own counters, read from client.stats() at collection ----------------
    def _observe(self, meter: Any, ref: weakref.ref[Any]) -> None:
        from opentelemetry.metrics import Observation  # noqa: PLC0415  # only when on

        base: dict[str, Any] = {k: v for k, v in self._base.items() if k != "db.namespace"}

        # One client.stats() and one client.pool_usage() per collection, shared by the
        # callbacks (taken by the first that needs them, dropped by the drain).
        taken: dict[str, Any] = {}

        def stats() -> Any:
            if "stats" not in taken:
                client = ref()
                taken["stats"] = None if client is None else client.stats()
            return taken["stats"]

        def pools() -> list[Any]:
            if "pools" not in taken:
                client = ref()
                taken["pools"] = [] if client is None else client.pool_usage()
            return taken["pools"]  # type: ignore[no-any-return]

        def drain(options: Any) -> list[Any]:
            self.flush()  # the collection reads the histogram after the callbacks ran
            taken.clear()  # the first callback of each collection takes fresh snapshots
            return []

        # registered first: its callback runs before any instrument is read
        meter.create_observable_gauge("smartcache.internal.drain", callbacks=[drain])

        def observe(
            create: Any, name: str, unit: str, text: str, read: Callable[[Any], Iterable[Any]]
        ) -> None:
            def callback(options: Any) -> list[Any]:
                s = stats()
                if s is None:
                    return []
                return [Observation(v, {**base, **a}) for v, a in read(s)]

            create(name, callbacks=[callback], unit=unit, description=text)

        def counter(name: str, unit: str, text: str, read: Callable[[Any], Iterable[Any]]) -> None:
            observe(meter.create_observable_counter, name, unit, text, read)

        def gauge(name: str, unit: str, text: str, read: Callable[[Any], Iterable[Any]]) -> None:
            observe(meter.create_observable_up_down_counter, name, unit, text, read)

        def per_pool(pick: Callable[[Any], Iterable[Any]]) -> Callable[[Any], list[Any]]:
            """A reader of each pool's values, with the pool's name as an attribute."""
            return lambda s: [
                (v, {"db.client.connection.pool.name": u.address, **a})
                for u in pools()
                for v, a in pick(u)
            ]

        counter(
            "smartcache.redirects",
            "{redirect}",
            "MOVED and ASK redirects followed.",
            lambda s: [
                (s.moved, {"smartcache.redirect.kind": "moved"}),
                (s.ask, {"smartcache.redirect.kind": "ask"}),
            ],
        )
        counter(
            "smartcache.retries",
            "{retry}",
            "Attempts re-sent after a failure, by reason.",
            lambda s: [(n, {"smartcache.retry.reason": r}) for r, n in s.retries.items()],
        )
        counter(
            "smartcache.ambiguous_failures",
            "{failure}",
            "Commands whose fate was unknown, surfaced as AmbiguousCommandError.",
            lambda s: [(s.ambiguous, {})],
        )
        counter(
            "smartcache.topology.refreshes",
            "{refresh}",
            "Cluster slot maps installed, by cause.",
            lambda s: [(n, {"smartcache.refresh.cause": c}) for c, n in s.refreshes.items()],
        )
        counter(
            "smartcache.topology.nodes_added",
            "{node}",
            "Cluster nodes that appeared in the slot map.",
            lambda s: [(s.nodes_added, {})],
        )
        counter(
            "smartcache.topology.nodes_removed",
            "{node}",
            "Cluster nodes that left the slot map.",
            lambda s: [(s.nodes_removed, {})],
        )
        counter(
            "smartcache.sentinel.failovers",
            "{failover}",
            "Sentinel primary switches followed.",
            lambda s: [(s.failovers, {})],
        )
        counter(
            "smartcache.sentinel.write_fence.time",
            "s",
            "Time writes were held while a failover of the primary was reported.",
            lambda s: [(s.write_fence_seconds, {})],
        )
        for field, unit, text in _CACHE_FIELDS:
            counter(f"smartcache.cache.{field}", unit, text, _by_name("caches", "cache", field))
        for field, unit, text in _WRITE_BEHIND_FIELDS:
            counter(
                f"smartcache.write_behind.{field}",
                unit,
                text,
                _by_name("write_behind", "write_behind", field),
            )
        for name, field, unit, per, text in _WRITE_BEHIND_GAUGES:
            observe(
                meter.create_observable_gauge,
                f"smartcache.write_behind.{name}",
                unit,
                text,
                _by_name("write_behind", "write_behind", field, per, measured=True),
            )

        # -- the connection pools, as the database conventions name them ------------------
        gauge(
            "db.client.connection.count",
            "{connection}",
            "The number of connections that are currently in the state described.",
            per_pool(
                lambda u: [
                    (u.idle, {"db.client.connection.state": "idle"}),
                    (u.used, {"db.client.connection.state": "used"}),
                ]
            ),
        )
        gauge(
            "db.client.connection.max",
            "{connection}",
            "The maximum number of open connections allowed.",
            per_pool(lambda u: [] if u.max is None else [(u.max, {})]),
        )
        gauge(
            "db.client.connection.pending_requests",
            "{request}",
            "The number of current pending requests for an open connection.",
            per_pool(lambda u: [(u.pending, {})]),
        )
        counter(
            "smartcache.autopipeline.writes",
            "{write}",
            "Socket writes of an asyncio client's shared, auto-pipelined connection.",
            per_pool(lambda u: [(u.writes, {})] if u.writes else []),
        )
        counter(
            "smartcache.autopipeline.commands",
            "{command}",
            "Commands those writes carried (commands / writes: the batch size).",
            per_pool(lambda u: [(u.commands, {})] if u.writes else []),
        )
        counter(
            "db.client.connection.timeouts",
            "{timeout}",
            "The number of connection timeouts that have occurred trying to obtain a "
            "connection from the pool.",
            lambda s: [(s.pool_timeouts, {})],
        )

        def near(s: Any, *fields: str) -> list[Any]:
            n = s.near_cache
            return [] if n is None else [(getattr(n, f), {}) for f in fields]

        for field, unit, text in (
            ("hits", "{hit}", "Reads served by the near cache."),
            ("misses", "{miss}", "Near-cache reads that went to the server."),
            ("invalidations", "{entry}", "Near-cache entries dropped by server invalidations."),
            ("evictions", "{entry}", "Near-cache entries evicted by the size limits."),
            ("expirations", "{entry}", "Near-cache entries expired (ttl or the key's PTTL)."),
        ):
            counter(f"smartcache.near_cache.{field}", unit, text, _reader(near, field))
        counter(
            "smartcache.near_cache.flushes",
            "{entry}",
            "Near-cache entries dropped at once, by reason.",
            lambda s: (
                []
                if s.near_cache is None
                else [(n, {"smartcache.flush.reason": r}) for r, n in s.near_cache.flushes.items()]
            ),
        )

        def near_bytes(s: Any) -> list[Any]:
            return near(s, "bytes")

        gauge(
            "smartcache.near_cache.entries",
            "{entry}",
            "Entries in the near cache.",
            lambda s: near(s, "entries"),
        )
        gauge("smartcache.near_cache.size", "By", "Bytes held by the near cache.", near_bytes)


#: the ``@cached`` / ``Cache`` counters exported, with their units and meanings
_CACHE_FIELDS = (
    ("hits", "{hit}", "Cache reads that found a fresh entry."),
    ("misses", "{miss}", "Cache reads that found nothing usable."),
    ("loads", "{load}", "Values computed by the loader (recomputes)."),
    ("errors", "{error}", "Cache operations that failed (the loader's result was served)."),
    ("stale_serves", "{hit}", "Stale entries served while one caller refreshed."),
    ("lock_waits", "{wait}", "Callers that waited for another's load (stampede prevented)."),
    ("refreshes", "{refresh}", "Early or background refreshes run."),
    ("bloom_rejects", "{read}", "Reads answered 'absent' by the bloom guard."),
)


#: the write-behind flushers' counters exported
_WRITE_BEHIND_FIELDS = (
    ("rounds", "{round}", "Flush rounds run."),
    ("applied", "{change}", "Changes written to the store."),
    ("acked", "{change}", "Changes acknowledged (removed from the queue)."),
    ("dead", "{change}", "Changes moved to the dead letters after their retries."),
    ("store_errors", "{round}", "Rounds the store refused or failed."),
    ("redis_errors", "{round}", "Rounds Redis failed."),
)


#: the write-behind queues' measures (name, field in stats(), unit, the field's units per
#: exported unit, description), taken by their flushers once a second
_WRITE_BEHIND_GAUGES = (
    ("queue.depth", "backlog", "{change}", 1, "Changes queued, not yet acknowledged."),
    ("dead_letters", "dead_letters", "{change}", 1, "Changes in the dead-letter streams."),
    ("lag", "lag_ms", "s", 1000, "Age of the oldest queued change (0 when none is)."),
)


def scaled(value: float, per: int) -> float:
    """``value`` in the exported unit: divided by ``per`` (13 ms -> 0.013 s, as ``stats()``
    gives it; multiplying by 0.001 would give 0.013000000000000001)."""
    return value if per == 1 else value / per


def _by_name(
    attr: str, label: str, field: str, per: int = 1, *, measured: bool = False
) -> Callable[[Any], list[Any]]:
    """A reader of ``field`` in each named counter set of ``stats.<attr>`` (caches,
    write-behind queues), with the name as ``smartcache.<label>.name``, divided by ``per``
    (see :func:`scaled`); ``measured``: only where the field is present (a queue its
    flusher has measured)."""

    def read(s: Any) -> list[Any]:
        return [
            (scaled(counts.get(field, 0), per), {f"smartcache.{label}.name": name})
            for name, counts in getattr(s, attr).items()
            if not measured or field in counts
        ]

    return read


def _drain_forever(ref: weakref.ref[Telemetry]) -> None:
    while True:
        time.sleep(0.05)
        telemetry = ref()
        if telemetry is None:
            return
        telemetry.flush()
        del telemetry


def _restart_in_child(ref: weakref.ref[Telemetry]) -> Callable[[], None]:
    def restart() -> None:
        telemetry = ref()
        if telemetry is not None:
            telemetry._pending.clear()  # the parent's operations: the parent reports them
            telemetry._start_drainer()

    return restart


def _reader(near: Callable[..., list[Any]], field: str) -> Callable[[Any], list[Any]]:
    return lambda s: near(s, field)


def _error_type(error: BaseException) -> str:
    kind = type(error)
    return f"{kind.__module__}.{kind.__qualname__}"
