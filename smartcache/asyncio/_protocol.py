"""The per-transport state of an auto-pipelined connection: an ``asyncio.Protocol``.

:class:`RespProtocol` owns what lives and dies with one transport: the outgoing buffer
(flushed once per event-loop tick in one ``transport.write``), the FIFO of futures
waiting for replies, the ``hiredis.Reader`` fed by ``data_received``, and the reply
deadlines. :class:`~smartcache.asyncio._connection.AsyncConnection` makes a fresh one per
connect, so callbacks of a dead transport can only fail the futures sent on it.

What this module guarantees, and what the code below must never break:

* **Order.** A future leaves the FIFO only when its reply has been parsed. A caller that
  is cancelled leaves its (cancelled) future in place: the reply is still consumed and
  dropped, so no later caller ever gets someone else's reply.
* **No reuse after doubt.** A timeout, a lost connection or a protocol error closes the
  transport at once (``abort``, unwritten bytes are discarded) and fails every pending
  future: the timed-out ones with :class:`~smartcache.exceptions.SmartTimeoutError`, the
  rest with :class:`~smartcache.exceptions.SmartConnectionError`, each with a
  ``request_sent`` attribute telling whether its bytes had been handed to the transport
  (``False``: safe to retry anything; ``True``: the command may have run).
* **One timer.** Deadlines are kept per flush, not per command; one ``loop.call_at``
  timer per connection watches the oldest flush still unanswered.
"""

from __future__ import annotations

import asyncio
import itertools
import math
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Protocol

import hiredis
import redis.exceptions as rx

from smartcache.exceptions import SmartConnectionError, SmartTimeoutError
from smartcache.wire.connection_base import NOT_ENOUGH

if TYPE_CHECKING:
    from collections import deque

    from smartcache.wire.settings import ConnectionSettings

__all__ = ["NOT_ENOUGH", "Batch", "RespProtocol", "UnsolicitedReplyError", "transport_error"]


class _Conn(Protocol):
    """What a protocol reports to its connection (``asyncio._connection.AsyncConnection``):
    a Protocol, so this module does not import the connection's, which imports this one."""

    settings: ConnectionSettings
    address: str
    write_count: int
    commands_written: int
    _timeout: float | None
    _waiters: deque[asyncio.Future[None]]

    def _wake(self) -> None: ...
    def _on_push(self, message: Any) -> None: ...
    def _on_broken(self, proto: RespProtocol) -> None: ...


_Push: Final = hiredis.PushNotification
_RedisError: Final = rx.RedisError
_INF: Final = math.inf


class UnsolicitedReplyError(Exception):
    """A reply arrived that no command waits for and no push handler takes."""


def transport_error(
    cls: type[SmartConnectionError], message: str, node: str, sent: bool
) -> SmartConnectionError:
    """A transport error naming the node, with ``request_sent`` for the retry layer."""
    error = cls(message, node=node)
    error.request_sent = sent
    return error


class Batch:
    """The replies of an ``execute_many``: one FIFO slot per command, one future for all."""

    __slots__ = ("future", "raw", "remaining", "replies")

    def __init__(
        self, future: asyncio.Future[list[Any]], count: int, raw: frozenset[int] | None = None
    ) -> None:
        self.future = future
        self.remaining = count
        self.replies: list[Any] = []
        #: positions whose replies are read undecoded (redis-py's NEVER_DECODE), or None
        self.raw = raw

    def add(self, reply: Any) -> None:
        self.replies.append(reply)
        self.remaining -= 1
        if not self.remaining and not self.future.done():
            self.future.set_result(self.replies)


