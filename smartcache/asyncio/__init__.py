"""The asyncio side of smartcache: ``AsyncSmartClient`` and its lean wire layer.

The wire layer (:mod:`smartcache.asyncio._connection`, :mod:`smartcache.asyncio._pool`)
mirrors :mod:`smartcache.wire` on asyncio transports: one auto-pipelined connection per
node carries every ordinary command, exclusive connections serve blocking commands,
transactions and pub/sub::

    from smartcache.asyncio import AsyncSmartClient
"""

from __future__ import annotations

from smartcache.asyncio._pipeline import AsyncPipeline
from smartcache.asyncio._pubsub import AsyncPubSub
from smartcache.asyncio.client import AsyncSmartClient

__all__ = ["AsyncPipeline", "AsyncPubSub", "AsyncSmartClient"]
