"""One-shot questions to sentinels and data nodes, with short timeouts.

Each function opens a connection, asks, closes it, and hands the replies to the I/O-free
:mod:`smartcache.core.sentinel` to interpret. No state, no retries: the caller decides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis.exceptions as rx

from smartcache.core.sentinel import SentinelAnswer, format_address, interpret_answer, parse_role
from smartcache.exceptions import NoReachableNodeError
from smartcache.wire import Connection, ConnectionSettings

__all__ = ["ask_sentinel", "describe", "list_replicas", "role_refusal", "short_timeouts"]


def short_timeouts(settings: ConnectionSettings, connect: float, read: float) -> ConnectionSettings:
    """``settings`` with connect/read timeouts capped at ``connect`` / ``read`` seconds."""
    return settings.replace(
        socket_timeout=_capped(settings.socket_timeout, read),
        socket_connect_timeout=_capped(settings.socket_connect_timeout, connect),
    )


def _capped(value: float | None, limit: float) -> float:
    return limit if value is None else min(value, limit)


def describe(exc: BaseException) -> str:
    """An error as one line for a "tried: ..." message."""
    return f"{type(exc).__name__}: {exc}"


def ask_sentinel(settings: ConnectionSettings, service: str) -> SentinelAnswer:
    """Ask one sentinel for the primary (with its flags) and its peers, in one round trip."""
    conn = Connection(settings)
    try:
        replies = conn.execute_many(
            [
                ("SENTINEL", "GET-MASTER-ADDR-BY-NAME", service),
                ("SENTINEL", "MASTER", service),
                ("SENTINEL", "SENTINELS", service),
            ]
        )
    finally:
        conn.close()
    return interpret_answer(service, *replies)


def role_refusal(settings: ConnectionSettings) -> str | None:
    """None if the node says it is a primary (``ROLE``), else why it is refused.

    Wrong credentials are not a reason to try another node: they raise at once.
    """
    conn = Connection(settings)
    try:
        role = parse_role(conn.execute("ROLE"))
    except (rx.AuthenticationError, rx.AuthenticationWrongNumberOfArgsError):
        raise
    except (rx.RedisError, OSError) as exc:
        return describe(exc)
    except ValueError as exc:
        return str(exc)
    finally:
        conn.close()
    if role.is_primary:
        return None
    if role.primary is not None:
        return f"ROLE says it is a {role.kind} of {format_address(role.primary)}"
    return f"ROLE says it is a {role.kind}"


def list_replicas(sentinels: Sequence[ConnectionSettings], service: str) -> Any:
    """``SENTINEL REPLICAS <service>`` from the first of ``sentinels`` that answers.

    Raises :class:`~smartcache.exceptions.NoReachableNodeError` when none does.
    """
    errors: dict[str, str] = {}
    for settings in sentinels:
        conn = Connection(settings)
        try:
            return conn.execute("SENTINEL", "REPLICAS", service)
        except (rx.RedisError, OSError) as exc:
            errors[settings.address] = describe(exc)
        finally:
            conn.close()
    raise NoReachableNodeError(
        f"no sentinel listed the replicas of {service!r}: "
        + "; ".join(f"{a}: {r}" for a, r in errors.items()),
        addresses=list(errors),
    )
