"""The asyncio client's side of the near cache: the event loop reads the tracking channels.

A channel's socket is registered with ``loop.add_reader``, so invalidations are applied as
they arrive; the keep-alive is a ``loop.call_later`` chain. A channel connects in a worker
thread (its handshake is blocking I/O), so the loop never waits on it.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from smartcache.asyncio._connection import AsyncConnection

if TYPE_CHECKING:
    from smartcache._near import NearRuntime
    from smartcache.asyncio._pool import AsyncConnectionPool
    from smartcache.wire.tracking import TrackingChannel

__all__ = ["LoopWorld", "borrow_reader", "connect_channel", "give_back_reader"]


class LoopWorld:
    """Drains channels from the running loop's reader callbacks; ticks with its timer."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._watched: dict[int, asyncio.AbstractEventLoop] = {}

    def start(self, runtime: NearRuntime) -> None:
        """Start the keep-alive timer on the running loop, if it is not running there."""
        loop = asyncio.get_running_loop()
        if self._timer is not None and self._loop is loop:
            return
        self.stop()
        self._loop = loop
        period = runtime.config.health_check_interval / 2

        def tick() -> None:
            self._timer = loop.call_later(period, tick)
            runtime.tick()

        self._timer = loop.call_later(period, tick)

    def watch(self, channel: TrackingChannel, runtime: NearRuntime) -> None:
        """Drain ``channel`` whenever its socket is readable."""
        loop = asyncio.get_running_loop()
        fd = channel.fileno()
        loop.add_reader(fd, runtime.drain_channel, channel)
        self._watched[fd] = loop

    def unwatch(self, channel: TrackingChannel) -> None:
        """Stop reading ``channel`` (called while its socket is still open)."""
        loop = self._watched.pop(channel.fileno(), None)
        if loop is not None and not loop.is_closed():
            loop.remove_reader(channel.fileno())

    def stop(self) -> None:
        """Cancel the timer (idempotent)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


async def connect_channel(runtime: NearRuntime, channel: TrackingChannel) -> TrackingChannel:
    """Connect ``channel`` in a worker thread and hand it to ``runtime``."""
    await asyncio.to_thread(channel.connect, runtime.connect_commands)
    return runtime.opened(channel)


async def borrow_reader(channel: TrackingChannel, pool: AsyncConnectionPool) -> AsyncConnection:
    """The channel's reader (opened on first use): an auto-pipelined connection of its own,
    shared by every task; its end is seen at once (the loop reads it)."""
    conn = channel.reader
    if conn is None:
        conn = AsyncConnection(pool.settings, max_in_flight=pool.max_in_flight)
        await conn.connect()
        if channel.reader is None:
            channel.watch_reader(conn)
        else:  # another task opened one meanwhile
            conn.close()
            conn = channel.reader
    return conn  # type: ignore[no-any-return]


def give_back_reader(channel: TrackingChannel) -> None:
    """Nothing to do: the reader is shared."""
