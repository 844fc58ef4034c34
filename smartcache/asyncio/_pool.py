"""Connections to one node for asyncio: one shared, auto-pipelined; a few exclusive ones.

Ordinary commands from every task go through :meth:`AsyncConnectionPool.shared`, one
multiplexed :class:`~smartcache.asyncio._connection.AsyncConnection` per node: sharing it
is what lets concurrent commands coalesce into one write. Commands that hold a connection
in a state (blocking pops, ``MULTI``/``EXEC`` with ``WATCH``, pub/sub) would stall or
corrupt everyone else's traffic on it, so they take an exclusive connection from a
bounded LIFO set with :meth:`AsyncConnectionPool.acquire_dedicated` and give it back with
:meth:`AsyncConnectionPool.release`. Not fork-safe: asyncio state never crosses a fork.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from typing import Any

from smartcache.asyncio._connection import DEFAULT_MAX_IN_FLIGHT, AsyncConnection
from smartcache.core.flow import Outcome
from smartcache.wire.pool_base import ATTEMPT_ERRORS, NET_ERRORS, PoolBase
from smartcache.wire.settings import ConnectionSettings

__all__ = ["AsyncConnectionPool", "run_batches"]

#: background closes of pools whose node left the topology (kept referenced until done)
_CLOSING: set[asyncio.Task[None]] = set()


class AsyncConnectionPool(PoolBase[AsyncConnection]):
    """The connections of one node for one event loop.

    ``max_connections`` bounds the *dedicated* connections (``None``: unbounded); the
    shared connection is always there besides them. ``timeout`` is how long
    :meth:`acquire_dedicated` waits when the bound is reached (``None``: forever, ``0``:
    not at all). ``max_in_flight`` is passed to the shared connection.
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        max_connections: int | None = None,
        timeout: float | None = None,
        *,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
    ) -> None:
        super().__init__(settings, max_connections, timeout)
        self.max_in_flight = max_in_flight
        self._shared: AsyncConnection | None = None
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def __aenter__(self) -> AsyncConnectionPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- the shared connection ----------------------------------------------------------------

    @property
    def connection(self) -> AsyncConnection:
        """The shared connection, possibly not connected yet: its commands connect it.

        The cheapest way to reach it on a hot path (no coroutine); see :meth:`shared`.
        """
        conn = self._shared
        if conn is None:
            self._check_open()
            conn = self._shared = AsyncConnection(self.settings, max_in_flight=self.max_in_flight)
            conn.on_connected = self.on_connected
        return conn

    async def shared(self) -> AsyncConnection:
        """The shared, auto-pipelined connection, connected (reconnected if it broke).

        Concurrent callers during a reconnect share one connect attempt.
        """
        conn = self.connection
        if not conn.is_connected:
            await conn.connect()
        return conn

    def _shared_in_use(self) -> int:
        shared = self._shared
        return 1 if shared is not None and shared.is_connected else 0

    def _pending(self) -> int:
        return len(self._waiters)

    def pipelining(self) -> tuple[int, int]:
        """``(writes, commands)`` of the shared, auto-pipelined connection so far."""
        shared = self._shared
        return (0, 0) if shared is None else (shared.write_count, shared.commands_written)

    # -- dedicated connections ----------------------------------------------------------------

    async def acquire_dedicated(self) -> AsyncConnection:
        """An exclusive, connected connection: an idle one (LIFO) or a new one.

        Waits up to ``timeout`` when ``max_connections`` are in use, then raises
        :class:`~smartcache.exceptions.PoolExhaustedError`. Give it back with :meth:`release`.
        """
        self._check_open()
        loop = asyncio.get_running_loop()
        deadline = None if self.timeout is None else loop.time() + self.timeout
        while True:
            claimed = self._claim()
            if claimed is not False:
                break
            if deadline is not None and loop.time() >= deadline:
                raise self._exhausted("dedicated connections")
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                continue  # reported above, with the pool's words
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # pass on the slot this task will not take
                raise
        if claimed is None:
            conn = AsyncConnection(self.settings)
            conn.on_connected = self.on_connected
        else:
            conn = claimed
        try:
            await conn.connect()
        except BaseException:
            self._in_use -= 1
            conn.close()
            self._wake_one()
            raise
        return conn

    def release(self, conn: AsyncConnection) -> None:
        """Give back a dedicated connection (releasing the shared one does nothing).

        It is kept for reuse only if it is connected with no reply outstanding (a
        cancelled ``BLPOP`` may still be waiting on it), its timeout and push handler
        are reset, and the pool is open; otherwise it is closed. A connection left in
        ``MULTI``, ``WATCH`` or subscribed state must be closed by the caller instead.
        """
        if conn is self._shared:
            return
        self._in_use -= 1
        if conn.is_connected and not conn.in_flight and not self._closed:
            conn.settimeout(self.settings.socket_timeout)
            conn.push_handler = None
            self._idle.append(conn)
        else:
            conn.close()
        self._wake_one()

    @asynccontextmanager
    async def dedicated(self) -> AsyncIterator[AsyncConnection]:
        """``async with pool.dedicated() as conn:`` acquire, then always release."""
        conn = await self.acquire_dedicated()
        try:
            yield conn
        finally:
            self.release(conn)

    def close_soon(self) -> None:
        """Close the pool of a node that left the topology, in the background (its
        connections may still be finishing replies)."""
        task = asyncio.get_running_loop().create_task(self.aclose())
        _CLOSING.add(task)
        task.add_done_callback(_CLOSING.discard)

    # -- one command --------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether a command can be queued at once: the pool is open and its shared
        connection is connected (nothing to await before the command is queued)."""
        shared = self._shared
        return not self._closed and shared is not None and shared.is_connected

    def execute(self, *args: Any) -> Awaitable[Any]:
        """Send one command on the shared connection; await its reply (an error reply is
        raised). Returns the connection's awaitable itself, so a hot path pays for no
        extra coroutine."""
        return self.connection.execute(*args)

    # -- one attempt of a command -------------------------------------------------------------

    async def attempt(
        self,
        args: tuple[Any, ...],
        *,
        asking: bool = False,
        blocking: bool = False,
        undecoded: bool = False,
        dedicated: bool = False,
        then: tuple[Any, ...] | None = None,
        then_timeout: float = 0.0,
    ) -> Outcome:
        """Send ``args`` once and say what happened, as the core's command flows take it
        (:class:`~smartcache.core.flow.Outcome`). The twin of
        :meth:`ConnectionPool.attempt <smartcache.sync._pool.ConnectionPool.attempt>`.

        On the shared, auto-pipelined connection; on a dedicated one when the command
        blocks (``blocking``: no read timeout), must be read undecoded (``undecoded``: the
        shared reader must never meet a reply it cannot decode) or the caller asks
        (``dedicated``: auto-pipelining off). ``asking``: prefixed by ``ASKING``.
        ``then``: a command sent right behind it on the same (dedicated) connection
        (``WAIT`` blocks the connection it runs on), the reply then being ``(reply, then's
        reply)``, with the read timeout grown by ``then_timeout`` seconds.
        """
        try:
            if then is not None:
                async with self.dedicated() as conn:
                    timeout = conn.timeout
                    if timeout is not None and then_timeout:
                        conn.settimeout(timeout + then_timeout)
                    batch = [("ASKING",), args, then] if asking else [args, then]
                    return self._settle_followed((await conn.execute_many(batch))[-2:])
            if blocking or undecoded or dedicated:
                async with self.dedicated() as conn:
                    if asking:
                        await conn.execute("ASKING")
                    if blocking:
                        conn.settimeout(None)
                    if undecoded:
                        reply = await conn.execute_undecoded(*args)
                    else:
                        reply = await conn.execute(*args)
            elif asking:
                reply = (await self.connection.execute_many([("ASKING",), args]))[1]
            else:
                reply = await self.connection.execute(*args)
        except ATTEMPT_ERRORS as exc:
            return self._failed(exc)
        return self._settle(reply)

    async def run_followed(
        self, commands: Sequence[tuple[Any, ...]], then: tuple[Any, ...], then_timeout: float
    ) -> list[Any]:
        """``commands`` then ``then`` (``WAIT``, which blocks the connection it runs on) in
        one write on a dedicated connection; one answer per command and ``then``'s last,
        errors in place (a transport error stands for every answer it cut). The twin of
        :meth:`ConnectionPool.run_followed <smartcache.sync._pool.ConnectionPool.run_followed>`."""
        try:
            async with self.dedicated() as conn:
                timeout = conn.timeout
                if timeout is not None and then_timeout:
                    conn.settimeout(timeout + then_timeout)
                return list(await conn.execute_many([*commands, then]))
        except NET_ERRORS as exc:
            return [exc] * (len(commands) + 1)

    def _wake_one(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # -- shutdown -----------------------------------------------------------------------------

    async def aclose(self) -> None:
        """Close the shared and idle connections and refuse new ones.

        Dedicated connections in use are closed when released; waiters get an error.
        """
        conns = self._close_idle()
        if self._shared is not None:
            conns.append(self._shared)
            self._shared = None
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # they wake, see the pool closed, and raise
        for conn in conns:
            await conn.aclose()


async def run_batches(
    batches: Sequence[tuple[AsyncConnectionPool, Sequence[tuple[Any, ...]]]],
) -> list[list[Any]]:
    """Send each batch of commands on its pool's shared connection, all batches at once, and
    return one list of answers per batch, one answer per command: the reply, an error reply,
    or the transport error that cut the batch (``request_sent`` says whether the command
    was written). The twin of :func:`smartcache.sync._pool.run_batches`;
    :class:`~smartcache.wire.Undecoded` commands are read undecoded.
    """

    async def one(pool: AsyncConnectionPool, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        try:
            return await pool.connection.execute_many(commands)
        except NET_ERRORS as exc:
            return [exc] * len(commands)

    return list(await asyncio.gather(*(one(pool, commands) for pool, commands in batches)))
