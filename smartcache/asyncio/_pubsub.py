"""Pub/sub for AsyncSmartClient: redis.asyncio's ``PubSub`` API over dedicated connections.

Routing, recovery and messages are :class:`~smartcache.asyncio._pubsub_base.BasePubSub`'s,
shared with the sync ``PubSub``. What only asyncio does is here: no reader task, every
connection's ``push_handler`` puts its replies, tagged with their link, on one
``asyncio.Queue`` that ``get_message`` awaits, and a lost connection puts a marker there;
connections come from the node's pool (``acquire_dedicated``); ``aclose()``,
``connect()`` and ``run()`` are redis.asyncio's.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Protocol

from smartcache.asyncio._pubsub_base import LOST, BasePubSub, Link, PubSubClient

if TYPE_CHECKING:
    from smartcache.asyncio._pool import AsyncConnectionPool

__all__ = ["AsyncPubSub"]

_WAKE: Final = object()  # queued by aclose() for readers waiting on the queue


class _Client(PubSubClient, Protocol):
    """What an AsyncPubSub needs of its client (``AsyncSmartClient``)."""

    async def _one_node_pool(self) -> AsyncConnectionPool | None: ...


class AsyncPubSub(BasePubSub):
    """Publish/subscribe on an AsyncSmartClient, with redis.asyncio's ``PubSub`` API.

    A handler (``await subscribe(news=handler)``) may be sync or async. Close it with
    :meth:`aclose` (or ``async with``).
    """

    _client: _Client
    _queue: asyncio.Queue[tuple[Link | None, Any]]
    _readers: int

    def _setup(self) -> None:
        self._queue = asyncio.Queue()
        self._readers = 0

    async def aclose(self) -> None:
        """Close every connection and forget all subscriptions (the object stays usable)."""
        await self.reset()

    async def close(self) -> None:
        """Same as :meth:`aclose`."""
        await self.reset()

    async def connect(self) -> None:
        """Open the connection for channels and patterns now (subscribing opens it anyway)."""
        await self._ready()
        async with self._lock:
            await self._classic_link()

    # -- the asyncio primitives -------------------------------------------------------------
    async def _open(self, address: str | None, *, shard: bool) -> Link:
        client = self._client
        pool = await client._one_node_pool()  # the standalone server, or Sentinel's primary
        if pool is None:
            router = client._router
            assert router is not None
            pool = router.state.pool(address or random.choice(router.primaries()))
        conn = await pool.acquire_dedicated()
        link = Link(pool, conn, shard)
        conn.push_handler = functools.partial(self._on_push, link)
        proto = conn._proto  # the wire layer has no public "lost" hook yet
        if proto is None:
            self._on_push(link, LOST)
        else:
            proto.lost.add_done_callback(lambda _: self._on_push(link, LOST))
        return link

    def _on_push(self, link: Link, reply: Any) -> None:
        if not link.retired:
            self._queue.put_nowait((link, reply))

    async def _next_reply(
        self, links: list[Link], deadline: float | None
    ) -> tuple[Link | None, Any]:
        # every link feeds the one queue: `links` (which get_sharded_message narrows) only
        # matter to the sync twin, which reads each connection itself
        queue = self._queue
        if queue.empty():
            if deadline is None and self._classic is None and not self._shard_links:
                raise RuntimeError(
                    "pubsub connection not set: did you forget to call subscribe() or psubscribe()?"
                )
            self._readers += 1
            try:
                delay = None if deadline is None else deadline - time.monotonic()
                async with asyncio.timeout(delay):
                    link, reply = await queue.get()
            except TimeoutError:
                return None, None
            finally:
                self._readers -= 1
        else:
            link, reply = queue.get_nowait()
        return (None, None) if reply is _WAKE else (link, reply)

    def _inbox_reset(self) -> None:
        while not self._queue.empty():
            self._queue.get_nowait()
        for _ in range(self._readers):
            self._queue.put_nowait((None, _WAKE))

    async def _call(self, function: Callable[..., Any], *args: Any) -> None:
        result = function(*args)
        if inspect.isawaitable(result):
            await result

    # -- redis.asyncio's worker -------------------------------------------------------------
    async def run(
        self,
        *,
        exception_handler: Callable[[BaseException, AsyncPubSub], Any] | None = None,
        poll_timeout: float = 1.0,
        pubsub: AsyncPubSub | None = None,
    ) -> None:
        """Call handlers for every message until cancelled (redis.asyncio's ``run``).

        Start it with ``asyncio.create_task(p.run())``, stop it with ``task.cancel()``.
        Every channel, pattern and shard channel must have a handler.
        """
        self._require_handlers()
        await self.connect()
        source = self if pubsub is None else pubsub
        while True:
            try:
                await source.get_message(ignore_subscribe_messages=True, timeout=poll_timeout)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                if exception_handler is None:
                    raise
                await self._call(exception_handler, exc, self)
            await asyncio.sleep(0)  # let other tasks run when messages keep coming
