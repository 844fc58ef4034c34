"""Pub/sub for SmartClient: redis-py's ``PubSub`` API over dedicated connections.

Routing, recovery and messages are :class:`~smartcache.sync._pubsub_base.BasePubSub`'s,
generated from the asyncio twin's. What only the sync world does is here: replies are read
with ``Connection.read_next`` from whichever connection ``poll`` says is readable (taking
turns, so a busy node does not starve the others; RESP2 arrays and RESP3 pushes arrive as
the same lists), one reader at a time as in redis-py; connections are new, unpooled ones;
``subscribed_event`` and ``run_in_thread()`` are redis-py's.
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from redis.client import PubSubWorkerThread

from smartcache.sync._pubsub_base import LOST, NET_ERRORS, BasePubSub, Link, PubSubClient

if TYPE_CHECKING:
    from smartcache.sync._connection import Connection

__all__ = ["PubSub"]


class _Client(PubSubClient, Protocol):
    """What a PubSub needs of its client (``SmartClient``)."""

    def _new_dedicated_connection(self, address: str | None = None) -> Connection: ...


class PubSub(BasePubSub):
    """Publish/subscribe on a SmartClient, with redis-py's ``PubSub`` API and messages.

    ``get_message`` reads every connection (classic and sharded);
    ``get_sharded_message`` only the shard-channel connections of a cluster.
    """

    _client: _Client
    subscribed_event: threading.Event
    _turn: int

    def _setup(self) -> None:
        self.subscribed_event = threading.Event()
        self._turn = 0

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # e.g. at interpreter shutdown
            self.reset()

    def close(self) -> None:
        """Same as :meth:`reset`."""
        self.reset()

    @property
    def subscribed(self) -> bool:
        """True while subscribed to any channel, pattern or shard channel."""
        return self.subscribed_event.is_set()

    # -- the sync primitives ----------------------------------------------------------------
    def _open(self, address: str | None, *, shard: bool) -> Link:
        conn = self._client._new_dedicated_connection(address)
        conn.connect()
        return Link(None, conn, shard)

    def _next_reply(self, links: list[Link], deadline: float | None) -> tuple[Link | None, Any]:
        if not links:
            return None, None
        self._turn = turn = (self._turn + 1) % len(links)
        links = links[turn:] + links[:turn]  # take turns: a busy node must not starve others
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready = _readable(links, remaining)
        if ready:
            link = ready[0]
            try:
                return link, link.conn.read_next()
            except NET_ERRORS:
                return link, LOST  # the connection closed itself; _heal() reopens it
        if deadline is not None and time.monotonic() >= deadline:
            return None, None
        return None, LOST  # nothing yet: heal, then look again

    def _subscriptions_changed(self, subscribing: bool = False) -> None:
        if subscribing or self._has_subscriptions:
            self.subscribed_event.set()
        else:
            self.subscribed_event.clear()

    def _wait_subscribed(self, timeout: float | None) -> bool:
        return self.subscribed or self.subscribed_event.wait(timeout)

    # -- redis-py's worker ------------------------------------------------------------------
    def run_in_thread(
        self,
        sleep_time: float = 0.0,
        daemon: bool = False,
        exception_handler: Callable[..., None] | None = None,
        pubsub: PubSub | None = None,
        sharded_pubsub: bool = False,
    ) -> PubSubWorkerThread:
        """Start a thread calling handlers for every message; stop it with ``.stop()``.

        Every channel, pattern and shard channel must have a handler.
        """
        self._require_handlers()
        thread = PubSubWorkerThread(
            self if pubsub is None else pubsub,
            sleep_time,
            daemon=daemon,
            exception_handler=exception_handler,
            sharded_pubsub=sharded_pubsub,
        )
        thread.start()
        return thread


def _readable(links: list[Link], timeout: float | None) -> list[Link]:
    """The links with a reply (or EOF) ready, waiting up to ``timeout`` for one."""
    ready = [link for link in links if link.conn.can_read(0.0)]
    if ready or timeout == 0 or not links:
        return ready
    if len(links) == 1:
        return links if links[0].conn.can_read(86400.0 if timeout is None else timeout) else []
    poller = select.poll()
    fds = [fd for fd in (link.conn.fileno() for link in links) if fd >= 0]
    if not fds:
        return []
    for fd in fds:
        poller.register(fd, select.POLLIN)
    poller.poll(None if timeout is None else timeout * 1000)
    return [link for link in links if link.conn.can_read(0.0)]
