"""What the sync and async cluster states share: pools per node, the slot -> pool table,
MOVED, suspects, and installing a refreshed map.

Generic over the pool type (:class:`~smartcache.wire.ConnectionPool` or
:class:`~smartcache.asyncio._pool.AsyncConnectionPool`); the refresh itself, which does
I/O, is the subclasses' (both drive :func:`smartcache.core.refresh.refresh_flow`). The
slot map is immutable and swapped whole; ``slot_pools`` is rebuilt with it, so routing a
keyed command is one list index.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Generator, Iterable
from typing import Any, Generic, TypeVar

from smartcache._observe import log_topology
from smartcache.core.flow import Attempt
from smartcache.core.node_choice import choose_node, default_node
from smartcache.core.refresh import (
    REPROBE_TIMEOUT,
    AskTopology,
    Probe,
    periodic_refresh_due,
    refresh_flow,
)
from smartcache.core.slotmap import SlotMap, parse_address
from smartcache.core.slots import SLOT_COUNT
from smartcache.core.stats import Counters
from smartcache.wire import ConnectionSettings
from smartcache.wire.packing import slot_function

__all__ = ["PROBE_TIMEOUT", "SlotRouting"]

#: topology queries and probes must not stall on a hung node for a whole socket_timeout
PROBE_TIMEOUT = 1.0

P = TypeVar("P")


class SlotRouting(Generic[P]):
    """Slot map, node pools and suspects of one cluster client (sync or async)."""

    def __init__(
        self,
        settings: ConnectionSettings,
        startup: Iterable[tuple[str, int]],
        *,
        pool_factory: Callable[[ConnectionSettings], P],
        discard: Callable[[P], None],
        min_refresh_interval: float = 0.1,
        counters: Counters | None = None,
    ) -> None:
        self._settings = settings
        self.counters = counters if counters is not None else Counters(threading.Lock())
        #: why the next refresh runs (counted and logged when its map is installed)
        self.refresh_cause = "startup"
        self._startup = [f"{h}:{p}" for h, p in startup]
        self._pool_factory = pool_factory
        self._discard = discard
        self._pools: dict[str, P] = {}
        self._replica_pools: dict[str, P] = {}
        self._lock = threading.Lock()  # uncontended in asyncio code; guards creation in threads
        self._generation = 0
        self._last_refresh = 0.0
        self.min_refresh_interval = min_refresh_interval
        self.slot_map: SlotMap | None = None
        self.slot_pools: list[P | None] = [None] * SLOT_COUNT
        self.refresh_pending = False
        #: primaries that timed out or refused a connection, by address (-> when); commands
        #: for their slots wait for the topology to change instead of stalling on them again
        self.suspects: dict[str, float] = {}
        #: suspects whose last probe went unanswered
        self._unanswered: set[str] = set()
        #: the slot of a key as it is sent (its bytes under the client's ``encoding``)
        self.slot_of = slot_function(settings)
        self._probe_timeout = min(settings.socket_timeout or PROBE_TIMEOUT, PROBE_TIMEOUT)
        self._default: str | None = None  # the default node's address, once chosen
        self._default_memo: tuple[SlotMap | None, str, int] | None = None

    # -- pools --------------------------------------------------------------------------
    def pool(self, address: str) -> P:
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

    def replica_pool(self, address: str) -> P:
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

    def replica_pools_for_slot(self, slot: int) -> list[P]:
        """READONLY pools to the replicas of the shard serving ``slot`` (maybe none)."""
        current = self.slot_map
        shard = current.shard_for_slot(slot) if current is not None else None
        if shard is None:
            return []
        return [self.replica_pool(a) for a in shard.replicas]

    def pool_for(self, slot: int, replica: bool) -> P | None:
        """The pool one attempt on ``slot`` goes to: its primary's, or with ``replica`` (the
        core's :func:`~smartcache.core.node_choice.reads_from_replica`) one of its replicas'
        as :func:`~smartcache.core.node_choice.choose_node` picks. ``None``: slot unserved.

        The one node choice of both clients' general paths and single-key fast paths.
        """
        primary = self.slot_pools[slot]
        if not replica:
            return primary
        return choose_node(primary, self.replica_pools_for_slot(slot), random.choice)

    # -- default node -------------------------------------------------------------------
    def default_address(self) -> str:
        """The node keyless commands without a routing rule go to: RedisCluster's default
        node (:func:`~smartcache.core.node_choice.default_node`)."""
        return self._default_target()[0]

    def default_slot(self) -> int:
        """A slot the default node serves: keyless commands are routed to it like a keyed
        command to its slot, so a MOVED or a failover moves them along."""
        return self._default_target()[1]

    def set_default(self, address: str) -> bool:
        """Make the primary at ``address`` the default node; False when it serves no slot."""
        current = self.slot_map
        if current is None or current.first_slot_of(address) is None:
            return False
        self._default, self._default_memo = address, None
        return True

    def _default_target(self) -> tuple[str, int]:
        current = self.slot_map
        memo = self._default_memo
        if memo is not None and memo[0] is current:
            return memo[1], memo[2]
        address = default_node(self._default, current.primaries if current else ())
        slot = current.first_slot_of(address) if current and address else None
        if address is None or slot is None:  # no slot covered: any slot, the server says why
            return (current.nodes[0] if current and current.nodes else self._startup[0]), 0
        self._default, self._default_memo = address, (current, address, slot)
        return address, slot

    def attempt_pool(self, step: Attempt) -> P | None:
        """The pool one attempt of the core's flow goes to: the node an ``ASK`` named, else
        :meth:`pool_for` the attempt's slot (``None``: the slot is not served)."""
        if step.asking is not None:
            return self.pool(step.asking)
        return self.pool_for(step.slot, step.replica)

    @property
    def pools(self) -> dict[str, P]:
        """Every primary/replica pool, by address."""
        return dict(self._pools)

    def take_all_pools(self) -> list[P]:
        """Forget every pool and return them, for the owner to close."""
        with self._lock:
            pools = [*self._pools.values(), *self._replica_pools.values()]
            self._pools, self._replica_pools = {}, {}
        return pools

    def short_settings(self, address: str) -> ConnectionSettings:
        """Settings for a topology query or probe: short timeouts."""
        host, port = parse_address(address)
        return self._settings.with_address(host, port).replace(
            socket_timeout=self._probe_timeout, socket_connect_timeout=self._probe_timeout
        )

    # -- refresh bookkeeping -----------------------------------------------------------
    def refresh_steps(self) -> Generator[AskTopology | Probe, Any, tuple[SlotMap, set[str]]]:
        """The refresh flow for the current state (driven by the subclass)."""
        return refresh_flow(
            self.slot_map,
            self._startup,
            dict(self.suspects),
            random.shuffle,
            set(self._unanswered),
        )

    def probe_settings(self, address: str, quick: bool) -> ConnectionSettings:
        """Settings for a probe of ``address`` (``quick``: its last probe went unanswered,
        :data:`~smartcache.core.refresh.REPROBE_TIMEOUT`)."""
        settings = self.short_settings(address)
        if not quick:
            return settings
        timeout = min(self._probe_timeout, REPROBE_TIMEOUT)
        return settings.replace(socket_timeout=timeout, socket_connect_timeout=timeout)

    def probed(self, address: str, answered: bool) -> None:
        """Remember whether ``address`` answered its probe (an unanswered suspect is
        probed quickly next time)."""
        if answered:
            self._unanswered.discard(address)
        else:
            self._unanswered.add(address)

    def request_refresh(self, cause: str) -> None:
        """Ask for a refresh (the next command runs it); ``cause`` labels it."""
        self.refresh_cause = cause
        self.refresh_pending = True

    def install(self, new_map: SlotMap, cleared: Iterable[str]) -> None:
        """Swap ``new_map`` in, clear suspects, close the pools of nodes that left; count
        and log the refresh and the nodes that came or went."""
        previous = self.slot_map
        old_nodes = set(previous.nodes) if previous else set()
        by_shard = [self.pool(s.primary) for s in new_map.shards]
        slot_pools: list[P | None] = [
            by_shard[i] if i >= 0 else None for i in new_map.shard_indices()
        ]
        for node in new_map.nodes:
            self.pool(node)
        self.slot_map = new_map
        self.slot_pools = slot_pools
        for address in cleared:
            self.suspects.pop(address, None)
            self._unanswered.discard(address)
        gone = old_nodes - set(new_map.nodes) - set(self._startup)
        for address in gone:
            with self._lock:
                closing = [self._pools.pop(address, None), self._replica_pools.pop(address, None)]
            for pool in closing:
                if pool is not None:
                    self._discard(pool)
        self._generation += 1
        self._last_refresh = time.monotonic()
        self.refresh_pending = False
        self._report(previous, new_map, old_nodes)

    def _report(self, previous: SlotMap | None, new_map: SlotMap, old_nodes: set[str]) -> None:
        cause, self.refresh_cause = self.refresh_cause, "periodic"
        added = sorted(set(new_map.nodes) - old_nodes) if previous is not None else []
        removed = sorted(old_nodes - set(new_map.nodes))
        self.counters.refreshed(cause, len(added), len(removed))
        quiet = (
            cause == "periodic"
            and not added
            and not removed
            and previous is not None
            and previous.shards == new_map.shards
            and previous.shard_indices() == new_map.shard_indices()
        )
        log_topology(
            "cluster.refresh",
            level=logging.DEBUG if quiet else logging.INFO,
            cause=cause,
            primaries=len(new_map.primaries),
            nodes=len(new_map.nodes),
        )
        for address in added:
            log_topology("cluster.node_added", address=address)
        for address in removed:
            log_topology("cluster.node_removed", address=address)

    @property
    def last_refresh(self) -> float:
        """``time.monotonic()`` of the last installed map (0.0: none yet)."""
        return self._last_refresh

    def mark_refresh_if_due(self, interval: float | None) -> None:
        """Ask for a refresh when the periodic one is due
        (:func:`~smartcache.core.refresh.periodic_refresh_due`): the next command runs it."""
        if periodic_refresh_due(self._last_refresh, time.monotonic(), interval):
            if not self.refresh_pending:
                self.refresh_cause = "periodic"
            self.refresh_pending = True

    def mark_suspect(self, address: str) -> None:
        """Note that ``address`` timed out or refused; ask for a refresh."""
        self.suspects[address] = time.monotonic()
        self.request_refresh("node_failure")

    def is_suspect(self, slot: int) -> bool:
        """Is the primary serving ``slot`` suspected hung?"""
        suspects = self.suspects
        if not suspects:
            return False
        current = self.slot_map
        return current is not None and current.primary_for_slot(slot) in suspects

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
        self.request_refresh("moved")
