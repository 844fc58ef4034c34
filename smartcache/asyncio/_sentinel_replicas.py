"""The read replicas of a Sentinel service for asyncio: one pool per usable replica.

The async twin of :mod:`smartcache.sync._sentinel_replicas`: fed by the addresses
:func:`~smartcache.core.sentinel_flow.replicas_flow` returns, swapped whole (no await in
between, so every task sees the old list or the new one). Pools of replicas that leave the
list are retired with :func:`drain_and_close`; pools of replicas that stay are kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Final

from smartcache.asyncio._pool import AsyncConnectionPool
from smartcache.core.sentinel import Address, format_address

__all__ = ["AsyncReplicaSet", "PoolRetirer", "drain_and_close"]

#: How long a retired pool may finish its in-flight commands before it is closed.
DRAIN_SECONDS: Final = 2.0


async def drain_and_close(pool: AsyncConnectionPool) -> None:
    """Let the in-flight commands of ``pool``'s shared connection finish, then close it."""
    try:
        if not pool.closed:
            conn = pool.connection
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DRAIN_SECONDS
            while conn.in_flight and loop.time() < deadline:
                await asyncio.sleep(0.005)
    finally:
        await pool.aclose()


class PoolRetirer:
    """Closes pools that left the topology in the background, with :func:`drain_and_close`.

    Holds no reference to the state that uses it (so the state stays free of cycles and
    is collected, and its watcher cancelled, as soon as it is dropped).
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def retire(self, pool: AsyncConnectionPool) -> None:
        """Close ``pool`` once its in-flight commands are answered (in the running loop)."""
        task = asyncio.get_running_loop().create_task(drain_and_close(pool))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self) -> None:
        """Stop draining: close every retiring pool now and wait until they are closed."""
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


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
        self._pools: dict[Address, AsyncConnectionPool] = {}
        self._closed = False
        #: True once a list was installed
        self.loaded = False
        #: True when the list may be stale (the primary moved, a replica event arrived)
        self.dirty = False

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
        if self._closed:
            return False
        old = self._pools
        pools = {a: old.get(a) or self._make_pool(a) for a in addresses}
        changed = list(old) != list(pools) or not self.loaded
        self._pools = pools
        self.loaded = True
        for address, pool in old.items():
            if address not in pools:
                self._retire(pool)
        return changed

    async def aclose(self) -> None:
        """Close every pool; install nothing from now on."""
        self._closed = True
        pools, self._pools = list(self._pools.values()), {}
        for pool in pools:
            await pool.aclose()
