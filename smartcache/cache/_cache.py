"""``Cache``: the plain cache-aside API over any redis-py-compatible client, sync or async."""

from __future__ import annotations

from smartcache.cache._async import AsyncEngine
from smartcache.cache._sync import SyncEngine

__all__ = ["Cache"]


class Cache(SyncEngine, AsyncEngine):
    """Cache-aside over ``client``: ``get_or_load`` (sync client) or ``aget_or_load`` (async).

    ``Cache(client, CachePolicy(ttl=60, jitter=30), clock=time.time, rng=random.Random())``.
    One ``Cache`` holds the in-process single-flight table, so share it between the callers
    that should share loads.
    """
