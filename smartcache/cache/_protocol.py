"""What the cache needs from a client: redis-py's command API, nothing smartcache-specific.

``smartcache.SmartClient``, ``AsyncSmartClient``, ``redis.Redis`` and ``redis.asyncio.Redis``
(and their cluster twins) all satisfy these protocols; this package imports none of them.
The members are exactly the client methods ``smartcache.cache`` calls (commands sent through
a pipeline are the pipeline's, not listed here); add one here before calling it.
"""

from __future__ import annotations

from typing import Any, Protocol

__all__ = ["AsyncRedisLike", "RedisLike"]


class RedisLike(Protocol):
    """A synchronous redis-py-compatible client."""

    def get(self, name: Any) -> Any:
        """GET."""
        ...

    def set(self, name: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        """SET with redis-py's options (``px=``, ``nx=``...)."""
        ...

    def delete(self, *names: Any) -> Any:
        """DEL."""
        ...

    def smembers(self, name: Any) -> Any:
        """SMEMBERS (the keys of a tag)."""
        ...

    def blpop(self, keys: Any, timeout: Any = ...) -> Any:
        """BLPOP ``keys`` for up to ``timeout`` seconds (lease waiters)."""
        ...

    def pipeline(self, transaction: bool = ..., shard_hint: Any = ...) -> Any:
        """A pipeline."""
        ...

    def register_script(self, script: Any) -> Any:
        """A callable Script object (EVALSHA with EVAL fallback)."""
        ...

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Any command."""
        ...


class AsyncRedisLike(Protocol):
    """An asyncio redis-py-compatible client (command methods return awaitables)."""

    def get(self, name: Any) -> Any:
        """GET (awaitable)."""
        ...

    def set(self, name: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        """SET (awaitable)."""
        ...

    def delete(self, *names: Any) -> Any:
        """DEL (awaitable)."""
        ...

    def smembers(self, name: Any) -> Any:
        """SMEMBERS (awaitable)."""
        ...

    def blpop(self, keys: Any, timeout: Any = ...) -> Any:
        """BLPOP (awaitable)."""
        ...

    def pipeline(self, transaction: bool = ..., shard_hint: Any = ...) -> Any:
        """A pipeline whose ``execute()`` is awaitable."""
        ...

    def register_script(self, script: Any) -> Any:
        """A Script object whose call is awaitable."""
        ...

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Any command (awaitable)."""
        ...
