"""What both shells share below the client: settings, handshake, packing, TLS, errors.

Connection settings (``ConnectionSettings``), the handshake (HELLO/AUTH/SELECT/CLIENT
SETNAME, RESP2 or RESP3), command packing with ``hiredis.pack_command`` and redis-py's
packer where hiredis refuses a type, error-reply parsing and redirects, TLS contexts and
socket options. The connections and pools themselves are each shell's own:
:mod:`smartcache.sync` (sockets) and :mod:`smartcache.asyncio` (transports).
"""

from __future__ import annotations

from smartcache.wire.errors import Redirect, parse_error, parse_redirect, redirect_from_error
from smartcache.wire.packing import Undecoded, pack_command, pack_commands
from smartcache.wire.settings import ConnectionSettings

__all__ = [
    "ConnectionSettings",
    "Redirect",
    "Undecoded",
    "pack_command",
    "pack_commands",
    "parse_error",
    "parse_redirect",
    "redirect_from_error",
]
