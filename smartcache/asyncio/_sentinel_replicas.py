"""The read replicas of a Sentinel service: one pool per usable replica, swapped whole.

Fed by the addresses :func:`~smartcache.core.sentinel_flow.replicas_flow` returns
(filtered by the I/O-free core), swapped whole under the state lock (every user sees the
old list or the new one). Pools of replicas that leave the list are retired (the
``retire`` callable: :class:`~smartcache.asyncio._sentinel_io.PoolRetirer`); pools of
replicas that stay are kept.

The asyncio module is the source; its sync twin is generated (``scripts/unasync.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from smartcache.asyncio._pool import AsyncConnectionPool
from smartcache.asyncio._sentinel_io import StateLock
from smartcache.core.sentinel import Address, format_address

__all__ = ["AsyncReplicaSet"]


class AsyncReplicaSet:
    """Pools of the usable replicas, in the sentinels' order.

    ``make_pool`` builds a replica's pool; ``retire`` takes a pool that left the list.
    """

    def __init__(
        self,
        make_pool: Callable[[Address], AsyncConnectionPool],
        retire: Callable[[AsyncConnectionPool], None],
    ) -> None:
        self._make_pool = make_pool
        self._retire = retire
        self._lock = StateLock()
        self._pools: dict[Address, AsyncConnectionPool] = {}
        self._closed = False
        #: True once a list was installed
        self.loaded = False
        #: True when the list may be stale (the primary moved, a replica event arrived)
        self.dirty = False

    def reset_lock(self) -> None:
        """A fresh lock (in a forked child)."""
        self._lock = StateLock()

    @property
    def addresses(self) -> list[str]:
        """``host:port`` of every replica in the list."""
        return [format_address(a) for a in self._pools]

    @property
    def pools(self) -> list[AsyncConnectionPool]:
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
            self._retire(pool)
        return changed

    async def aclose(self) -> None:
        """Close every pool; install nothing from now on."""
        with self._lock:
            self._closed = True
            pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()
