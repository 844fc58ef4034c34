"""Connections to single nodes of a deployment, for the operations tools.

A :class:`Connector` opens a plain (non-routing) client to one ``host:port`` with the
credentials and TLS settings of the URL the user gave, short timeouts and one retry.
Passwords never appear in what this module prints: :func:`mask_url`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis.exceptions as rx
import tenacity

from smartcache.core.retry import RetryPolicy
from smartcache.sync.client import SmartClient

__all__ = ["ERRORS", "Connector", "error_text", "mask_url"]

#: what a node that is down or refusing raises
ERRORS = (rx.RedisError, OSError)


def mask_url(url: str) -> str:
    """``url`` with any password replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, at, tail = rest.rpartition("@")
    user = creds.split(":", 1)[0] if ":" in creds else ""
    return f"{scheme}://{user}:***{at}{tail}"


def error_text(exc: BaseException) -> str:
    """The exception's class and message, short (messages carry no secrets)."""
    return f"{type(exc).__name__}: {exc}"[:200]


class Connector:
    """Per-node clients with the URL's credentials and TLS, short timeouts, one retry."""

    def __init__(self, kwargs: dict[str, Any], timeout: float) -> None:
        #: the password and user MIGRATE must present to a target node
        self.password: str | None = kwargs.get("password")
        self.username: str | None = kwargs.get("username")
        self.kwargs = {
            k: v
            for k, v in kwargs.items()
            if k not in ("host", "port", "startup_nodes", "sentinels", "service_name")
        }
        self.kwargs.setdefault("socket_timeout", timeout)
        self.kwargs.setdefault("socket_connect_timeout", min(timeout, 2.0))
        self.policy = RetryPolicy(stop=tenacity.stop_after_attempt(2))

    @contextmanager
    def client(self, address: str, **extra: Any) -> Iterator[SmartClient]:
        host, _, port = address.rpartition(":")
        options = {**self.kwargs, **extra}
        make: Any = SmartClient  # redis-py's stubs leave an abstract attribute
        c: SmartClient = make(
            host=host, port=int(port), cluster=False, retry_policy=self.policy, **options
        )
        try:
            yield c
        finally:
            c.close()
