"""One socket to one node: connect, handshake, send packed commands, read parsed replies.

This is the hot path of every command smartcache runs, so it stays lean: commands are
packed by ``hiredis.pack_command`` (C), written with one ``sendall``, and replies parsed
by a ``hiredis.Reader`` (C) fed from a preallocated buffer. No logging, no retries, no
routing here: those live above. What this module guarantees is that a connection that
saw a socket error, a timeout or a protocol error is closed at once, so it is never
reused with a reply still unread.

Error replies from the server are values: :meth:`Connection.read_raw` and
:meth:`Connection.execute_many` return them as redis-py exception instances (see
:func:`smartcache.wire.errors.parse_error`); :meth:`Connection.read_response` and
:meth:`Connection.execute` raise them. Transport failures always raise
:class:`~smartcache.exceptions.SmartConnectionError` (or its ``SmartTimeoutError``)
naming the node, never a secret.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import time
from collections.abc import Sequence
from typing import Any, Final, NoReturn

import hiredis
import redis.exceptions as rx

from smartcache.exceptions import SmartConnectionError, SmartTimeoutError
from smartcache.wire.connection_base import NOT_ENOUGH, ConnectionBase, raise_connect_error
from smartcache.wire.packing import Undecoded, pack_command
from smartcache.wire.settings import ConnectionSettings
from smartcache.wire.sockets import open_socket, set_timeout

__all__ = ["STALE_CHECK_AFTER", "Connection", "current_pid"]

_NOT_ENOUGH: Final = NOT_ENOUGH
_Push: Final = hiredis.PushNotification
_RedisError: Final = rx.RedisError

_current_pid = os.getpid()


def _refresh_pid() -> None:
    global _current_pid
    _current_pid = os.getpid()


os.register_at_fork(after_in_child=_refresh_pid)


def current_pid() -> int:
    """This process's id, kept current across fork() without a system call per check."""
    return _current_pid


#: A pooled connection idle longer than this is polled for a server-side close before reuse.
STALE_CHECK_AFTER: Final = 1.0


