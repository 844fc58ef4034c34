"""What the sync and asyncio connections share: their fields and their world-free steps.

The connections differ in how they move bytes (a blocking socket; an asyncio transport
with automatic pipelining), not in what they do around it: the per-connection fields,
packing (``hiredis.pack_command``, redis-py's packer where hiredis refuses a type), the
``hiredis.Reader`` and its options, the connect errors naming the node, the handshake
replies and the undecoded reads (redis-py's ``NEVER_DECODE``). Those live here, once.

Nothing here is on the per-command path: the connections' ``execute`` inline what they
need, this module serves setup, error paths and the less frequent commands.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final, NoReturn

import hiredis
import redis.exceptions as rx

from smartcache.exceptions import SmartConnectionError, SmartTimeoutError
from smartcache.wire.errors import parse_error, with_node
from smartcache.wire.handshake import handshake_commands
from smartcache.wire.packing import pack_command, packer_for
from smartcache.wire.settings import ConnectionSettings

__all__ = ["NOT_ENOUGH", "ConnectionBase", "raise_connect_error"]

#: What ``Reader.gets()`` returns while a reply is incomplete (``False``/``None`` are replies).
NOT_ENOUGH: Final = object()


def raise_connect_error(exc: OSError, address: str) -> NoReturn:
    """Raise a failure to open a connection as a smartcache error naming the node (never a
    secret): ``SmartTimeoutError`` for a timeout, else ``SmartConnectionError``; nothing
    was sent (``request_sent=False``). Call it in the ``except`` block that caught ``exc``.
    """
    if isinstance(exc, TimeoutError):
        raise SmartTimeoutError(
            f"timed out connecting to {address}", node=address, request_sent=False
        ) from None
    reason = exc.strerror or str(exc) or type(exc).__name__
    raise SmartConnectionError(
        f"cannot connect to {address}: {reason}", node=address, request_sent=False
    ) from exc


class ConnectionBase:
    """The fields and world-free steps of a connection to one node (see the module)."""

    __slots__ = (
        "_pack",
        "address",
        "connects",
        "handshake_metadata",
        "near_tracking",
        "on_connected",
        "push_handler",
        "settings",
    )

    #: called with each RESP3 push message (the asyncio connection also gives it replies
    #: no command waits for: RESP2 pub/sub); when ``None`` pushes are dropped
    push_handler: Callable[[Any], None] | None

    def __init__(self, settings: ConnectionSettings) -> None:
        self.settings = settings
        #: ``host:port`` (or the Unix socket path), used in every error message
        self.address = settings.address
        #: the ``HELLO`` reply (RESP3), else ``None``
        self.handshake_metadata: Any = None
        self.push_handler = None
        self._pack = packer_for(settings)
        #: how many handshakes this connection has run (each reconnect is one more): a near
        #: cache keeps a reply only if no reconnect came between its request and reply
        self.connects = 0
        #: the near cache's tracking channel this socket tracks for (see
        #: :mod:`smartcache._near`); ``None`` after every (re)connect
        self.near_tracking: object = None
        #: called with ``(address, seconds)`` after each connect and handshake (the pool's
        #: metrics, when on: ``db.client.connection.create_time``)
        self.on_connected: Callable[[str, float], None] | None = None

    # -- state ----------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The node's host name or address."""
        return self.settings.host

    @property
    def port(self) -> int:
        """The node's port."""
        return self.settings.port

    @property
    def is_connected(self) -> bool:
        """True while connected (each world says what that means)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        state = "connected" if self.is_connected else "disconnected"
        return f"<{type(self).__name__} {self.address} db={self.settings.db} {state}>"

    # -- packing --------------------------------------------------------------------------

    def _packed(self, args: tuple[Any, ...]) -> bytes:
        """One command as RESP; raises redis-py's ``DataError`` for an argument it refuses."""
        try:
            return self._pack(args)
        except TypeError:  # a type hiredis refuses: redis-py's rule decides
            return pack_command(args)

    def _packed_many(self, commands: Sequence[Sequence[Any]]) -> bytes:
        """Several commands as one buffer, for one write."""
        pack = self._pack
        try:
            return b"".join([pack(tuple(args)) for args in commands])
        except TypeError:  # a type hiredis refuses: redis-py's rule decides
            return b"".join([pack_command(args) for args in commands])

    # -- reading --------------------------------------------------------------------------

    def _new_reader(self) -> hiredis.Reader:
        """A reply parser for a fresh connection: error replies become redis-py exceptions,
        an incomplete reply is :data:`NOT_ENOUGH`, strings decoded as the settings say."""
        settings = self.settings
        options: dict[str, Any] = {
            "replyError": parse_error,
            "notEnoughData": NOT_ENOUGH,
            "errors": settings.encoding_errors,
        }
        if settings.decode_responses:
            options["encoding"] = settings.encoding
        return hiredis.Reader(**options)

    def _current_reader(self) -> hiredis.Reader | None:
        """The reader of the open connection, if any."""
        raise NotImplementedError

    @contextmanager
    def _undecoded(self, reader: hiredis.Reader) -> Iterator[None]:
        """Replies read inside stay bytes (redis-py's ``NEVER_DECODE``); decoding resumes
        after, unless the connection was replaced meanwhile (the reader is then gone)."""
        reader.set_encoding(None)
        try:
            yield
        finally:
            if self._current_reader() is reader:
                reader.set_encoding(self.settings.encoding, self.settings.encoding_errors)

    # -- handshake ------------------------------------------------------------------------

    def _handshake_commands(self) -> list[tuple[Any, ...]]:
        return handshake_commands(self.settings)

    def _take_handshake(self, commands: Sequence[tuple[Any, ...]], replies: list[Any]) -> None:
        """Check the handshake's replies (an error reply is raised, naming the node and the
        command) and keep the ``HELLO`` reply (RESP3) as :attr:`handshake_metadata`."""
        self.connects += 1
        self.near_tracking = None
        for command, reply in zip(commands, replies, strict=True):
            if isinstance(reply, rx.RedisError):
                raise with_node(reply, command[0], self.address)
        self.handshake_metadata = replies[0] if self.settings.resp_version == 3 else None
