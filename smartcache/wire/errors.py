"""Error replies as redis-py exceptions, and MOVED/ASK redirects as data.

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
from typing import Final, Literal, NamedTuple, cast

import redis.exceptions as rx
from redis._parsers.base import BaseParser

__all__ = [
    "ERROR_CLASSES",
    "Redirect",
    "parse_error",
    "parse_redirect",
    "redirect_from_error",
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


class Redirect(NamedTuple):
    """A ``MOVED`` or ``ASK`` redirect: where ``slot`` lives now.

    ``host`` is ``""`` when the server did not name one (``MOVED 3999 :6381`` or the
    ``?`` unknown endpoint): the caller then uses the host of the connection that got the
    reply. IPv6 hosts come without brackets (``"::1"``).
    """

    kind: Literal["MOVED", "ASK"]
    slot: int
    host: str
    port: int


def _split_endpoint(endpoint: str) -> tuple[str, int]:
    host, sep, port_text = endpoint.rpartition(":")
    if not sep:
        raise ValueError(f"redirect endpoint without a port: {endpoint!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if host == "?":
        host = ""
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"redirect port out of range: {endpoint!r}")
    return host, port


def parse_redirect(message: str) -> Redirect | None:
    """Parse ``"MOVED <slot> <host>:<port>"`` or ``"ASK <slot> <host>:<port>"``.

    Returns ``None`` when ``message`` is not a redirect at all; raises ``ValueError``
    when it starts with ``MOVED``/``ASK`` but is malformed (a slot outside 0..16383,
    no port). The host is split off at the *last* colon, so ``MOVED 1 ::1:7000`` names
    host ``::1``, port 7000.
    """
    parts = message.split(" ")
    kind = parts[0]
    if kind not in ("MOVED", "ASK"):
        return None
    if len(parts) != 3:
        raise ValueError(f"malformed {kind} redirect: {message!r}")
    slot = int(parts[1])
    if not 0 <= slot < 16384:
        raise ValueError(f"redirect slot out of range: {message!r}")
    host, port = _split_endpoint(parts[2])
    return Redirect("MOVED" if kind == "MOVED" else "ASK", slot, host, port)


def redirect_from_error(error: BaseException) -> Redirect | None:
    """Return the :class:`Redirect` carried by a ``MovedError``/``AskError``, else ``None``.

    Works on the instances :func:`parse_error` builds (whose text lacks the prefix).
    """
    if isinstance(error, rx.MovedError):
        kind = "MOVED"
    elif isinstance(error, rx.AskError):
        kind = "ASK"
    else:
        return None
    try:
        return parse_redirect(f"{kind} {error.args[0]}")
    except (ValueError, IndexError):
        return None
