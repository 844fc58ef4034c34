"""The read replicas of a Sentinel service: one pool per usable replica, swapped whole.

Fed by ``SENTINEL REPLICAS`` replies, filtered by the I/O-free core
(:func:`smartcache.core.sentinel.usable_replicas`). Pools of replicas that leave the list
are closed; pools of replicas that stay are kept.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from smartcache.core.sentinel import Address, format_address
from smartcache.sync._pool import ConnectionPool
from smartcache.wire import ConnectionSettings

__all__ = ["ReplicaSet"]


class ReplicaSet:
    """Pools of the usable replicas, in the sentinels' order."""

    def __init__(self, make_pool: Callable[[Address], ConnectionPool]) -> None:
        self._make_pool = make_pool
        self._lock = threading.Lock()
        self._pools: dict[Address, ConnectionPool] = {}
        self._closed = False
        #: True once a list was installed
        self.loaded = False
        #: True when the list may be stale (the primary moved, a replica event arrived)
        self.dirty = False

    @classmethod
    def for_settings(
        cls,
        settings: ConnectionSettings,
        pool_factory: Callable[[ConnectionSettings], ConnectionPool],
    ) -> ReplicaSet:
        """Pools made by ``pool_factory`` from ``settings.with_address(...)``."""
        return cls(lambda address: pool_factory(settings.with_address(*address)))

    def reset_lock(self) -> None:
        """A fresh lock (in a forked child)."""
        self._lock = threading.Lock()

    @property
    def addresses(self) -> list[str]:
        """``host:port`` of every replica in the list."""
        return [format_address(a) for a in self._pools]

    @property
    def pools(self) -> list[ConnectionPool]:
        """Every replica's pool."""
        return list(self._pools.values())

    def install(self, addresses: Sequence[Address]) -> bool:
        """Swap in the list ``addresses``; return True if it changed."""
        with self._lock:
            if self._closed:
                return False
            old = self._pools
            pools = {a: old.get(a) or self._make_pool(a) for a in addresses}
            gone = [pool for a, pool in old.items() if a not in pools]
            changed = list(old) != list(pools) or not self.loaded
            self._pools = pools
            self.loaded = True
        for pool in gone:
            pool.close()
        return changed

    def close(self) -> None:
        """Close every pool; install nothing from now on."""
        with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            pool.close()
