"""What the sync and asyncio connection pools share: their options, checks and surface.

The pools differ in how they hand out connections (a thread-safe LIFO set; one shared
auto-pipelined connection plus exclusive ones for asyncio), not in what they are: the
connections of one node, bounded by ``max_connections``, waited for up to ``timeout``.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any, Final, Generic, Literal, Self, TypeVar

import redis.exceptions as rx

from smartcache.core.flow import Outcome, failed_attempt
from smartcache.core.pipeline import TRANSPORT_ERRORS
from smartcache.exceptions import ConfigurationError, PoolExhaustedError, SmartConnectionError
from smartcache.wire.settings import POOL_KWARGS, ConnectionSettings

__all__ = ["ATTEMPT_ERRORS", "NET_ERRORS", "PoolBase"]

#: What a failed connection or transport raises (full pool, refused, lost, timed out).
NET_ERRORS: Final = TRANSPORT_ERRORS
#: What an attempt turns into an :class:`~smartcache.core.flow.Outcome` instead of raising:
#: the transport errors and the error replies (raised by the asyncio connections).
ATTEMPT_ERRORS: Final = (rx.ResponseError, *TRANSPORT_ERRORS)

C = TypeVar("C")


class PoolBase(Generic[C]):
    """The options, surface and slot bookkeeping of a pool of connections ``C`` to one node.

    ``max_connections=None`` means unbounded. ``timeout`` is how long a caller waits for a
    connection when the bound is reached (``None``: forever, ``0``: not at all).
    """

    def __init__(
        self,
        settings: ConnectionSettings,
        max_connections: int | None = None,
        timeout: float | None = None,
    ) -> None:
        if max_connections is not None and max_connections < 1:
            raise ConfigurationError(f"max_connections must be >= 1, got {max_connections!r}")
        if timeout is not None and timeout < 0:
            raise ConfigurationError(f"pool timeout must be >= 0 or None, got {timeout!r}")
        self.settings = settings
        #: ``host:port`` of the node (``settings.address``, formatted once)
        self.address: str = settings.address
        self.max_connections = max_connections
        self.timeout = timeout
        self._closed = False
        #: the client's counters (``PoolExhaustedError`` is counted there), if it set them
        self.counters: Any = None
        #: given to each connection the pool makes (``on_connected``): metrics, when on
        self.on_connected: Callable[[str, float], None] | None = None
        self._reset()

    def _reset(self) -> None:
        """Start with no connection: none idle, none in use (again in a forked child)."""
        #: the idle connections, the most recently used last
        self._idle: deque[C] = deque()
        #: connections handed out and not released (their slots are taken)
        self._in_use = 0

    @classmethod
    def from_redis_kwargs(cls, **kwargs: Any) -> Self:
        """Build a pool from redis-py ``Redis(...)`` / ``ConnectionPool(...)`` kwargs.

        ``max_connections`` and ``timeout`` (as ``BlockingConnectionPool`` spells it) go to
        the pool; everything else to :meth:`ConnectionSettings.from_redis_kwargs`.
        """
        pool_kwargs = {k: kwargs.pop(k) for k in POOL_KWARGS if k in kwargs}
        return cls(ConnectionSettings.from_redis_kwargs(**kwargs), **pool_kwargs)

    @property
    def connection_kwargs(self) -> dict[str, Any]:
        """redis-py style connection kwargs, for introspection (holds the password)."""
        return self.settings.to_redis_kwargs()

    @property
    def closed(self) -> bool:
        """True once the pool is closed."""
        return self._closed

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} {self.settings.address} db={self.settings.db} "
            f"idle={len(self._idle)} in_use={self._in_use} max={self.max_connections}>"
        )

    def _check_open(self) -> None:
        if self._closed:
            raise SmartConnectionError(
                f"connection pool for {self.settings.address} is closed",
                node=self.settings.address,
            )

    def usage(self) -> tuple[int, int, int]:
        """``(idle, used, pending)``: idle connections, connections in use (the shared
        one of an asyncio pool counts as used once connected), callers waiting for one."""
        return len(self._idle), self._in_use + self._shared_in_use(), self._pending()

    def _shared_in_use(self) -> int:
        return 0

    def _pending(self) -> int:
        return 0

    def _exhausted(self, what: str) -> PoolExhaustedError:
        """The error for a caller that waited ``timeout`` for one of ``what``."""
        if self.counters is not None:
            self.counters.pool_timed_out()
        error = PoolExhaustedError(
            f"all {self.max_connections} {what} to {self.settings.address} stayed in use "
            f"for {self.timeout} s; raise max_connections or release connections",
            node=self.settings.address,
        )
        error.request_sent = False  # nothing was written
        return error

    # -- slots ----------------------------------------------------------------------------

    def _claim(self) -> C | Literal[False] | None:
        """Take a slot if one is free (the caller holds the pool's lock, if any): an idle
        connection (LIFO), ``None`` when a new one may be opened, ``False`` when every
        slot is taken (the caller waits). Raises when the pool is closed."""
        self._check_open()
        if self._idle:
            self._in_use += 1
            return self._idle.pop()
        limit = self.max_connections
        if limit is None or self._in_use < limit:
            self._in_use += 1
            return None
        return False

    def _close_idle(self) -> list[C]:
        """Mark the pool closed and hand back its idle connections, for the caller to close
        (in-use ones are closed when released)."""
        self._closed = True
        idle = list(self._idle)
        self._idle.clear()
        return idle

    # -- outcomes -------------------------------------------------------------------------

    def _settle(self, reply: Any) -> Outcome:
        """The outcome of an attempt that got ``reply`` (an error reply fails it)."""
        if isinstance(reply, rx.RedisError):
            return failed_attempt(reply, self.settings.address)
        return Outcome(reply=reply)

    def _settle_followed(self, replies: list[Any]) -> Outcome:
        """The outcome of a command followed by another (``then``): ``(reply, then's
        reply)``, or the command's error reply."""
        reply, follow = replies
        if isinstance(reply, rx.RedisError):
            return failed_attempt(reply, self.settings.address)
        return Outcome(reply=(reply, follow))

    def _failed(self, error: BaseException) -> Outcome:
        """The outcome of an attempt that raised ``error`` (one of :data:`ATTEMPT_ERRORS`)."""
        return failed_attempt(error, self.settings.address)
