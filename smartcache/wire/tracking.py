"""A tracking channel: the one connection per node that receives a near cache's invalidations.

Every data connection that reads for the near cache runs ``CLIENT TRACKING ON REDIRECT
<this channel's client id>``, so the server sends the invalidations of all of them here:
one socket per node to look at before a hit, instead of one per pooled connection. The
channel speaks the client's protocol: RESP3 receives ``invalidate`` pushes, RESP2
subscribes to ``__redis__:invalidate``.

It connects with blocking I/O (the asyncio client does that in a worker thread), then
turns its socket non-blocking: :meth:`drain` reads whatever has arrived without waiting,
so a sync client can call it before every hit and an event loop can call it when the
socket is readable. Both worlds share this class; the caller holds the near cache's lock
around :meth:`drain` and :meth:`ping`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import select
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import hiredis
import redis.exceptions as rx

from smartcache.core.nearcache import INVALIDATE_CHANNEL
from smartcache.exceptions import SmartConnectionError
from smartcache.wire.connection_base import NOT_ENOUGH, raise_connect_error
from smartcache.wire.errors import parse_error, with_node
from smartcache.wire.handshake import handshake_commands
from smartcache.wire.packing import pack_commands
from smartcache.wire.settings import ConnectionSettings
from smartcache.wire.sockets import open_socket

__all__ = ["TrackingChannel"]

_PING = b"*1\r\n$4\r\nPING\r\n"
_WOULD_BLOCK = (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError, InterruptedError)


class TrackingChannel:
    """The invalidation connection to one node (see the module).

    ``on_message(channel, message)`` is called for every message read (invalidations,
    PONGs); ``on_lost(channel)`` once, when the connection is found closed or broken.
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        on_message: Callable[[TrackingChannel, Any], None],
        on_lost: Callable[[TrackingChannel], None],
    ) -> None:
        resp = settings.resp_version
        self.settings = dataclasses.replace(
            settings, protocol=resp, decode_responses=False, readonly=False
        )
        self.address = settings.address
        self.resp3 = resp == 3
        self._on_message = on_message
        self._on_lost = on_lost
        self._sock: Any = None
        self._reader: hiredis.Reader | None = None
        self._poll: select.poll | None = None
        self._buf = bytearray(65536)
        #: the server's id of this connection (the REDIRECT target)
        self.client_id = 0
        #: a new object for each life of the channel: entries and data connections that
        #: name an older one were tracked for a connection that is gone
        self.generation: object = None
        #: ``time.monotonic()`` of the last sign of life (connect, any message)
        self.last_ok = 0.0
        #: when the unanswered PING went out (0.0: none outstanding)
        self.ping_sent = 0.0
        #: the last PING round trip in seconds
        self.lag: float | None = None
        self._lost_reported = False
        #: the data connection that makes this channel's tracked reads (the server stops
        #: invalidating what a connection tracked once it closes, so its loss is the
        #: channel's loss); set by the shell's ``borrow_reader``
        self.reader: Any = None
        self.reader_connects = 0
        self._reader_fd = -1
        #: serializes the sync shell's reads on :attr:`reader`
        self.reader_lock = threading.Lock()

    def __repr__(self) -> str:
        state = "open" if self._sock is not None else "closed"
        return f"<TrackingChannel {self.address} id={self.client_id} {state}>"

    @property
    def is_open(self) -> bool:
        """True while connected."""
        return self._sock is not None

    def fileno(self) -> int:
        """The socket's file descriptor (-1 when closed), for an event loop's reader."""
        return self._sock.fileno() if self._sock is not None else -1

    def fds(self) -> tuple[int, ...]:
        """The descriptors to wait on for this channel: its socket's, and its reader's while
        the reader is idle (an idle reader speaks only when it was closed)."""
        if self._sock is None:
            return ()
        fd = self._sock.fileno()
        if self._reader_fd >= 0 and not self.reader_lock.locked():
            return (fd, self._reader_fd)
        return (fd,)

    # -- connect ----------------------------------------------------------------------------

    def connect(
        self, then: Callable[[TrackingChannel], list[tuple[Any, ...]]] | None = None
    ) -> None:
        """Open the socket, greet the node, learn the client id, send ``then(self)`` (the
        channel's own tracking, in broadcast mode) and (RESP2) subscribe.

        Blocking; raises the connection errors of a data connection (naming the node) or
        the handshake's error reply.
        """
        settings = self.settings
        try:
            sock = open_socket(settings)
        except OSError as exc:
            raise_connect_error(exc, self.address)
        reader = hiredis.Reader(replyError=parse_error, notEnoughData=NOT_ENOUGH)
        commands = handshake_commands(settings)
        commands.append(("CLIENT", "ID"))
        try:
            replies = self._round_trip(sock, reader, commands)
            self.client_id = client_id = replies[-1]
            more = [] if then is None or isinstance(client_id, Exception) else then(self)
            if not self.resp3:
                more.append(("SUBSCRIBE", INVALIDATE_CHANNEL))
            if more:
                commands += more
                replies += self._round_trip(sock, reader, more)
        except BaseException as exc:
            sock.close()
            if isinstance(exc, OSError):
                raise SmartConnectionError(
                    f"tracking channel to {self.address} failed during its handshake: {exc}",
                    node=self.address,
                ) from exc
            raise
        for command, reply in zip(commands, replies, strict=True):
            if isinstance(reply, rx.RedisError):
                sock.close()
                raise with_node(reply, " ".join(map(str, command[:2])), self.address)
        sock.setblocking(False)
        poll = select.poll()
        poll.register(sock, select.POLLIN)
        self._sock, self._reader, self._poll = sock, reader, poll
        self.generation = object()
        self.last_ok = time.monotonic()
        self.ping_sent = 0.0
        self._lost_reported = False

    def _round_trip(
        self, sock: Any, reader: hiredis.Reader, commands: list[tuple[Any, ...]]
    ) -> list[Any]:
        sock.sendall(pack_commands(commands))
        return [self._read_blocking(sock, reader) for _ in commands]

    def _read_blocking(self, sock: Any, reader: hiredis.Reader) -> Any:
        reply = reader.gets()
        while reply is NOT_ENOUGH:
            n = sock.recv_into(self._buf)
            if not n:
                raise ConnectionResetError("connection closed by server")
            reader.feed(self._buf, 0, n)  # type: ignore[arg-type]  # any buffer works
            reply = reader.gets()
        return reply

    def watch_reader(self, conn: Any) -> None:
        """Adopt ``conn`` (connected) as the reader; a sync connection's socket is polled
        with the channel's, so its end is seen before the next hit."""
        self.reader, self.reader_connects = conn, conn.connects
        fileno = getattr(conn, "fileno", None)
        if fileno is not None and self._poll is not None:
            self._reader_fd = fileno()
            self._poll.register(self._reader_fd, select.POLLIN)

    def reader_ok(self) -> bool:
        """Whether the reader is the one adopted, still connected (an idle reader has
        nothing to say: anything readable on it is its end)."""
        reader = self.reader
        return (
            reader is not None and reader.is_connected and reader.connects == self.reader_connects
        )

    # -- reading ----------------------------------------------------------------------------

    def readable(self) -> bool:
        """Whether something has arrived (a message, or the connection's end); no wait."""
        poll = self._poll
        if poll is None:
            return False
        events = poll.poll(0)
        if events:
            reader_fd = self._reader_fd
            if any(fd == reader_fd for fd, _ in events) and self._reader_ended():
                self.lost()  # the idle reader spoke: it was closed (or is out of step)
                return False
            if any(fd != reader_fd for fd, _ in events):
                return True
        pending = getattr(self._sock, "pending", None)
        return bool(pending is not None and pending())

    def _reader_ended(self) -> bool:
        """Whether the reader has something to say while idle (its end). A read in flight
        holds ``reader_lock`` and its reply is no end; so the question is asked holding
        that lock, or not at all (the reader is busy: its user sees any end itself)."""
        if not self.reader_lock.acquire(blocking=False):
            return False
        try:
            poll = self._poll
            reader_fd = self._reader_fd
            return poll is not None and any(fd == reader_fd for fd, _ in poll.poll(0))
        finally:
            self.reader_lock.release()

    def drain(self) -> None:
        """Read and hand over every message that has arrived, without waiting."""
        sock, reader = self._sock, self._reader
        if sock is None or reader is None:
            return
        buf = self._buf
        try:
            while True:
                try:
                    n = sock.recv_into(buf)
                except _WOULD_BLOCK:
                    break
                if not n:
                    raise ConnectionResetError("connection closed by server")
                reader.feed(buf, 0, n)  # type: ignore[arg-type]  # any buffer works
                message = reader.gets()
                while message is not NOT_ENOUGH:
                    self.last_ok = time.monotonic()
                    self._on_message(self, message)
                    message = reader.gets()
        except (OSError, hiredis.ProtocolError):
            self.lost()

    def took_pong(self, now: float) -> None:
        """A PING was answered: record the round trip."""
        if self.ping_sent:
            self.lag = now - self.ping_sent
            self.ping_sent = 0.0

    # -- health -----------------------------------------------------------------------------

    def ping(self) -> None:
        """Send a PING (its answer proves the channel alive, see :meth:`overdue`)."""
        sock = self._sock
        if sock is None or self.ping_sent:
            return
        try:
            if sock.send(_PING) != len(_PING):
                raise ConnectionResetError("PING not written whole")
        except _WOULD_BLOCK:
            return  # the socket is backed up: the overdue check decides
        except OSError:
            self.lost()
            return
        self.ping_sent = time.monotonic()

    def overdue(self, now: float, limit: float) -> bool:
        """Whether the channel has shown no sign of life for ``limit`` seconds."""
        return self._sock is not None and now - self.last_ok > limit

    # -- end --------------------------------------------------------------------------------

    def lost(self) -> None:
        """Close the channel and report it lost (once)."""
        if self._sock is None or self._lost_reported:
            return
        self._lost_reported = True
        try:
            self._on_lost(self)  # while the socket is open: an event loop unregisters it
        finally:
            self.close()

    def close(self) -> None:
        """Close the socket (idempotent); no report."""
        sock, self._sock, self._reader, self._poll = self._sock, None, None, None
        self.generation = None
        reader, self.reader, self._reader_fd = self.reader, None, -1
        if reader is not None:
            reader.close()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()
