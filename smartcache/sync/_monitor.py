"""``client.monitor()``: redis-py's own ``Monitor``, over a connection of ours.

redis-py's ``Monitor`` sends ``MONITOR`` and parses each line the server streams back; it
asks its "pool" for one connection and that connection for ``send_command``,
``read_response``, ``encoder`` and ``disconnect``. The adapters here give it a dedicated
smartcache connection with exactly that, so the parsing (and what ``next_command()``
returns) stays the installed redis-py's. The asyncio twin: ``smartcache.asyncio._monitor``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis.client

from smartcache.sync._connection import Connection

__all__ = ["Monitor"]


class _MonitorConnection:
    """One of our connections as redis-py's Monitor talks to it."""

    def __init__(self, conn: Connection, encoder: Any) -> None:
        self._conn = conn
        self.encoder = encoder

    def send_command(self, *args: Any, **_: Any) -> None:
        self._conn.send_command(*args)

    def read_response(self, **_: Any) -> Any:
        return self._conn.read_response()

    def disconnect(self) -> None:
        self._conn.close()


class _OneConnection:
    """The "pool" a Monitor asks: it opens one dedicated connection and never reuses it."""

    def __init__(self, open_connection: Callable[[], Connection], encoder: Any) -> None:
        self._open = open_connection
        self._encoder = encoder

    def get_connection(self, *_: Any, **__: Any) -> _MonitorConnection:
        return _MonitorConnection(self._open(), self._encoder)

    def release(self, connection: Any) -> None:
        """Nothing to keep: the Monitor disconnected it."""


class Monitor(redis.client.Monitor):
    """``with client.monitor() as m: m.next_command()`` (as ``redis.Redis.monitor``)."""

    def __init__(self, open_connection: Callable[[], Connection], encoder: Any) -> None:
        super().__init__(_OneConnection(open_connection, encoder))  # type: ignore[no-untyped-call]
