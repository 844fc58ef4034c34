"""MOVED and ASK redirects as data: parse them, and resolve where they point.

Every shell that meets a redirect (a single command, a pipeline, a transaction, a sharded
pub/sub subscription) asks :func:`resolve_redirect` where to go, so the empty-host form
(``MOVED 3999 :6381``, or the ``?`` unknown endpoint: "the host that answered") is
understood the same way everywhere.

Pure: no sockets, no clock, no logging.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import redis.exceptions as rx

__all__ = ["Redirect", "parse_redirect", "redirect_from_error", "resolve_redirect"]


class Redirect(NamedTuple):
    """A ``MOVED`` or ``ASK`` redirect: where ``slot`` lives now.

    ``host`` is ``""`` when the server did not name one (``MOVED 3999 :6381`` or the
    ``?`` unknown endpoint): the caller then uses the host of the connection that got the
    reply (:func:`resolve_redirect` does). IPv6 hosts come without brackets (``"::1"``).
    """

    kind: Literal["MOVED", "ASK"]
    slot: int
    host: str
    port: int

    @property
    def address(self) -> str:
        """``host:port``, as the slot map spells node addresses."""
        return f"{self.host}:{self.port}"


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

    Works on the instances :func:`smartcache.wire.errors.parse_error` builds (whose text
    lacks the prefix). The host may be empty: see :func:`resolve_redirect`.
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


def resolve_redirect(error: BaseException, answered_by: str | None) -> Redirect | None:
    """The redirect carried by ``error``, its empty host replaced by ``answered_by``'s.

    ``answered_by`` is the ``host:port`` of the node whose connection got the reply:
    ``MOVED 3999 :6381`` from ``10.0.0.1:6379`` points at ``10.0.0.1:6381``. Returns
    ``None`` when ``error`` is not a (well-formed) redirect.
    """
    redirect = redirect_from_error(error)
    if redirect is None or redirect.host or not answered_by:
        return redirect
    host = answered_by.rpartition(":")[0].strip("[]")
    return redirect._replace(host=host)
