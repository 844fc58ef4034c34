"""smartcache: a drop-in redis-py client that routes by itself, with caching patterns."""

from __future__ import annotations

from smartcache.asyncio.client import AsyncSmartClient
from smartcache.cache import (
    BloomGuard,
    Cache,
    WriteBehind,
    WriteThrough,
    cached,
    configure,
    invalidate_tag,
    write_through,
)
from smartcache.core.nearcache import NearCache, NearStats
from smartcache.core.retry import RetryPolicy
from smartcache.core.slots import key_slot
from smartcache.exceptions import (
    AmbiguousCommandError,
    CacheInconsistencyError,
    ClusterUnavailableError,
    ConfigurationError,
    CrossSlotError,
    DurabilityError,
    FlushTimeoutError,
    InvalidArgumentError,
    NoReachableNodeError,
    PoolExhaustedError,
    ServerBinaryNotFoundError,
    SmartCacheError,
    SmartConnectionError,
    SmartTimeoutError,
    StaleWriteError,
    TopologyError,
    TopologyNotReadyError,
)
from smartcache.sync.client import SmartClient

__version__ = "0.1.0.dev0"

__all__ = [
    "AmbiguousCommandError",
    "AsyncSmartClient",
    "BloomGuard",
    "Cache",
    "CacheInconsistencyError",
    "ClusterUnavailableError",
    "ConfigurationError",
    "CrossSlotError",
    "DurabilityError",
    "FlushTimeoutError",
    "StaleWriteError",
    "InvalidArgumentError",
    "NearCache",
    "NearStats",
    "NoReachableNodeError",
    "PoolExhaustedError",
    "RetryPolicy",
    "ServerBinaryNotFoundError",
    "SmartCacheError",
    "SmartClient",
    "SmartConnectionError",
    "SmartTimeoutError",
    "TopologyError",
    "TopologyNotReadyError",
    "WriteBehind",
    "WriteThrough",
    "__version__",
    "cached",
    "configure",
    "invalidate_tag",
    "key_slot",
    "write_through",
]
