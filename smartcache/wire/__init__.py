"""The lean synchronous wire layer: sockets, hiredis packing/parsing, pools.

It connects, speaks TLS, runs the handshake (HELLO/AUTH/SELECT/CLIENT SETNAME, RESP2
or RESP3), packs commands with ``hiredis.pack_command`` and parses replies with a
``hiredis.Reader``, and does nothing else: routing, retries and redirects belong to
the layers above, which get redirects and error replies as values from here.
"""

from __future__ import annotations

from smartcache.wire.connection import Connection, Undecoded
from smartcache.wire.errors import Redirect, parse_error, parse_redirect, redirect_from_error
from smartcache.wire.packing import pack_command, pack_commands
from smartcache.wire.pool import ConnectionPool, PoolExhaustedError
from smartcache.wire.settings import ConnectionSettings

__all__ = [
    "Connection",
    "ConnectionPool",
    "ConnectionSettings",
    "PoolExhaustedError",
    "Redirect",
    "Undecoded",
    "pack_command",
    "pack_commands",
    "parse_error",
    "parse_redirect",
    "redirect_from_error",
]
