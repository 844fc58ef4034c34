"""What the sync and asyncio connection pools share: their options, checks and surface.

The pools differ in how they hand out connections (a thread-safe LIFO set; one shared
auto-pipelined connection plus exclusive ones for asyncio), not in what they are: the
connections of one node, bounded by ``max_connections``, waited for up to ``timeout``.
"""

from __future__ import annotations

from typing import Any, Self

from smartcache.exceptions import ConfigurationError, PoolExhaustedError, SmartConnectionError
from smartcache.wire.settings import POOL_KWARGS, ConnectionSettings

__all__ = ["PoolBase"]


class PoolBase:
    """The options and surface of a pool of connections to one node.

    ``max_connections=None`` means unbounded. ``timeout`` is how long a caller waits for a
    connection when the bound is reached (``None``: forever, ``0``: not at all).
    """

    _idle: Any  # the idle connections (a deque), kept by the pool
    _in_use: int

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
        self.max_connections = max_connections
        self.timeout = timeout
        self._closed = False

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

    def _exhausted(self, what: str) -> PoolExhaustedError:
        """The error for a caller that waited ``timeout`` for one of ``what``."""
        return PoolExhaustedError(
            f"all {self.max_connections} {what} to {self.settings.address} stayed in use "
            f"for {self.timeout} s; raise max_connections or release connections",
            node=self.settings.address,
        )
