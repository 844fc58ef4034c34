"""What the Sentinel shell does differently in threads than in tasks: the sync side.

The generated pair (``_sentinel``, ``_sentinel_replicas``, written from their asyncio
source by ``scripts/unasync.py``) uses these names; :mod:`smartcache.asyncio._sentinel_io`
defines the same ones for tasks.

- :class:`StateLock` (a ``threading.Lock``) guards the state's attribute updates.
- :func:`wait_event`: wait for a ``threading.Event``, at most ``timeout`` seconds.
- :func:`unless_busy`: hold a lock if it is free, without waiting for it.
- :class:`PoolRetirer` closes a pool that left the topology at once (its connections in
  use close when released), and :func:`track_forks` re-arms a state in a forked child.
"""

from __future__ import annotations

import contextlib
import os
import weakref
from collections.abc import Iterator
from threading import Event, Lock
from threading import Lock as StateLock
from typing import Protocol

from smartcache.sync._pool import ConnectionPool

__all__ = [
    "Event",
    "Lock",
    "PoolRetirer",
    "StateLock",
    "track_forks",
    "unless_busy",
    "wait_event",
]


def wait_event(event: Event, timeout: float) -> bool:
    """Wait until ``event`` is set, at most ``timeout`` seconds; whether it is set."""
    return event.wait(timeout)


@contextlib.contextmanager
def unless_busy(lock: Lock) -> Iterator[bool]:
    """``with unless_busy(lock) as held``: hold ``lock`` if it is free now (True); never
    wait for it (False)."""
    if not lock.acquire(blocking=False):
        yield False
        return
    try:
        yield True
    finally:
        lock.release()


class ForkAware(Protocol):
    def _after_fork(self) -> None: ...


_LIVE: weakref.WeakSet[ForkAware] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for state in list(_LIVE):
        state._after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def track_forks(state: ForkAware) -> None:
    """Call ``state._after_fork()`` in a forked child, right after the fork (while the state
    lives): locks held by the parent's threads at fork time must never be reused."""
    _LIVE.add(state)


class PoolRetirer:
    """Closes pools that left the topology (at once here: a sync pool closes the
    connections in use when they are released; the asyncio twin drains in a task)."""

    def retire(self, pool: ConnectionPool) -> None:
        """Close ``pool``."""
        pool.close()

    def close(self) -> None:
        """Nothing is left retiring."""
