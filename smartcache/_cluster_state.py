"""Cluster state for the sync client: :class:`SlotRouting` plus a threaded refresh.

Concurrent refresh requests collapse into one (a lock plus a generation counter) and are
rate-limited; the refresh itself is :func:`smartcache.core.refresh.refresh_flow`, driven
here with blocking calls on short-timeout connections.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis.exceptions as rx

from smartcache._slot_routing import SlotRouting
from smartcache.core.refresh import AskTopology
from smartcache.core.slotmap import SlotMap, parse_address
from smartcache.wire import Connection, ConnectionPool, ConnectionSettings

__all__ = ["ClusterState"]


class ClusterState(SlotRouting[ConnectionPool]):
    """Slot map, node pools and refresh of one sync cluster client."""

    def __init__(
        self,
        settings: ConnectionSettings,
        startup: Iterable[tuple[str, int]],
        *,
        pool_factory: Callable[[ConnectionSettings], ConnectionPool],
        min_refresh_interval: float = 0.1,
    ) -> None:
        super().__init__(
            settings,
            startup,
            pool_factory=pool_factory,
            discard=ConnectionPool.close,
            min_refresh_interval=min_refresh_interval,
        )
        self._refresh_lock = threading.Lock()

    def close(self) -> None:
        """Close every pool."""
        for pool in self.take_all_pools():
            pool.close()

    def refresh(self, *, force: bool = False) -> SlotMap:
        """Fetch the topology from several nodes and swap the majority view in.

        Callers that arrive while a refresh runs wait for it and reuse its result.
        """
        seen = self._generation
        with self._refresh_lock:
            if self._generation != seen and self.slot_map is not None:
                return self.slot_map  # someone refreshed while we waited
            recent = time.monotonic() - self._last_refresh < self.min_refresh_interval
            if recent and not force and self.slot_map is not None:
                # Rate limit without making callers wait: the flag stays up, so the first
                # command after the interval refreshes (MOVED has patched the map already).
                return self.slot_map
            new_map, cleared = self._drive_refresh()
            self.install(new_map, cleared)
            return new_map

    def _drive_refresh(self) -> tuple[SlotMap, set[str]]:
        flow = self.refresh_steps()
        answer: Any = None
        try:
            while True:
                step = flow.send(answer)
                if isinstance(step, AskTopology):
                    try:
                        answer = self._ask(step.address)
                    except (rx.RedisError, OSError) as exc:
                        answer = exc
                else:
                    answer = self._probe(step.address)
        except StopIteration as done:
            result: tuple[SlotMap, set[str]] = done.value
            return result

    def _probe(self, address: str) -> bool:
        conn = Connection(self.short_settings(address))
        try:
            return bool(conn.execute("PING"))
        except (rx.RedisError, OSError):
            return False
        finally:
            conn.close()

    def _ask(self, address: str) -> SlotMap:
        host, _ = parse_address(address)
        conn = Connection(self.short_settings(address))
        try:
            try:
                return SlotMap.from_cluster_shards(conn.execute("CLUSTER", "SHARDS"), host)
            except rx.ResponseError:  # servers before 7.0
                return SlotMap.from_cluster_slots(conn.execute("CLUSTER", "SLOTS"), host)
        finally:
            conn.close()
