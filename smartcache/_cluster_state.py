"""Cluster state for the sync client: the current SlotMap, a pool per node, and refresh.

The SlotMap is immutable and swapped whole. ``slot_pools`` is a 16384-entry list of the
primary's pool per slot, rebuilt on every swap, so routing a keyed command is one list
index. Concurrent refresh requests collapse into one (a lock plus a generation counter) and
are rate-limited; a refresh asks several nodes and keeps the majority view.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis.exceptions as rx

from smartcache.core.refresh import AskTopology, refresh_flow
from smartcache.core.slotmap import SlotMap, parse_address
from smartcache.core.slots import SLOT_COUNT
from smartcache.wire import Connection, ConnectionPool, ConnectionSettings

__all__ = ["ClusterState"]

_PROBE_TIMEOUT = 1.0


class ClusterState:
    """Slot map, node pools and the refresh logic of one cluster client."""

    def __init__(
        self,
        settings: ConnectionSettings,
        startup: Iterable[tuple[str, int]],
        *,
        pool_factory: Callable[[ConnectionSettings], ConnectionPool],
        min_refresh_interval: float = 0.1,
    ) -> None:
        self._settings = settings
        self._startup = [f"{h}:{p}" for h, p in startup]
        self._pool_factory = pool_factory
        self._pools: dict[str, ConnectionPool] = {}
        self._replica_pools: dict[str, ConnectionPool] = {}
        self._lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._generation = 0
        self._last_refresh = 0.0
        self.min_refresh_interval = min_refresh_interval
        self.slot_map: SlotMap | None = None
        self.slot_pools: list[ConnectionPool | None] = [None] * SLOT_COUNT
        self.refresh_pending = False
        #: primaries that timed out or refused a connection, by address (-> when); commands
        #: for their slots wait for the topology to change instead of stalling on them again
        self.suspects: dict[str, float] = {}
        # topology queries and probes must not stall on a hung node for a whole socket_timeout
        self._probe_timeout = min(settings.socket_timeout or _PROBE_TIMEOUT, _PROBE_TIMEOUT)

    # -- pools ------------------------------------------------------------------------
    def pool(self, address: str) -> ConnectionPool:
        """The pool of the node at ``address`` (created on first use)."""
        pool = self._pools.get(address)
        if pool is None:
            with self._lock:
                pool = self._pools.get(address)
                if pool is None:
                    host, port = parse_address(address)
                    pool = self._pool_factory(self._settings.with_address(host, port))
                    self._pools[address] = pool
        return pool

    def replica_pool(self, address: str) -> ConnectionPool:
        """A pool to ``address`` whose connections send READONLY (reads on a replica)."""
        pool = self._replica_pools.get(address)
        if pool is None:
            with self._lock:
                pool = self._replica_pools.get(address)
                if pool is None:
                    host, port = parse_address(address)
                    settings = self._settings.with_address(host, port).replace(readonly=True)
                    pool = self._pool_factory(settings)
                    self._replica_pools[address] = pool
        return pool

    def replica_pools_for_slot(self, slot: int) -> list[ConnectionPool]:
        """READONLY pools to the replicas of the shard serving ``slot`` (maybe none)."""
        current = self.slot_map
        shard = current.shard_for_slot(slot) if current is not None else None
        if shard is None:
            return []
        return [self.replica_pool(a) for a in shard.replicas]

    @property
    def pools(self) -> dict[str, ConnectionPool]:
        """Every pool, by address."""
        return dict(self._pools)

    def close(self) -> None:
        """Close every pool."""
        with self._lock:
            pools = [*self._pools.values(), *self._replica_pools.values()]
            self._pools, self._replica_pools = {}, {}
        for pool in pools:
            pool.close()

    # -- refresh ----------------------------------------------------------------------
    def refresh(self, *, force: bool = False) -> SlotMap:
        """Fetch the topology from several nodes and swap the majority view in.

        Callers that arrive while a refresh runs wait for it and reuse its result.
        """
        seen = self._generation
        with self._refresh_lock:
            if self._generation != seen and self.slot_map is not None:
                return self.slot_map  # someone refreshed while we waited
            wait = self._last_refresh + self.min_refresh_interval - time.monotonic()
            if wait > 0 and not force and self.slot_map is not None:
                time.sleep(wait)  # rate limit: at most one refresh per interval
            new_map, cleared = self._run_refresh_flow()
            self._install(new_map)
            for address in cleared:
                self.suspects.pop(address, None)
            self._generation += 1
            self._last_refresh = time.monotonic()
            self.refresh_pending = False
            return new_map

    def mark_suspect(self, address: str) -> None:
        """Note that ``address`` timed out or refused; ask for a refresh."""
        self.suspects[address] = time.monotonic()
        self.refresh_pending = True

    def _run_refresh_flow(self) -> tuple[SlotMap, set[str]]:
        """The sync driver of :func:`~smartcache.core.refresh.refresh_flow`."""
        flow = refresh_flow(self.slot_map, self._startup, dict(self.suspects), random.shuffle)
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
        conn = self._short_connection(address)
        try:
            return bool(conn.execute("PING"))
        except (rx.RedisError, OSError):
            return False
        finally:
            conn.close()

    def _short_connection(self, address: str) -> Connection:
        host, port = parse_address(address)
        settings = self._settings.with_address(host, port).replace(
            socket_timeout=self._probe_timeout, socket_connect_timeout=self._probe_timeout
        )
        return Connection(settings)

    def _ask(self, address: str) -> SlotMap:
        host, _ = parse_address(address)
        conn = self._short_connection(address)
        try:
            reply = conn.execute("CLUSTER", "SHARDS")
            view = SlotMap.from_cluster_shards(reply, host)
        except rx.ResponseError:
            reply = conn.execute("CLUSTER", "SLOTS")
            view = SlotMap.from_cluster_slots(reply, host)
        finally:
            conn.close()
        return view

    def _install(self, new_map: SlotMap) -> None:
        old_nodes = set(self.slot_map.nodes) if self.slot_map else set()
        by_shard = [self.pool(s.primary) for s in new_map.shards]
        slot_pools: list[ConnectionPool | None] = [None] * SLOT_COUNT
        for slot in range(SLOT_COUNT):
            shard = new_map.shard_for_slot(slot)
            if shard is not None:
                slot_pools[slot] = by_shard[new_map.shards.index(shard)]
        for node in new_map.nodes:
            self.pool(node)
        self.slot_map = new_map
        self.slot_pools = slot_pools
        gone = old_nodes - set(new_map.nodes) - set(self._startup)
        for address in gone:
            with self._lock:
                closing = [self._pools.pop(address, None), self._replica_pools.pop(address, None)]
            for pool in closing:
                if pool is not None:
                    pool.close()

    def apply_moved(self, slot: int, address: str) -> None:
        """Point ``slot`` at ``address`` at once (MOVED) and ask for a refresh soon."""
        current = self.slot_map
        if current is None:
            return
        new_map = current.with_moved(slot, address)
        pools = list(self.slot_pools)
        pools[slot] = self.pool(address)
        self.slot_map = new_map
        self.slot_pools = pools
        self.refresh_pending = True