class Connection(ConnectionBase):
    """A connection to one node. Not thread-safe: one user at a time (the pool sees to it).

    Connects lazily on first use, or explicitly with :meth:`connect`. After any
    transport error the connection is closed; using it again reconnects.
    """

    __slots__ = ("_buf", "_reader", "_sock", "last_used", "pid")

    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__(settings)
        #: the process that opened the socket (0 before connect); a pool drops others
        self.pid = 0
        #: ``time.monotonic()`` at connect, last health check, or last pool release
        self.last_used = 0.0
        self._sock: socket.socket | None = None
        self._reader: hiredis.Reader | None = None
        self._buf = bytearray(settings.socket_read_size)

    # -- state ----------------------------------------------------------------------------

    def fileno(self) -> int:
        """The socket's file descriptor (for ``select``/``poll`` over many connections); -1
        when not connected."""
        return self._sock.fileno() if self._sock is not None else -1

    @property
    def is_connected(self) -> bool:
        """True while a socket is open (it may still have been closed by the server)."""
        return self._sock is not None

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- connect and handshake -------------------------------------------------------------

    def connect(self) -> None:
        """Open the socket (TCP or Unix, then TLS if configured) and run the handshake.

        No-op when already connected. Raises ``SmartTimeoutError`` /
        ``SmartConnectionError`` naming the node, or the server's error (for example
        ``redis.exceptions.AuthenticationError``) when the handshake is refused.
        """
        if self._sock is not None:
            return
        started = time.perf_counter()
        try:
            sock = open_socket(self.settings)
        except OSError as exc:  # TimeoutError too
            raise_connect_error(exc, self.address)
        self._reader = self._new_reader()
        self._sock = sock
        self.pid = os.getpid()
        try:
            self._handshake()
        except (SmartConnectionError, SmartTimeoutError) as exc:
            self.close()
            exc.request_sent = False  # the caller's command was not written yet
            raise
        except BaseException:
            self.close()
            raise
        self.last_used = time.monotonic()
        hook = self.on_connected
        if hook is not None:
            hook(self.address, time.perf_counter() - started)

    def _handshake(self) -> None:
        commands = self._handshake_commands()
        self._take_handshake(commands, self.execute_many(commands) if commands else [])

    # -- writing ---------------------------------------------------------------------------

    def send_packed(self, data: bytes | bytearray | memoryview) -> None:
        """Write already packed commands in one ``sendall`` (connecting if needed)."""
        sock = self._sock
        if sock is None:
            self.connect()
            sock = self._sock
            assert sock is not None
        try:
            sock.sendall(data)
        except BaseException as exc:
            # sendall failed before every byte was accepted: no command was written whole,
            # and the server runs none of a half-written one
            self._fail(exc, "writing to", sent=False)

    def send_command(self, *args: Any) -> None:
        """Pack and write one command; read its reply later with :meth:`read_response`."""
        self.send_packed(self._packed(args))

    #: the asyncio twin's name for it (pub/sub sends and reads the replies as they come)
    send = send_command

    def send_many(self, commands: Sequence[Sequence[Any]]) -> int:
        """Pack and write several commands in one ``sendall``; return how many were sent."""
        self.send_packed(self._packed_many(commands))
        return len(commands)

    # -- reading ---------------------------------------------------------------------------

    def read_next(self) -> Any:
        """Return the next reply *or* RESP3 push message, exactly as parsed.

        For pub/sub readers; error replies are returned as exception instances.
        """
        sock, reader = self._sock, self._reader
        if sock is None or reader is None:
            raise SmartConnectionError(f"not connected to {self.address}", node=self.address)
        buf = self._buf
        try:
            reply = reader.gets()
            while reply is _NOT_ENOUGH:
                n = sock.recv_into(buf)
                if not n:
                    raise ConnectionResetError("connection closed by server")
                reader.feed(buf, 0, n)  # type: ignore[arg-type]  # any buffer works
                reply = reader.gets()
        except BaseException as exc:
            self._fail(exc, "reading from")
        return reply

    def read_raw(self) -> Any:
        """Return the next reply; an error reply comes back as an exception instance.

        RESP3 push messages met on the way go to :attr:`push_handler` (or are dropped).
        """
        reply = self.read_next()
        while type(reply) is _Push:
            self._on_push(reply)
            reply = self.read_next()
        return reply

    def read_undecoded(self) -> Any:
        """:meth:`read_raw`, the reply as bytes even with ``decode_responses`` (redis-py's
        ``NEVER_DECODE``: DUMP, SLOWLOG GET and other replies whose parser wants bytes)."""
        reader = self._reader
        if not self.settings.decode_responses or reader is None:
            return self.read_raw()
        with self._undecoded(reader):
            return self.read_raw()

    def _current_reader(self) -> hiredis.Reader | None:
        return self._reader

    def read_for(self, args: Sequence[Any]) -> Any:
        """The reply to ``args``: :meth:`read_undecoded` for an :class:`Undecoded` command,
        else :meth:`read_raw`."""
        if args.__class__ is Undecoded:
            return self.read_undecoded()
        return self.read_raw()

    def read_response(self, disable_decoding: bool = False) -> Any:
        """Return the next reply, raising it if it is an error reply.

        ``disable_decoding=True`` returns it as bytes even with ``decode_responses`` (as
        redis-py's connections take it, for ``parse_response`` with ``NEVER_DECODE``).
        """
        reply = self.read_undecoded() if disable_decoding else self.read_raw()
        if isinstance(reply, _RedisError):
            raise reply
        return reply

    def _on_push(self, message: list[Any]) -> None:
        handler = self.push_handler
        if handler is not None:
            try:
                handler(message)
            except BaseException as exc:
                # The reply we were waiting for is still unread: do not keep the socket.
                self.close()
                raise SmartConnectionError(
                    f"push handler failed on {self.address}: {exc!r}", node=self.address
                ) from exc

    def can_read(self, timeout: float = 0.0) -> bool:
        """True if a reply (or EOF) is ready within ``timeout`` seconds; for pub/sub."""
        sock, reader = self._sock, self._reader
        if sock is None or reader is None:
            return False
        if reader.has_data():
            return True
        pending = getattr(sock, "pending", None)
        if pending is not None and pending():
            return True
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        return bool(poller.poll(timeout * 1000))

    # -- round trips ----------------------------------------------------------------------

    def execute(self, *args: Any) -> Any:
        """Send one command and return its reply; an error reply is raised.

        The hot path: one ``pack_command``, one ``sendall``, then ``recv_into`` and
        ``Reader.gets()`` until the reply is complete.
        """
        try:
            data = self._pack(args)
        except TypeError:  # a type hiredis refuses: redis-py's rule decides
            data = pack_command(args)
        sock = self._sock
        if sock is None:
            self.connect()
            sock = self._sock
            assert sock is not None
        reader = self._reader
        assert reader is not None
        buf = self._buf
        try:
            sock.sendall(data)
            reply = reader.gets()
            while reply is _NOT_ENOUGH:
                n = sock.recv_into(buf)
                if not n:
                    raise ConnectionResetError("connection closed by server")
                reader.feed(buf, 0, n)  # type: ignore[arg-type]  # any buffer works
                reply = reader.gets()
        except BaseException as exc:
            self._fail(exc, "talking to")
        if type(reply) is _Push:
            self._on_push(reply)
            reply = self.read_raw()
        if isinstance(reply, _RedisError):
            raise reply
        return reply

    def execute_blocking(self, *args: Any) -> Any:
        """Send a blocking command (BLPOP, XREAD BLOCK...) and wait for its reply with no
        read timeout, then restore the socket timeout; an error reply is returned as an
        exception instance."""
        self.send_command(*args)
        self.settimeout(None)
        reply = self.read_raw()
        self.settimeout(self.settings.socket_timeout)
        return reply

    def execute_undecoded(self, *args: Any) -> Any:
        """Send one command and return its reply as bytes even with ``decode_responses``
        (redis-py's ``NEVER_DECODE``: DUMP and other binary replies); an error reply is
        returned as an exception instance."""
        self.send_command(*args)
        return self.read_undecoded()

    def execute_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send all ``commands`` in one write, then return all replies in order.

        Error replies are returned in place as exception instances, not raised.
        """
        count = self.send_many(commands)
        if self.settings.decode_responses:
            return [self.read_for(args) for args in commands]
        read = self.read_raw
        return [read() for _ in range(count)]

    # -- health and lifecycle -------------------------------------------------------------

    def settimeout(self, timeout: float | None) -> None:
        """Change the read/write timeout of the open socket (e.g. around a blocking command).

        ``None`` waits forever. The connection's settings are not changed: the next
        connect uses ``socket_timeout`` again.
        """
        if self._sock is not None:
            set_timeout(self._sock, timeout)

    def is_healthy(self, now: float | None = None) -> bool:
        """True if this connection may be reused now; closes it when it may not.

        Checks that it is open and owned by this process; after
        :data:`STALE_CHECK_AFTER` seconds idle, that the server has not closed it (a
        non-blocking poll); after ``health_check_interval`` seconds idle, that it
        answers ``PING``.
        """
        if self._sock is None or self.pid != _current_pid:
            return False
        if now is None:
            now = time.monotonic()
        idle = now - self.last_used
        if idle > STALE_CHECK_AFTER and self.can_read(0.0):
            # Unsolicited data or EOF on an idle connection: it is out of step or dead.
            self.close()
            return False
        interval = self.settings.health_check_interval
        if interval and idle > interval:
            try:
                reply = self.execute("PING")
            except rx.RedisError:
                self.close()
                return False
            if reply not in (b"PONG", "PONG"):
                self.close()
                return False
            self.last_used = now
        return True

    def _fail(self, exc: BaseException, doing: str, sent: bool | None = None) -> NoReturn:
        """Close after a failure mid-command, then raise it as a smartcache error;
        ``sent=False``: no command was written (``request_sent``; None: maybe)."""
        self.close()
        address = self.address
        if isinstance(exc, TimeoutError | BlockingIOError):
            # BlockingIOError: SO_RCVTIMEO/SO_SNDTIMEO expired (see _set_read_timeout).
            raise SmartTimeoutError(
                f"timed out {doing} {address}", node=address, request_sent=sent
            ) from exc
        if isinstance(exc, OSError):
            reason = exc.strerror or str(exc) or type(exc).__name__
            raise SmartConnectionError(
                f"error {doing} {address}: {reason}", node=address, request_sent=sent
            ) from exc
        if isinstance(exc, hiredis.ProtocolError):
            raise SmartConnectionError(
                f"protocol error {doing} {address}: {exc}", node=address
            ) from exc
        raise exc

    def close(self) -> None:
        """Close the socket (idempotent). Never sends anything to the server."""
        sock = self._sock
        self._sock = None
        self._reader = None
        if sock is None:
            return
        if self.pid == os.getpid():
            # shutdown() would also cut a copy of this socket inherited across fork().
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()

    def forget(self) -> None:
        """Drop a socket inherited across fork() without disturbing the parent.

        Only this process's file descriptor is closed: no shutdown(), nothing sent, so
        the parent's conversation on the same TCP connection goes on untouched.
        """
        sock = self._sock
        self._sock = None
        self._reader = None
        if sock is not None:
            with contextlib.suppress(OSError):
                os.close(sock.detach())
