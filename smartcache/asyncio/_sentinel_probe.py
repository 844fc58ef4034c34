"""One-shot questions to sentinels and data nodes, with short timeouts (asyncio).

Each function opens a connection, asks, closes it, and hands the replies to the I/O-free
core (:mod:`smartcache.core.sentinel`, :mod:`smartcache.core.sentinel_flow`) to
interpret. No state, no retries: the flows decide.

``smartcache/sync/_sentinel_probe.py`` is generated from this file (``scripts/unasync.py``).
"""

from __future__ import annotations

from typing import Any

import redis.exceptions as rx

from smartcache.asyncio._connection import AsyncConnection
from smartcache.core.sentinel import SentinelAnswer, interpret_answer
from smartcache.core.sentinel_flow import judge_role
from smartcache.wire import ConnectionSettings

__all__ = ["ask_replicas", "ask_sentinel", "role_refusal"]


async def ask_sentinel(
    settings: ConnectionSettings, service: str, commands: tuple[tuple[str, ...], ...]
) -> SentinelAnswer:
    """Run ``commands`` (:func:`~smartcache.core.sentinel_flow.sentinel_queries`) on one
    sentinel in one round trip and interpret the replies."""
    conn = AsyncConnection(settings)
    try:
        replies = await conn.execute_many(commands)
    finally:
        await conn.aclose()
    return interpret_answer(service, *replies)


async def role_refusal(settings: ConnectionSettings) -> str | None:
    """None if the node says it is a primary (``ROLE``), else why it is refused.

    Wrong credentials raise at once (see :func:`~smartcache.core.sentinel_flow.judge_role`).
    """
    conn = AsyncConnection(settings)
    reply: Any
    try:
        reply = await conn.execute("ROLE")
    except (rx.RedisError, OSError) as exc:
        reply = exc
    finally:
        await conn.aclose()
    return judge_role(reply)


async def ask_replicas(settings: ConnectionSettings, command: tuple[str, ...]) -> Any:
    """Run ``command`` (``SENTINEL REPLICAS <service>``) on one sentinel; the raw reply."""
    conn = AsyncConnection(settings)
    try:
        return await conn.execute(*command)
    finally:
        await conn.aclose()
