"""``smartcache top``: a live per-node view of a deployment.

Each tick reads ``INFO`` and ``SLOWLOG LEN`` from every node (discovered from the URL:
the cluster's nodes, a Sentinel's primary and replicas, or a server and its replicas,
rediscovered every ``rediscover`` seconds so failovers show) and turns two successive
readings into rates (:func:`rows`, no I/O): ops/s, hit rate over the interval, memory
against ``maxmemory``, clients, replication lag and slow-log growth.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from smartcache.ops._collect import discover
from smartcache.ops._nodes import ERRORS, Connector, error_text
from smartcache.sync.client import SmartClient

__all__ = ["Row", "Top", "rows"]


@dataclass(frozen=True, slots=True)
class Row:
    """One node's line."""

    address: str
    role: str  #: ``primary``, ``replica`` or ``down``
    ops_per_sec: float | None
    hit_rate: float | None  #: over the interval; None without reads
    used_memory: int
    maxmemory: int
    clients: int
    lag_bytes: int | None  #: replicas: how far behind their primary's offset
    slowlog_new: int | None  #: slow-log entries added during the interval
    slowlog_len: int
    error: str = ""


def _int(info: Mapping[str, Any], key: str) -> int:
    try:
        return int(info.get(key, 0) or 0)
    except (TypeError, ValueError):
        return 0


def rows(
    previous: Mapping[str, tuple[float, dict[str, Any]]],
    current: Mapping[str, tuple[float, dict[str, Any]]],
    errors: Mapping[str, str] | None = None,
) -> list[Row]:
    """Rows from two readings ``address -> (monotonic time, info + "slowlog_len")``;
    rates need both, so a node's first tick shows none."""
    offsets = {
        a: _int(info, "master_repl_offset")
        for a, (_, info) in current.items()
        if info.get("role") == "master"
    }
    out: list[Row] = []
    for address, (t, info) in sorted(current.items()):
        before = previous.get(address)
        ops = hit = slow_new = None
        if before is not None and t > before[0]:
            dt = t - before[0]
            old = before[1]
            ops = (
                max(
                    0,
                    _int(info, "total_commands_processed") - _int(old, "total_commands_processed"),
                )
                / dt
            )
            hits = _int(info, "keyspace_hits") - _int(old, "keyspace_hits")
            misses = _int(info, "keyspace_misses") - _int(old, "keyspace_misses")
            hit = hits / (hits + misses) if hits + misses > 0 else None
            slow_new = max(0, _int(info, "slowlog_len") - _int(old, "slowlog_len"))
        role = "primary" if info.get("role") == "master" else "replica"
        lag = None
        if role == "replica":
            source = f"{info.get('master_host')}:{info.get('master_port')}"
            if source in offsets:
                lag = max(0, offsets[source] - _int(info, "slave_repl_offset"))
        out.append(
            Row(
                address=address,
                role=role,
                ops_per_sec=ops,
                hit_rate=hit,
                used_memory=_int(info, "used_memory"),
                maxmemory=_int(info, "maxmemory"),
                clients=_int(info, "connected_clients"),
                lag_bytes=lag,
                slowlog_new=slow_new,
                slowlog_len=_int(info, "slowlog_len"),
            )
        )
    for address, error in sorted((errors or {}).items()):
        out.append(Row(address, "down", None, None, 0, 0, 0, None, None, 0, error))
    return out


class Top:
    """Reads the deployment at ``url`` tick after tick (see the module docstring)."""

    def __init__(
        self, url: str, *, timeout: float = 2.0, rediscover: float = 10.0, **client_kwargs: Any
    ) -> None:
        self.url = url
        self.timeout = timeout
        self.rediscover = rediscover
        self.client_kwargs = client_kwargs
        self.kind = ""
        self.addresses: list[str] = []
        self._connector: Connector | None = None
        self._found_at = 0.0
        self._previous: dict[str, tuple[float, dict[str, Any]]] = {}
        #: one open client per node, kept from tick to tick (dropped when it fails)
        self._clients: dict[str, tuple[contextlib.ExitStack, SmartClient]] = {}

    def _discover(self) -> None:
        self.kind, self._connector, self.addresses = discover(
            self.url, self.timeout, **self.client_kwargs
        )
        self._found_at = time.monotonic()
        for address in set(self._clients) - set(self.addresses):
            self._drop(address)

    def _client(self, address: str) -> SmartClient:
        held = self._clients.get(address)
        if held is None:
            assert self._connector is not None
            stack = contextlib.ExitStack()
            held = stack, stack.enter_context(self._connector.client(address))
            self._clients[address] = held
        return held[1]

    def _drop(self, address: str) -> None:
        held = self._clients.pop(address, None)
        if held is not None:
            with contextlib.suppress(*ERRORS):
                held[0].close()

    def tick(self) -> list[Row]:
        """Read every node now; rows with rates since the previous tick."""
        if self._connector is None or time.monotonic() - self._found_at > self.rediscover:
            self._discover()
        current: dict[str, tuple[float, dict[str, Any]]] = {}
        errors: dict[str, str] = {}
        for address in self.addresses:
            try:
                c = self._client(address)
                info = dict(c.info())
                info["slowlog_len"] = int(c.slowlog_len())
                current[address] = (time.monotonic(), info)
            except ERRORS as exc:
                self._drop(address)  # the next tick connects again
                errors[address] = error_text(exc)
        out = rows(self._previous, current, errors)
        self._previous = current
        return out

    def close(self) -> None:
        """Close the connections to the nodes."""
        for address in list(self._clients):
            self._drop(address)

    def __enter__(self) -> Top:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
