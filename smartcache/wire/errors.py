"""Error replies as redis-py exceptions, and MOVED/ASK redirects as data.

Pure: no sockets, no clock, no logging. :func:`parse_error` is what the hiredis
``Reader`` calls for every ``-ERR``-style reply (``replyError=``), so it must stay cheap
and must never raise for any server text.

The prefix table reproduces redis-py's ``BaseParser.EXCEPTION_CLASSES`` and its
``parse_error`` rule exactly (a unit test pins the two together): the first word of the
message selects a class; for ``ERR`` a few exact messages select a more specific class;
the prefix is stripped from the message, as redis-py does, so ``str(exc)`` and
``exc.status_code`` look the same to a drop-in user.
"""

from __future__ import annotations

from typing import Final, Literal, NamedTuple

import redis.exceptions as rx

__all__ = [
    "ERROR_CLASSES",
    "Redirect",
    "parse_error",
    "parse_redirect",
    "redirect_from_error",
]

_ErrorClass = type[rx.RedisError]

_MODULE_LOAD_ERROR = "Error loading the extension. Please check the server logs."
_NO_SUCH_MODULE_ERROR = "Error unloading module: no such module with that name"
_MODULE_UNLOAD_NOT_POSSIBLE_ERROR = "Error unloading module: operation not possible."
_MODULE_EXPORTS_DATA_TYPES_ERROR = (
    "Error unloading module: the module exports one or more module-side data types, can't unload"
)

#: Exact ``ERR ...`` messages that redis-py maps to a class other than ResponseError.
_ERR_MESSAGES: Final[dict[str, _ErrorClass]] = {
    "max number of clients reached": rx.ConnectionError,
    "invalid password": rx.AuthenticationError,
    "wrong number of arguments for 'auth' command": rx.AuthenticationWrongNumberOfArgsError,
    "wrong number of arguments for 'AUTH' command": rx.AuthenticationWrongNumberOfArgsError,
    _MODULE_LOAD_ERROR: rx.ModuleError,
    _MODULE_EXPORTS_DATA_TYPES_ERROR: rx.ModuleError,
    _NO_SUCH_MODULE_ERROR: rx.ModuleError,
    _MODULE_UNLOAD_NOT_POSSIBLE_ERROR: rx.ModuleError,
    "AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?": rx.AuthenticationError,
    "Client sent AUTH, but no password is set": rx.AuthenticationError,
    "problem with LDAP service": rx.ExternalAuthProviderError,
    "no such fieldset": rx.NoSuchFieldsetError,
}

#: Error prefix -> class (or, for ``ERR``, exact message -> class), as in redis-py.
ERROR_CLASSES: Final[dict[str, _ErrorClass | dict[str, _ErrorClass]]] = {
    "ERR": _ERR_MESSAGES,
    "OOM": rx.OutOfMemoryError,
    "WRONGPASS": rx.AuthenticationError,
    "EXECABORT": rx.ExecAbortError,
    "LOADING": rx.BusyLoadingError,
    "NOSCRIPT": rx.NoScriptError,
    "READONLY": rx.ReadOnlyError,
    "NOAUTH": rx.AuthenticationError,
    "NOPERM": rx.NoPermissionError,
    "ASK": rx.AskError,
    "TRYAGAIN": rx.TryAgainError,
    "MOVED": rx.MovedError,
    "CLUSTERDOWN": rx.ClusterDownError,
    "CROSSSLOT": rx.ClusterCrossSlotError,
    "MASTERDOWN": rx.MasterDownError,
}


def parse_error(message: str) -> rx.RedisError:
    """Return the redis-py exception instance for an error reply's text.

    ``message`` is the reply without its leading ``-`` (``"MOVED 3999 127.0.0.1:6381"``).
    Known prefixes are stripped from the message and kept in ``status_code``, exactly
    as redis-py does. Most results are :class:`redis.exceptions.ResponseError`
    subclasses; a few are :class:`redis.exceptions.ConnectionError` subclasses
    (``WRONGPASS``/``NOAUTH`` -> ``AuthenticationError``, ``LOADING`` ->
    ``BusyLoadingError``), again as in redis-py. Never raises: a malformed ``MOVED``
    or ``ASK`` comes back as a plain ``ResponseError``.
    """
    code = message.split(" ", 1)[0]
    entry = ERROR_CLASSES.get(code)
    if entry is None:
        return rx.ResponseError(message)
    rest = message[len(code) + 1 :]
    cls = entry.get(rest, rx.ResponseError) if isinstance(entry, dict) else entry
    try:
        return cls(rest, status_code=code)
    except (ValueError, TypeError):
        # AskError/MovedError parse their text in __init__; a reply we cannot parse
        # must still come back as an error value, not blow up inside the reader.
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
