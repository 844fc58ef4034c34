"""The clients smartcache supports satisfy the cache's client protocols (checked by mypy).

The assignments below are the test: ``mypy --strict`` on this file fails if a client lacks
a method ``smartcache.cache`` calls. The runtime test only lets pytest collect the module.
"""

from __future__ import annotations

import redis
import redis.asyncio

from smartcache import AsyncSmartClient, SmartClient
from smartcache.cache import AsyncRedisLike, RedisLike


def _redis(client: redis.Redis) -> RedisLike:
    return client


def _smart(client: SmartClient) -> RedisLike:
    return client


def _async_redis(client: redis.asyncio.Redis) -> AsyncRedisLike:
    return client


def _async_smart(client: AsyncSmartClient) -> AsyncRedisLike:
    return client


def test_protocols_are_checked_statically() -> None:
    for check in (_redis, _smart, _async_redis, _async_smart):
        assert callable(check)
