"""The asyncio side of smartcache: ``AsyncSmartClient`` and its lean wire layer.

The wire layer (:mod:`smartcache.asyncio._connection`, :mod:`smartcache.asyncio._pool`)
mirrors :mod:`smartcache.wire` on asyncio transports: one auto-pipelined connection per
node carries every ordinary command, exclusive connections serve blocking commands,
transactions and pub/sub. Public names are re-exported here by the client's integrator.
"""

from __future__ import annotations
