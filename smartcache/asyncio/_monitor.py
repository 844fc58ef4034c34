"""``client.monitor()`` for asyncio: redis-py's own ``redis.asyncio`` ``Monitor``, over a
dedicated connection of ours whose unsolicited replies (the MONITOR stream) it reads.

The sync twin, and why adapters: ``smartcache.sync._monitor``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final

import redis.asyncio.client
import redis.exceptions as rx

from smartcache.exceptions import SmartConnectionError

__all__ = ["AsyncMonitor"]

_LOST: Final = object()  # queued when the MONITOR connection is lost


class _AsyncMonitorConnection:
    """A dedicated asyncio connection of ours whose unsolicited replies (the MONITOR stream)
    queue up for ``read_response``."""

    def __init__(self, conn: Any, encoder: Any) -> None:
        self._conn = conn
        self.encoder = encoder
        self._replies: asyncio.Queue[Any] = asyncio.Queue()
        conn.push_handler = self._replies.put_nowait
        proto = conn._proto  # the wire layer has no public "lost" hook yet (as _pubsub.py)
        if proto is not None:
            proto.lost.add_done_callback(lambda _: self._replies.put_nowait(_LOST))

    async def send_command(self, *args: Any, **_: Any) -> None:
        await self._conn.send(*args)

    async def read_response(self, **_: Any) -> Any:
        reply = await self._replies.get()
        if reply is _LOST:
            self._replies.put_nowait(_LOST)  # every later read fails too
            address = self._conn.settings.address
            raise SmartConnectionError(f"MONITOR connection to {address} lost", node=address)
        if isinstance(reply, rx.RedisError):
            raise reply
        return reply

    async def disconnect(self) -> None:
        await self._conn.aclose()


class _AsyncOneConnection:
    def __init__(self, open_connection: Callable[[], Awaitable[Any]], encoder: Any) -> None:
        self._open = open_connection
        self._encoder = encoder

    async def get_connection(self, *_: Any, **__: Any) -> _AsyncMonitorConnection:
        return _AsyncMonitorConnection(await self._open(), self._encoder)

    async def release(self, connection: Any) -> None:
        """Nothing to keep: the Monitor disconnected it."""


class AsyncMonitor(redis.asyncio.client.Monitor):
    """``async with client.monitor() as m: await m.next_command()`` (as
    ``redis.asyncio.Redis.monitor``)."""

    def __init__(self, open_connection: Callable[[], Awaitable[Any]], encoder: Any) -> None:
        super().__init__(_AsyncOneConnection(open_connection, encoder))  # type: ignore[arg-type]
