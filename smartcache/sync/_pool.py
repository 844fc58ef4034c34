"""A thread-safe LIFO pool of connections to one node.

LIFO keeps the few hottest connections busy and lets the rest age out. The pool bounds
how many connections exist at once (``max_connections``); when all are in use, ``get``
waits up to ``timeout`` for one to come back. It is fork-safe: a child process never
touches the connections it inherited (their sockets belong to the parent's
conversation); it forgets them and opens its own.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any

from smartcache.core.flow import Outcome
from smartcache.sync._connection import Connection, current_pid
from smartcache.wire.pool_base import ATTEMPT_ERRORS, PoolBase
from smartcache.wire.pool_base import NET_ERRORS as _NET
from smartcache.wire.settings import ConnectionSettings

__all__ = ["ConnectionPool", "SingleConnectionPool", "run_batches"]

# Guards the one-time reset of a pool in a forked child. Re-created in every child, so
# it can never be inherited in a locked state from a parent thread.
_fork_lock = threading.Lock()


def _reinit_fork_lock() -> None:
    global _fork_lock
    _fork_lock = threading.Lock()


os.register_at_fork(after_in_child=_reinit_fork_lock)


class ConnectionPool(PoolBase[Connection]):
    """Idle connections to one node, handed out most-recently-used first.

    ``max_connections=None`` means unbounded. ``timeout`` is how long :meth:`get` waits
    for a connection when the bound is reached (``None``: forever, ``0``: not at all).
    """

    def _reset(self) -> None:
        super()._reset()
        self._pid = current_pid()
        self._lock = threading.Lock()
        self._available = threading.Condition(self._lock)
        self._waiting = 0

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- fork safety ----------------------------------------------------------------------

    def _check_pid(self) -> None:
        if self._pid != current_pid():
            with _fork_lock:
                if self._pid != current_pid():
                    # Forget, never close: closing would not hurt the parent, but
                    # shutdown() or a QUIT would cut its conversation short.
                    for conn in self._idle:
                        conn.forget()
                    self._reset()

    # -- get / release --------------------------------------------------------------------

    def get(self) -> Connection:
        """Return a connected, healthy connection: an idle one (LIFO) or a new one.

        Raises :class:`PoolExhaustedError` when ``max_connections`` are in use past
        ``timeout``, ``SmartConnectionError`` when the pool is closed, and the
        connection errors of :meth:`Connection.connect` when a new one cannot be opened.
        """
        self._check_pid()
        conn = None
        with self._lock:
            if self._idle and not self._closed:  # the common case: reuse, no waiting
                self._in_use += 1
                conn = self._idle.pop()
        if conn is None:
            conn = self._reserve()
            if conn is None:
                fresh = Connection(self.settings)
                fresh.on_connected = self.on_connected
                return self._connected(fresh)
        if conn.is_healthy():
            return conn
        return self._connected(conn)  # is_healthy() closed it: keep the slot, reconnect

    get_connection = get

    def _reserve(self) -> Connection | None:
        """Take a slot, waiting if need be: an idle connection, or None to open a new one."""
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        with self._lock:
            while True:
                claimed = self._claim()
                if claimed is not False:
                    return claimed
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise self._exhausted("connections")
                self._waiting += 1
                try:
                    self._available.wait(remaining)
                finally:
                    self._waiting -= 1

    def _pending(self) -> int:
        return self._waiting

    def _connected(self, conn: Connection) -> Connection:
        """``conn`` connected, in a slot already taken (given back if connecting fails)."""
        try:
            conn.connect()
        except BaseException:
            self._give_back_slot()
            raise
        return conn

    def _give_back_slot(self) -> None:
        with self._lock:
            self._in_use -= 1
            if self._waiting:
                self._available.notify()

    def acquire_dedicated(self) -> Connection:
        """A connection for the caller alone until :meth:`release` (every pooled connection
        is; the name is the asyncio twin's, whose shared connection is not)."""
        return self.get()

    def release(self, conn: Connection) -> None:
        """Return ``conn`` to the pool.

        Kept only if it is still open, was opened by this process and the pool is not
        closed; otherwise it is closed (or, if inherited across fork, just forgotten).
        Releasing a connection of another pool is a caller bug and is not detected.
        """
        pid = current_pid()
        if conn.pid != self._pid or self._pid != pid:
            # Opened before a fork (by the parent, or by this pool's previous life):
            # its slot was reset with the pool. Do not touch its socket.
            if conn.pid != pid:
                conn.forget()
            return
        keep = conn.is_connected
        now = time.monotonic()
        with self._lock:
            self._in_use -= 1
            if self._waiting:  # Condition.notify() is costly even with nobody waiting
                self._available.notify()
            if keep and not self._closed:
                conn.last_used = now
                self._idle.append(conn)
                return
        conn.close()

    # -- one command ----------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether a command can go at once (the twin's "connected"): the pool is open; a
        pooled connection connects on its first use."""
        return not self._closed

    def execute(self, *args: Any) -> Any:
        """Send one command on a pooled connection and return its reply; an error reply
        is raised. The hot path of a single server or a Sentinel primary."""
        conn = self.get()
        try:
            return conn.execute(*args)
        finally:
            self.release(conn)

    # -- one attempt of a command --------------------------------------------------------

    def attempt(
        self,
        args: tuple[Any, ...],
        *,
        asking: bool = False,
        blocking: bool = False,
        undecoded: bool = False,
        then: tuple[Any, ...] | None = None,
        then_timeout: float = 0.0,
    ) -> Outcome:
        """Send ``args`` once on a connection of this pool and say what happened, as the
        core's command flows take it (:class:`~smartcache.core.flow.Outcome`): the reply,
        or the error with whether the request may have been written.

        ``asking``: prefixed by ``ASKING`` (an ``ASK`` redirect). ``blocking``: no read
        timeout (BLPOP...). ``undecoded``: the reply stays bytes (redis-py's
        ``NEVER_DECODE``). ``then``: a command sent right behind it on the same
        connection (``WAIT``), the reply then being ``(reply, then's reply)``, with the
        read timeout grown by ``then_timeout`` seconds. The twin of
        :meth:`AsyncConnectionPool.attempt
        <smartcache.asyncio._pool.AsyncConnectionPool.attempt>`.
        """
        try:
            conn = self.get()
        except _NET as exc:  # full pool, or connecting failed: nothing was written
            return Outcome(error=exc, sent=False, address=self.settings.address)
        try:
            if then is not None:
                batch = [("ASKING",), args] if asking else [args]
                return self._settle_followed(_with_follower(conn, batch, then, then_timeout))
            if asking and not undecoded:
                reply = conn.execute_many([("ASKING",), args])[1]
            else:
                if asking:
                    conn.execute("ASKING")
                if blocking:
                    reply = conn.execute_blocking(*args)
                elif undecoded:
                    reply = conn.execute_undecoded(*args)
                else:
                    conn.send_command(*args)
                    reply = conn.read_raw()
        except ATTEMPT_ERRORS as exc:
            return self._failed(exc)
        finally:
            self.release(conn)
        return self._settle(reply)

    def run_followed(
        self, commands: Sequence[tuple[Any, ...]], then: tuple[Any, ...], then_timeout: float
    ) -> list[Any]:
        """``commands`` then ``then`` (``WAIT``) in one write on one connection of this
        pool; one answer per command and ``then``'s last, errors in place (a transport
        error stands for every answer it cut, ``request_sent`` saying whether it was
        written). The twin of :meth:`AsyncConnectionPool.run_followed
        <smartcache.asyncio._pool.AsyncConnectionPool.run_followed>`."""
        try:
            conn = self.get()
        except _NET as exc:
            return [exc] * (len(commands) + 1)
        try:
            timeout = conn.settings.socket_timeout
            if timeout is not None and then_timeout:
                conn.settimeout(timeout + then_timeout)
            try:
                return list(conn.execute_many([*commands, then]))
            finally:
                if timeout is not None and then_timeout and conn.is_connected:
                    conn.settimeout(timeout)
        except _NET as exc:
            return [exc] * (len(commands) + 1)
        finally:
            self.release(conn)

    # -- shutdown -------------------------------------------------------------------------

    def close(self) -> None:
        """Close every idle connection and refuse new ones; in-use ones close on release."""
        self._check_pid()
        with self._lock:
            idle = self._close_idle()
            self._available.notify_all()
        for conn in idle:
            conn.close()

    def disconnect(self) -> None:
        """Alias of :meth:`close`, as redis-py's pools call it."""
        self.close()

    def close_soon(self) -> None:
        """Close the pool of a node that left the topology (at once here; the asyncio twin
        closes in the background)."""
        self.close()


class SingleConnectionPool(ConnectionPool):
    """``single_connection_client=True``: every user gets the same one connection, one
    at a time (``lock``, re-entrant as redis-py's ``single_connection_lock``).

    The connection object stays the same for the pool's life (``connection``): after a
    failure it closes its socket and reconnects on next use, as redis-py's does.
    """

    def __init__(self, settings: ConnectionSettings, lock: Any) -> None:
        super().__init__(settings, max_connections=1)
        self.lock = lock
        #: the one connection (redis-py's ``Redis.connection``)
        self.connection = Connection(settings)

    def get(self) -> Connection:
        """The one connection, connected; waits while another thread uses it."""
        self._check_open()
        self.lock.acquire()
        conn = self.connection
        try:
            if conn.pid and conn.pid != current_pid():
                conn.forget()  # inherited across fork(): the parent's conversation
            if not conn.is_healthy():
                conn.connect()
        except BaseException:
            self.lock.release()
            raise
        return conn

    get_connection = get

    def release(self, conn: Connection) -> None:
        """Let the next user have it (the connection stays open)."""
        conn.last_used = time.monotonic()
        self.lock.release()

    def close(self) -> None:
        """Close the connection and refuse new users."""
        self._closed = True
        self.connection.close()


def _with_follower(
    conn: Connection, batch: Sequence[tuple[Any, ...]], then: tuple[Any, ...], extra: float
) -> list[Any]:
    """``batch`` then ``then`` in one write, with the read timeout grown by ``extra``
    seconds; the last command's reply and ``then``'s (an ``ASKING`` first is skipped)."""
    timeout = conn.settings.socket_timeout
    if timeout is not None and extra:
        conn.settimeout(timeout + extra)
    try:
        return conn.execute_many([*batch, then])[-2:]
    finally:
        if timeout is not None and extra and conn.is_connected:
            conn.settimeout(timeout)


def run_batches(
    batches: Sequence[tuple[ConnectionPool, Sequence[tuple[Any, ...]]]],
) -> list[list[Any]]:
    """Send each batch of commands on a connection of its pool, every batch written before
    any reply is read (the nodes work in parallel without threads), and return one list of
    answers per batch, one answer per command: the reply, an error reply, or the transport
    error that cut the batch (``request_sent`` says whether the command was written). The
    twin of :func:`smartcache.asyncio._pool.run_batches`; :class:`~smartcache.wire.Undecoded`
    commands are read undecoded.
    """
    answers: list[list[Any]] = [[] for _ in batches]
    taken: list[tuple[int, ConnectionPool, Connection]] = []
    try:
        for b, (pool, commands) in enumerate(batches):
            try:
                conn = pool.get()
            except _NET as exc:  # full pool or no connection: nothing written
                answers[b] = [exc] * len(commands)
                continue
            try:
                conn.send_many(commands)
            except _NET as exc:
                pool.release(conn)
                answers[b] = [exc] * len(commands)
                continue
            except BaseException:
                pool.release(conn)  # bad arguments: nothing of this batch was written
                raise
            taken.append((b, pool, conn))
        for b, _, conn in taken:
            commands = batches[b][1]
            got = answers[b]
            try:
                for command in commands:
                    got.append(conn.read_for(command))
            except _NET as exc:
                got.extend([exc] * (len(commands) - len(got)))
    finally:
        for b, pool, conn in taken:
            if len(answers[b]) < len(batches[b][1]):
                conn.close()  # replies owed on it: never hand it out again
            pool.release(conn)
    return answers
