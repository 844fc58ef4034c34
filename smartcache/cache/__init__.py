"""Caching patterns over any redis-py-compatible client (sync or async).

Imports no smartcache client module: ``@cached`` works on ``SmartClient``,
``AsyncSmartClient`` and plain redis-py clients alike. See docs/caching.md.
"""

from __future__ import annotations

from smartcache.cache._base import CachePolicy, CacheStats
from smartcache.cache._bloom import BloomGuard
from smartcache.cache._cache import Cache
from smartcache.cache._codec import Entry
from smartcache.cache._decorator import (
    AsyncCachedFunction,
    CachedFunction,
    cached,
    configure,
    get_default_client,
)
from smartcache.cache._protocol import AsyncRedisLike, RedisLike
from smartcache.cache._sql_stores import AsyncSQLAlchemyStore, SQLAlchemyStore, SQLiteStore
from smartcache.cache._store import AsyncStore, Store, StoreItem
from smartcache.cache._wb_core import FlushOptions, QueueLayout
from smartcache.cache._write_behind import Flusher, WriteBehind
from smartcache.cache._write_behind_async import AsyncFlusher, AsyncWriteBehind
from smartcache.cache._write_through import WriteThrough
from smartcache.cache._write_through_decorator import (
    AsyncWriteThroughFunction,
    WriteThroughFunction,
    write_through,
)

__all__ = [
    "AsyncCachedFunction",
    "AsyncFlusher",
    "AsyncRedisLike",
    "AsyncSQLAlchemyStore",
    "AsyncStore",
    "AsyncWriteBehind",
    "AsyncWriteThroughFunction",
    "BloomGuard",
    "Cache",
    "CachePolicy",
    "CacheStats",
    "CachedFunction",
    "Entry",
    "FlushOptions",
    "Flusher",
    "QueueLayout",
    "RedisLike",
    "SQLAlchemyStore",
    "SQLiteStore",
    "Store",
    "StoreItem",
    "WriteBehind",
    "WriteThrough",
    "WriteThroughFunction",
    "ainvalidate_tag",
    "cached",
    "configure",
    "invalidate_tag",
    "write_through",
]


def invalidate_tag(tag: str, *, client: RedisLike | None = None, namespace: str = "sc") -> int:
    """Delete every entry written with ``tag`` (e.g. ``"user:1000"``); the number deleted."""
    resolved = client if client is not None else get_default_client()
    return Cache(resolved).invalidate_tag(tag, namespace=namespace)


async def ainvalidate_tag(
    tag: str, *, client: AsyncRedisLike | None = None, namespace: str = "sc"
) -> int:
    """Async :func:`invalidate_tag` (for an async client)."""
    resolved = client if client is not None else get_default_client()
    return await Cache(resolved).ainvalidate_tag(tag, namespace=namespace)
