"""What the Sentinel shell does differently in tasks than in threads: the asyncio side.

The generated pair (``_sentinel``, ``_sentinel_replicas``: async source, sync twin written
by ``scripts/unasync.py``) uses these names; :mod:`smartcache.sync._sentinel_io` defines
the same ones for threads.

- :class:`StateLock` guards a few attribute updates; a task is never interrupted between
  awaits, so here it does nothing (code under it never awaits).
- :func:`wait_event`: wait for an :class:`~asyncio.Event`, at most ``timeout`` seconds.
- :func:`unless_busy`: hold a lock if it is free, without waiting for it.
- :class:`PoolRetirer`: close a pool that left the topology once its in-flight commands
  are answered (:func:`drain_and_close`, in a task), and :func:`track_forks`, which has
  nothing to do (asyncio code is not fork-safe).
"""

from __future__ import annotations

import asyncio
import contextlib
from asyncio import Event, Lock
from collections.abc import AsyncIterator
from typing import Final

from smartcache.asyncio._pool import AsyncConnectionPool

__all__ = [
    "Event",
    "Lock",
    "PoolRetirer",
    "StateLock",
    "drain_and_close",
    "track_forks",
    "unless_busy",
    "wait_event",
]

#: How long a retired pool may finish its in-flight commands before it is closed.
DRAIN_SECONDS: Final = 2.0


class StateLock:
    """No lock at all: between two awaits no other task runs (``threading.Lock`` in the
    sync twin). ``with`` it around code that does not await."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc_info: object) -> None:
        return None


async def wait_event(event: Event, timeout: float) -> bool:
    """Wait until ``event`` is set, at most ``timeout`` seconds; whether it is set."""
    if not event.is_set():
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()
    return event.is_set()


@contextlib.asynccontextmanager
async def unless_busy(lock: Lock) -> AsyncIterator[bool]:
    """``async with unless_busy(lock) as held``: hold ``lock`` if it is free now (True);
    never wait for it (False)."""
    if lock.locked():
        yield False
        return
    async with lock:
        yield True


def track_forks(state: object) -> None:
    """Nothing to do: asyncio code is not fork-safe (the sync twin re-arms the state in a
    forked child)."""


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
