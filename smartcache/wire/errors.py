"""Error replies as redis-py exceptions (and, re-exported from :mod:`smartcache.core.redirect`,
MOVED/ASK redirects as data).

Pure: no sockets, no clock, no logging. :func:`parse_error` is what the hiredis
``Reader`` calls for every ``-ERR``-style reply (``replyError=``), so it must stay cheap
and must never raise for any server text.

The mapping from error text to exception class is redis-py's own (``BaseParser``
``parse_error`` of the installed redis-py), not a copy: redis-py changes it between
releases (8.2 added ``MaxClientsReachedError`` and a ``status_code`` for unknown error
codes), and a drop-in client must raise what the installed redis-py raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final, cast

import redis.exceptions as rx
from redis._parsers.base import BaseParser

from smartcache.core.redirect import Redirect, parse_redirect, redirect_from_error

__all__ = [
    "ERROR_CLASSES",
    "Redirect",
    "parse_error",
    "parse_redirect",
    "redirect_from_error",
    "with_node",
]

_ErrorClass = type[rx.RedisError]

#: Error prefix -> class (or, for ``ERR``, exact message -> class): the installed
#: redis-py's table, shared, never copied.
ERROR_CLASSES: Final = cast(
    "dict[str, _ErrorClass | dict[str, _ErrorClass]]", BaseParser.EXCEPTION_CLASSES
)
_redis_parse_error: Final = cast("Callable[[str], rx.RedisError]", BaseParser.parse_error)


def parse_error(message: str) -> rx.RedisError:
    """Return the redis-py exception instance for an error reply's text.

    ``message`` is the reply without its leading ``-`` (``"MOVED 3999 127.0.0.1:6381"``).
    The result is exactly what the installed redis-py's parser builds (class, text with
    the known prefix stripped, ``status_code``). Never raises: a malformed ``MOVED`` or
    ``ASK`` (whose exception classes parse their text) comes back as a plain
    ``ResponseError`` instead of blowing up inside the reply reader.
    """
    try:
        return _redis_parse_error(message)
    except (ValueError, TypeError, IndexError):
        return rx.ResponseError(message)


def with_node(error: rx.RedisError, command: str, address: str) -> rx.RedisError:
    """Re-create a handshake error of the same class with the node and command named."""
    message = f"{error} ({command} on {address})"
    try:
        return type(error)(message, status_code=getattr(error, "status_code", None))
    except (TypeError, ValueError):
        return error