class RespProtocol(asyncio.Protocol):
    """The state of one transport: outgoing buffer, FIFO of waiters, reader, deadlines.

    A fresh protocol per connect, so callbacks of a dead transport can only fail the
    futures that were really sent on it.
    """

    __slots__ = (
        "conn",
        "flush_scheduled",
        "loop",
        "lost",
        "marks",
        "open",
        "out",
        "paused",
        "pending",
        "queued",
        "raw_pending",
        "reader",
        "ready",
        "sent",
        "timer",
        "transport",
    )

    def __init__(
        self, conn: _Conn, loop: asyncio.AbstractEventLoop, reader: hiredis.Reader
    ) -> None:
        self.conn = conn
        self.loop = loop
        self.reader = reader
        self.transport: asyncio.Transport | None = None
        #: futures (or batches) in request order, sent or still in ``out``
        self.pending: deque[Any] = deque()
        self.out: list[bytes] = []
        self.flush_scheduled = False
        #: handshake done, not closed (``open``: and writing not paused)
        self.ready = False
        self.open = False
        self.paused = False
        #: commands ever queued / ever handed to the transport (answered = queued - pending)
        self.queued = 0
        self.sent = 0
        #: replies owed to batches that want them undecoded (see :meth:`deliver_carefully`)
        self.raw_pending = 0
        #: (``sent`` after a flush, deadline of that flush), oldest first
        self.marks: deque[tuple[int, float]] = deque()
        self.timer: asyncio.TimerHandle | None = None
        self.lost: asyncio.Future[None] = loop.create_future()

    # -- asyncio callbacks ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        reader, pending = self.reader, self.pending
        reader.feed(data)
        if self.raw_pending:
            self.deliver_carefully()
            return
        try:
            reply = reader.gets()
            while reply is not NOT_ENOUGH:
                if reply.__class__ is _Push or not pending:
                    self.conn._on_push(reply)
                else:
                    entry = pending.popleft()
                    if entry.__class__ is Batch:
                        entry.add(reply)
                    elif not entry.done():  # done: its caller was cancelled; drop the reply
                        if isinstance(reply, _RedisError):
                            entry.set_exception(reply)
                        else:
                            entry.set_result(reply)
                reply = reader.gets()
        except (hiredis.ProtocolError, UnsolicitedReplyError) as exc:
            self.abort(f"protocol error: {exc}")
            return
        except UnicodeDecodeError as exc:  # hiredis consumed that reply: it is the answer
            self.deliver(exc)
            self.deliver_carefully()
            return
        self.after_replies()

    def deliver_carefully(self) -> None:
        """Deliver every complete reply one by one: read undecoded where the waiting batch
        asks for it, and hand a reply that cannot be decoded to its waiter as the
        ``UnicodeDecodeError`` redis-py raises, the connection staying usable."""
        reader, pending = self.reader, self.pending
        settings = self.conn.settings
        try:
            while True:
                head = pending[0] if pending else None
                raw = (
                    head.__class__ is Batch
                    and head.raw is not None
                    and len(head.replies) in head.raw
                )
                if raw:
                    reader.set_encoding(None)
                try:
                    reply = reader.gets()
                except UnicodeDecodeError as exc:
                    reply = exc
                finally:
                    if raw:
                        reader.set_encoding(settings.encoding, settings.encoding_errors)
                if reply is NOT_ENOUGH:
                    break
                if raw and reply.__class__ is not _Push:
                    self.raw_pending -= 1
                self.deliver(reply)
        except (hiredis.ProtocolError, UnsolicitedReplyError) as exc:
            self.abort(f"protocol error: {exc}")
            return
        self.after_replies()

    def deliver(self, reply: Any) -> None:
        """Hand one parsed reply (or push) to the oldest waiter."""
        pending = self.pending
        if reply.__class__ is _Push or not pending:
            self.conn._on_push(reply)
            return
        entry = pending.popleft()
        if entry.__class__ is Batch:
            entry.add(reply)
        elif not entry.done():  # done: its caller was cancelled; drop the reply
            if isinstance(reply, _RedisError | UnicodeDecodeError):
                entry.set_exception(reply)
            else:
                entry.set_result(reply)

    def after_replies(self) -> None:
        """After replies arrived: drop the deadlines they met, wake writers waiting for room."""
        pending = self.pending
        marks = self.marks
        if marks:
            answered = self.queued - len(pending)
            while marks and marks[0][0] <= answered:
                marks.popleft()
            if self.timer is None and marks:
                self.check_deadlines()
        if self.conn._waiters:
            self.conn._wake()

    def eof_received(self) -> bool:
        return False  # close the transport: the server hung up

    def connection_lost(self, exc: Exception | None) -> None:
        reason = "closed by the server" if exc is None else (str(exc) or type(exc).__name__)
        self.abort(f"connection lost: {reason}")
        if not self.lost.done():
            self.lost.set_result(None)

    def pause_writing(self) -> None:
        self.paused = True
        self.open = False

    def resume_writing(self) -> None:
        self.paused = False
        self.open = self.ready
        if self.out and not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)
        if self.conn._waiters:
            self.conn._wake()

    # -- writing ----------------------------------------------------------------------------

    def enqueue(self, data: bytes, entry: Any, count: int = 1) -> None:
        """Queue packed bytes and their FIFO slot(s); flushed once at the end of this tick."""
        self.out.append(data)
        if count == 1:
            self.pending.append(entry)
        else:
            self.pending.extend(itertools.repeat(entry, count))
        self.queued += count
        if not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write everything queued this tick in one ``transport.write``."""
        self.flush_scheduled = False
        out, transport = self.out, self.transport
        if not out or self.paused or transport is None or transport.is_closing():
            return
        transport.write(out[0] if len(out) == 1 else b"".join(out))
        out.clear()
        conn = self.conn
        conn.write_count += 1
        conn.commands_written += self.queued - self.sent
        self.sent = self.queued
        timeout = conn._timeout
        if timeout is None:
            self.marks.append((self.sent, _INF))
        else:
            deadline = self.loop.time() + timeout
            self.marks.append((self.sent, deadline))
            if self.timer is None:
                self.timer = self.loop.call_at(deadline, self.check_deadlines)

    # -- deadlines and failure ---------------------------------------------------------------

    def check_deadlines(self) -> None:
        """Timer callback: re-arm for the oldest unanswered flush, or time it out."""
        self.timer = None
        marks = self.marks
        answered = self.queued - len(self.pending)
        while marks and marks[0][0] <= answered:
            marks.popleft()
        if not marks or marks[0][1] == _INF:
            return  # idle, or a blocking command waits: re-armed when it is answered
        now = self.loop.time()
        if marks[0][1] > now:
            self.timer = self.loop.call_at(marks[0][1], self.check_deadlines)
            return
        expired_end = answered
        for end, deadline in marks:
            if deadline > now:
                break
            expired_end = end
        self.abort("an earlier command timed out", timed_out=expired_end - answered)

    def abort(self, reason: str, timed_out: int = 0) -> None:
        """Close the transport now and fail every pending future (idempotent).

        The first ``timed_out`` entries get ``SmartTimeoutError``, the rest
        ``SmartConnectionError``; ``request_sent`` says whether their bytes were written.
        """
        self.ready = self.open = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        transport, self.transport = self.transport, None
        if transport is not None:
            transport.abort()  # at once; bytes it still buffered count as sent (may be half read)
        pending, self.pending = self.pending, deque()
        self.raw_pending = 0
        self.out.clear()
        self.marks.clear()
        conn = self.conn
        if pending:
            node = conn.address
            sent_count = self.sent - (self.queued - len(pending))
            timeout = conn._timeout
            for index, entry in enumerate(pending):
                future = entry.future if entry.__class__ is Batch else entry
                if future.done():
                    continue
                sent = index < sent_count
                if index < timed_out:
                    error = transport_error(
                        SmartTimeoutError,
                        f"timed out after {timeout} s waiting for a reply from {node}",
                        node,
                        sent,
                    )
                else:
                    error = transport_error(
                        SmartConnectionError, f"connection to {node} failed: {reason}", node, sent
                    )
                future.set_exception(error)
        conn._on_broken(self)
