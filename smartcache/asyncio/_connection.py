"""One asyncio connection to one node, shared by many tasks through automatic pipelining.

Every :meth:`AsyncConnection.execute` packs its command (``hiredis.pack_command``, C),
appends the bytes to an outgoing buffer and a future to a FIFO, and returns that future;
one flush per event-loop tick writes the whole buffer with a single ``transport.write``.
``data_received`` feeds a ``hiredis.Reader`` (C) and resolves the FIFO in order. So a
hundred tasks awaiting a hundred commands in one tick cost one write, and each reply
goes to the future that asked for it, because RESP answers in request order. The
per-transport machinery and its guarantees (order under cancellation, no reuse after a
timeout or a lost connection, ``request_sent``) are in :mod:`._protocol`; this module
connects, greets the node, bounds the commands in flight and reconnects.

The hot path has no task, no ``wait_for`` and no lock per command: one future, one
deque append. No logging, retries or routing here: those live above. Not fork-safe (no
asyncio code is): a child process must build its own connections in its own loop.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Sequence
from typing import Any, Final

import hiredis
import redis.exceptions as rx

from smartcache.asyncio._protocol import Batch, RespProtocol, UnsolicitedReplyError, transport_error
from smartcache.exceptions import ConfigurationError, SmartConnectionError, SmartTimeoutError
from smartcache.wire.connection_base import ConnectionBase, raise_connect_error
from smartcache.wire.handshake import handshake_commands
from smartcache.wire.packing import Undecoded, pack_command
from smartcache.wire.settings import ConnectionSettings
from smartcache.wire.sockets import tune_socket
from smartcache.wire.tls import client_ssl_context

__all__ = ["DEFAULT_MAX_IN_FLIGHT", "AsyncConnection", "handshake_commands"]

#: Commands one connection may have sent but not yet seen answered; more callers wait.
DEFAULT_MAX_IN_FLIGHT: Final = 10_000

_Push: Final = hiredis.PushNotification


class AsyncConnection(ConnectionBase):
    """A connection to one node, safe to share between any number of tasks of one loop.

    Connects lazily on first use, or explicitly with :meth:`connect`; after a timeout or
    a transport error it is closed and the next command reconnects. Commands from all
    tasks are pipelined automatically (see the module docstring); at most
    ``max_in_flight`` are outstanding, further callers wait for room, at most
    ``socket_timeout``. Blocking commands (``BLPOP``...), transactions and pub/sub need
    a connection of their own: see :meth:`AsyncConnectionPool.acquire_dedicated`.
    """

    __slots__ = (
        "_connect_lock",
        "_generation",
        "_proto",
        "_timeout",
        "_waiters",
        "commands_written",
        "max_in_flight",
        "write_count",
    )

    def __init__(
        self, settings: ConnectionSettings, *, max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    ) -> None:
        if max_in_flight < 1:
            raise ConfigurationError(f"max_in_flight must be >= 1, got {max_in_flight!r}")
        super().__init__(settings)
        self.max_in_flight = max_in_flight
        #: how many ``transport.write`` calls this connection made (a cheap test hook)
        self.write_count = 0
        #: how many commands those writes carried (``commands_written / write_count``: the
        #: auto-pipelining batch size; counted per write, not per command)
        self.commands_written = 0
        self._proto: RespProtocol | None = None
        self._timeout = settings.socket_timeout
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._connect_lock = asyncio.Lock()
        self._generation = 0

    # -- state ----------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """True once the handshake is done and until the connection breaks or is closed."""
        proto = self._proto
        return proto is not None and proto.ready

    @property
    def in_flight(self) -> int:
        """Commands queued or sent whose replies have not arrived yet."""
        proto = self._proto
        return 0 if proto is None else len(proto.pending)

    @property
    def timeout(self) -> float | None:
        """The reply timeout applied to commands flushed from now on."""
        return self._timeout

    def settimeout(self, timeout: float | None) -> None:
        """Set the reply timeout for commands sent from now on (``None``: wait forever).

        Commands already queued keep the timeout they were queued with. The settings
        are not changed: a pool restores ``socket_timeout`` when the connection returns.
        """
        proto = self._proto
        if proto is not None and proto.out:
            proto.flush()  # queued commands keep the old timeout
        self._timeout = timeout

    async def __aenter__(self) -> AsyncConnection:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- commands ---------------------------------------------------------------------------

    def execute(self, *args: Any) -> Awaitable[Any]:
        """Queue one command and return an awaitable of its reply; an error reply is raised.

        The command is queued when ``execute`` is called, not when it is awaited, so
        calls keep their order on the wire. The hot path returns a plain future (no
        coroutine, no task); when not connected or at ``max_in_flight`` it returns a
        coroutine that connects or waits first. Transport failures raise
        ``SmartConnectionError``/``SmartTimeoutError`` with ``request_sent``.
        """
        proto = self._proto
        if proto is not None and proto.open and len(proto.pending) < self.max_in_flight:
            future = proto.loop.create_future()
            try:
                data = self._pack(args)
            except TypeError:  # a type hiredis refuses: redis-py's rule decides
                try:
                    data = pack_command(args)
                except rx.DataError as exc:
                    future.set_exception(exc)
                    return future
            # proto.enqueue(data, future), inlined: this is the per-command cost.
            proto.out.append(data)
            proto.pending.append(future)
            proto.queued += 1
            if not proto.flush_scheduled:
                proto.flush_scheduled = True
                proto.loop.call_soon(proto.flush)
            return future
        return self._execute_slow(args)

    async def _execute_slow(self, args: tuple[Any, ...]) -> Any:
        data = self._packed(args)
        proto = await self._room_for(1)
        future: asyncio.Future[Any] = proto.loop.create_future()
        proto.enqueue(data, future)
        return await future

    async def execute_undecoded(self, *args: Any) -> Any:
        """Send one command and return its reply as bytes even with ``decode_responses``
        (redis-py's ``NEVER_DECODE``: DUMP and other binary replies); an error reply is
        raised.

        Only on a connection no other task uses (a dedicated one): the reader stops
        decoding while this reply is read, and on a shared connection other tasks'
        replies would come back undecoded (or a binary reply would break it for all).
        """
        if not self.settings.decode_responses:
            return await self.execute(*args)
        await self.connect()
        proto = self._proto
        assert proto is not None
        if proto.pending:
            raise RuntimeError("execute_undecoded needs a connection with nothing in flight")
        with self._undecoded(proto.reader):
            return await self.execute(*args)

    def _current_reader(self) -> hiredis.Reader | None:
        proto = self._proto
        return None if proto is None else proto.reader

    async def execute_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Send ``commands`` contiguously (one write) and return all replies in order.

        Error replies are returned in place as exception instances, not raised; a
        transport failure raises. Nothing from other tasks is interleaved, so this is
        the primitive for pipelines, ``MULTI``...``EXEC`` and ``ASKING`` + command. The
        replies of :class:`~smartcache.wire.Undecoded` commands stay bytes.
        """
        count = len(commands)
        if not count:
            return []
        data = self._packed_many(commands)
        proto = self._proto
        if not (
            proto is not None
            and proto.open
            and (len(proto.pending) + count <= self.max_in_flight or not proto.pending)
        ):
            proto = await self._room_for(count)
        raw = None
        if self.settings.decode_responses:
            raw = frozenset(i for i, c in enumerate(commands) if c.__class__ is Undecoded) or None
        batch = Batch(proto.loop.create_future(), count, raw)
        if raw is not None:
            proto.raw_pending += len(raw)
        proto.enqueue(data, batch, count)
        return await batch.future

    async def send(self, *args: Any) -> None:
        """Queue a command whose replies no one awaits: they go to :attr:`push_handler`.

        For pub/sub on a dedicated connection (``SUBSCRIBE`` answers with pushes, or in
        RESP2 with one reply per channel); never on a shared connection.
        """
        data = self._packed(args)
        proto = await self._room_for(0)
        proto.out.append(data)  # no FIFO slot: its replies are unsolicited by design
        if not proto.flush_scheduled:
            proto.flush_scheduled = True
            proto.loop.call_soon(proto.flush)

    async def _room_for(self, count: int) -> RespProtocol:
        """Connect if needed, then wait until ``count`` more commands may be in flight.

        The wait is bounded by the reply timeout: past it, ``SmartTimeoutError`` with
        ``request_sent=False`` (nothing was queued, the connection stays up).
        """
        deadline: float | None = None
        while True:
            proto = self._proto
            if proto is None or not proto.ready:
                await self.connect()
                continue
            pending = len(proto.pending)
            if proto.open and (pending + count <= self.max_in_flight or not pending):
                return proto
            loop = proto.loop
            if deadline is None and self._timeout is not None:
                deadline = loop.time() + self._timeout
            waiter: asyncio.Future[None] = loop.create_future()
            self._waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter
            except TimeoutError:
                raise transport_error(
                    SmartTimeoutError,
                    f"timed out after {self._timeout} s waiting for room on {self.address} "
                    f"({self.max_in_flight} commands in flight)",
                    self.address,
                    False,
                ) from None
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake()  # pass on the wake-up this task will not use
                raise

    def _wake(self) -> None:
        """Wake as many waiters as there is room for (all of them if the connection broke)."""
        waiters, proto = self._waiters, self._proto
        if proto is None or not proto.ready:
            room = len(waiters)
        elif not proto.open:
            return
        else:
            room = self.max_in_flight - len(proto.pending)
        while waiters and room > 0:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                room -= 1

    def _on_push(self, message: Any) -> None:
        handler = self.push_handler
        if handler is None:
            if message.__class__ is _Push:
                return  # dropped, as redis-py does outside pub/sub
            raise UnsolicitedReplyError(f"unexpected reply {message!r:.80} from {self.address}")
        try:
            handler(message)
        except Exception as exc:
            proto = self._proto
            loop = proto.loop if proto is not None else asyncio.get_running_loop()
            loop.call_exception_handler(
                {"message": f"push handler of {self!r} failed", "exception": exc}
            )

    def _on_broken(self, proto: RespProtocol) -> None:
        if self._proto is proto:
            self._proto = None
        if self._waiters:
            self._wake()

    # -- connect and handshake ---------------------------------------------------------------

    async def connect(self) -> None:
        """Open the transport (TCP or Unix, then TLS if configured) and run the handshake.

        No-op when connected; concurrent callers share one attempt. Raises
        ``SmartTimeoutError``/``SmartConnectionError`` naming the node, or the server's
        error (e.g. ``redis.exceptions.AuthenticationError``) if the handshake is refused.
        """
        if self.is_connected:
            return
        async with self._connect_lock:
            if not self.is_connected:
                await self._open()

    async def _open(self) -> None:
        started = time.perf_counter()
        settings, address = self.settings, self.address
        generation = self._generation
        loop = asyncio.get_running_loop()
        proto = RespProtocol(self, loop, self._new_reader())
        try:
            async with asyncio.timeout(settings.socket_connect_timeout):
                await self._create_transport(loop, proto)
        except OSError as exc:  # TimeoutError too
            proto.abort("connect failed")
            raise_connect_error(exc, address)
        except BaseException:
            proto.abort("connect cancelled")
            raise
        transport = proto.transport
        tune_socket(None if transport is None else transport.get_extra_info("socket"), settings)
        try:
            await self._handshake(proto)
            if generation != self._generation:
                raise SmartConnectionError(f"{address} was closed while connecting", node=address)
        except SmartConnectionError as exc:
            proto.abort("handshake failed")
            exc.request_sent = False  # no caller's command was written on it yet
            raise
        except BaseException:
            proto.abort("handshake failed")
            raise
        proto.ready = True
        proto.open = not proto.paused
        self._proto = proto
        if self._waiters:
            self._wake()
        hook = self.on_connected
        if hook is not None:
            hook(address, time.perf_counter() - started)

    async def _create_transport(self, loop: asyncio.AbstractEventLoop, proto: RespProtocol) -> None:
        settings = self.settings
        tls: dict[str, Any] = {}
        if settings.ssl:
            context = client_ssl_context(settings)
            # Like the sync layer: SNI and host name check only when verifying names.
            tls = {
                "ssl": context,
                "server_hostname": settings.host if context.check_hostname else "",
            }
        if settings.unix_socket_path is not None:
            await loop.create_unix_connection(lambda: proto, settings.unix_socket_path, **tls)
        else:
            await loop.create_connection(lambda: proto, settings.host, settings.port, **tls)

    async def _handshake(self, proto: RespProtocol) -> None:
        commands = self._handshake_commands()
        replies: list[Any] = []
        if commands:
            batch = Batch(proto.loop.create_future(), len(commands))
            proto.enqueue(self._packed_many(commands), batch, len(commands))
            replies = await batch.future
        self._take_handshake(commands, replies)

    # -- lifecycle ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the transport now (idempotent), failing pending commands; nothing is sent.

        A connect in progress is abandoned too. Using the connection again reconnects.
        """
        self._generation += 1
        proto, self._proto = self._proto, None
        if proto is not None:
            proto.abort("closed by the client")

    async def aclose(self) -> None:
        """:meth:`close`, then wait until the transport has really let go of its socket."""
        proto = self._proto
        self.close()
        if proto is not None:
            await asyncio.shield(proto.lost)
