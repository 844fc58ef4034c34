# Generated from smartcache/asyncio/_sentinel_probe.py by scripts/unasync.py: do not edit.
"""One-shot questions to sentinels and data nodes, with short timeouts (sync).

Each function opens a connection, asks, closes it, and hands the replies to the I/O-free
core (:mod:`smartcache.core.sentinel`, :mod:`smartcache.core.sentinel_flow`) to
interpret. No state, no retries: the flows decide.

Generated from ``smartcache/asyncio/_sentinel_probe.py`` by ``scripts/unasync.py``: edit that file.
"""

from __future__ import annotations

from typing import Any

import redis.exceptions as rx

from smartcache.core.sentinel import SentinelAnswer, interpret_answer
from smartcache.core.sentinel_flow import judge_role
from smartcache.sync._connection import Connection
from smartcache.wire import ConnectionSettings

__all__ = ["ask_replicas", "ask_sentinel", "role_refusal"]


def ask_sentinel(
    settings: ConnectionSettings, service: str, commands: tuple[tuple[str, ...], ...]
) -> SentinelAnswer:
    """Run ``commands`` (:func:`~smartcache.core.sentinel_flow.sentinel_queries`) on one
    sentinel in one round trip and interpret the replies."""
    conn = Connection(settings)
    try:
        replies = conn.execute_many(commands)
    finally:
        conn.close()
    return interpret_answer(service, *replies)


def role_refusal(settings: ConnectionSettings) -> str | None:
    """None if the node says it is a primary (``ROLE``), else why it is refused.

    Wrong credentials raise at once (see :func:`~smartcache.core.sentinel_flow.judge_role`).
    """
    conn = Connection(settings)
    reply: Any
    try:
        reply = conn.execute("ROLE")
    except (rx.RedisError, OSError) as exc:
        reply = exc
    finally:
        conn.close()
    return judge_role(reply)


def ask_replicas(settings: ConnectionSettings, command: tuple[str, ...]) -> Any:
    """Run ``command`` (``SENTINEL REPLICAS <service>``) on one sentinel; the raw reply."""
    conn = Connection(settings)
    try:
        return conn.execute(*command)
    finally:
        conn.close()
