"""The timed command path shared by the metrics back ends (OpenTelemetry, Prometheus).

Metrics on: ``client._telemetry`` is a recorder (``None`` when off); the clients'
``execute_command`` and the pipelines' ``execute`` time themselves when it is set (off:
one attribute check, ~40 ns; no extra call frame either way).
A recorder has ``record(name, seconds, error)`` and
``record_batch(transaction, size, seconds, error)``.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from smartcache.exceptions import ConfigurationError

__all__ = [
    "Fanout",
    "Recorder",
    "Timed",
    "peer_attributes",
    "provider_from",
    "time_acquisitions",
]


def peer_attributes(peer: str) -> dict[str, Any]:
    """``network.peer.address`` / ``network.peer.port`` of ``host:port``."""
    host, _, port = peer.rpartition(":")
    return {"network.peer.address": host, "network.peer.port": int(port)}


class Recorder(Protocol):
    """Where a timed operation goes: ``begin(args)`` when a command starts (a handle, or
    ``None``), ``finish(handle, name, seconds, error)`` when it ended; a pipeline as a
    whole through ``record_batch``."""

    def begin(self, args: tuple[Any, ...]) -> Any: ...
    def finish(
        self,
        handle: Any,
        name: Any,
        peer: str | None,
        seconds: float,
        error: BaseException | None,
    ) -> None: ...
    def record_batch(
        self, transaction: bool, size: int, seconds: float, error: BaseException | None
    ) -> None: ...
    def connected(self, address: str, seconds: float) -> None: ...
    def waited(self, address: str, seconds: float) -> None: ...


def provider_from(value: Any, *, argument: str, method: str, kind: str) -> Any:
    """The OpenTelemetry provider a client was given as ``argument=`` (``True``: the
    global one; ``None``/``False``: off), checked to have ``method`` (``get_meter`` /
    ``get_tracer``). ``opentelemetry`` is imported only here, only when asked for."""
    if value is None or value is False:
        return None
    try:
        from opentelemetry import metrics, trace  # noqa: PLC0415  # only when asked for
    except ImportError as exc:
        raise ConfigurationError(
            f"{argument}= needs OpenTelemetry: pip install 'smartcache[otel]' "
            "(opentelemetry-api; opentelemetry-sdk to export)"
        ) from exc
    if value is True:
        if method == "get_meter":
            return metrics.get_meter_provider()
        return trace.get_tracer_provider()
    if not hasattr(value, method):
        raise ConfigurationError(
            f"{argument}={value!r} is not an OpenTelemetry {kind} "
            "(pass one, or True for the global provider)"
        )
    return value


def time_acquisitions(pool: Any, hook: Callable[[str, float], None]) -> None:
    """Time every connection ``pool`` hands out (``db.client.connection.wait_time``): the
    sync pool's ``get`` (every command takes one), the asyncio pool's
    ``acquire_dedicated`` (blocking commands, transactions; the shared, auto-pipelined
    connection is never waited for). Instance attributes, set only when metrics are on."""
    address: str = pool.address
    clock = time.perf_counter
    acquire = pool.acquire_dedicated
    if inspect.iscoroutinefunction(acquire):

        async def timed_acquire() -> Any:
            started = clock()
            conn = await acquire()
            hook(address, clock() - started)
            return conn

        pool.acquire_dedicated = timed_acquire
        return
    get = pool.get  # the sync pool's acquire_dedicated is its get

    def timed_get() -> Any:
        started = clock()
        conn = get()
        hook(address, clock() - started)
        return conn

    pool.get = timed_get


class Timed:
    """A recorder of durations only (metrics): nothing to begin."""

    def begin(self, args: tuple[Any, ...]) -> Any:
        """No handle."""
        return None

    def finish(
        self,
        handle: Any,
        name: Any,
        peer: str | None,
        seconds: float,
        error: BaseException | None,
    ) -> None:
        """Record the duration."""
        self.record(name, seconds, error, peer)

    def record(
        self, name: Any, seconds: float, error: BaseException | None, peer: str | None = None
    ) -> None:
        """One operation's duration; ``peer``: the ``host:port`` that served it, if known
        (subclasses)."""
        raise NotImplementedError

    def connected(self, address: str, seconds: float) -> None:
        """A pooled connection to ``address`` was opened in ``seconds`` (connect and
        handshake); nothing by default."""

    def waited(self, address: str, seconds: float) -> None:
        """A connection of the pool of ``address`` was obtained in ``seconds``; nothing by
        default."""


class Fanout:
    """Several recorders as one (OpenTelemetry and Prometheus both on)."""

    def __init__(self, recorders: Sequence[Recorder]) -> None:
        self._recorders = tuple(recorders)

    def begin(self, args: tuple[Any, ...]) -> Any:
        """Each recorder's handle."""
        return [r.begin(args) for r in self._recorders]

    def finish(
        self,
        handle: Any,
        name: Any,
        peer: str | None,
        seconds: float,
        error: BaseException | None,
    ) -> None:
        """Hand the operation to each recorder."""
        for r, h in zip(self._recorders, handle, strict=True):
            r.finish(h, name, peer, seconds, error)

    def record_batch(
        self, transaction: bool, size: int, seconds: float, error: BaseException | None
    ) -> None:
        """Hand the pipeline to each recorder."""
        for r in self._recorders:
            r.record_batch(transaction, size, seconds, error)

    def connected(self, address: str, seconds: float) -> None:
        """Hand the new connection's create time to each recorder."""
        for r in self._recorders:
            r.connected(address, seconds)

    def waited(self, address: str, seconds: float) -> None:
        """Hand the wait for a connection to each recorder."""
        for r in self._recorders:
            r.waited(address, seconds)
