"""Sentinel, I/O-free: read what sentinels and nodes say, and track failovers as they happen.

This module parses ``SENTINEL GET-MASTER-ADDR-BY-NAME`` / ``MASTER`` / ``REPLICAS`` /
``SENTINELS`` and ``ROLE`` replies (RESP2 flat lists or RESP3 maps, ``bytes`` or ``str``) into
small frozen values and decides which reported primary and replicas are usable. It is also
the one import for the rest of the Sentinel core: pub/sub events and the failover state
machine (:class:`FailoverState`, all of its transitions in :mod:`smartcache.core._failover`)
and :func:`parse_sentinel_url` (:mod:`smartcache.core._sentinel_url`).

Pure: no sockets, no threads, no clock, no sleeping. The shells do the I/O and feed the
replies and events in here. Redis's own words (``master``, ``slave``, ``s_down``) appear only
where we quote the protocol; our values say primary and replica.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from smartcache.core._failover import (
    WATCHED_CHANNELS,
    FailoverState,
    SentinelEvent,
    parse_event,
    parse_pubsub_message,
)
from smartcache.core._sentinel_common import Address, as_int, as_port, as_text, format_address
from smartcache.core._sentinel_url import SentinelURL, parse_sentinel_url

__all__ = [
    "DOWN_FLAGS",
    "WATCHED_CHANNELS",
    "Address",
    "FailoverState",
    "PrimaryInfo",
    "ReplicaInfo",
    "Role",
    "SentinelAnswer",
    "SentinelEvent",
    "SentinelInfo",
    "SentinelURL",
    "format_address",
    "interpret_answer",
    "parse_event",
    "parse_master_address",
    "parse_pubsub_message",
    "parse_replicas",
    "parse_role",
    "parse_sentinel_url",
    "parse_sentinels",
    "usable_replicas",
]

#: Flags (of ``SENTINEL MASTER`` / ``REPLICAS`` / ``SENTINELS``) that make an instance unusable.
DOWN_FLAGS: Final = frozenset({"s_down", "o_down", "disconnected"})


def _fields(reply: Any) -> dict[str, str]:
    """A ``SENTINEL MASTER``-style reply (flat list or map) as ``{field: text}``."""
    if isinstance(reply, Mapping):
        return {as_text(k): as_text(v) for k, v in reply.items()}
    items = list(reply)
    return {as_text(items[i]): as_text(items[i + 1]) for i in range(0, len(items) - 1, 2)}


def _flags(text: str) -> frozenset[str]:
    return frozenset(f for f in text.split(",") if f)


# -- replies of SENTINEL commands ------------------------------------------------------------


def parse_master_address(reply: Any) -> Address | None:
    """``SENTINEL GET-MASTER-ADDR-BY-NAME``: ``(host, port)``, or None for an unknown service."""
    if reply is None or isinstance(reply, BaseException):
        return None
    host, port = reply
    return as_text(host), as_port(port)


@dataclass(frozen=True, slots=True)
class PrimaryInfo:
    """A sentinel's view of the primary (``SENTINEL MASTER <name>``)."""

    name: str
    host: str
    port: int
    flags: frozenset[str]
    num_replicas: int = 0
    num_other_sentinels: int = 0
    quorum: int = 0
    config_epoch: int = 0

    @property
    def address(self) -> Address:
        """``(host, port)``."""
        return self.host, self.port

    @property
    def is_down(self) -> bool:
        """True when this sentinel flags it ``s_down``, ``o_down`` or ``disconnected``."""
        return bool(self.flags & DOWN_FLAGS)

    @classmethod
    def from_reply(cls, reply: Any) -> PrimaryInfo:
        """Parse a ``SENTINEL MASTER`` reply (RESP2 flat list or RESP3 map)."""
        f = _fields(reply)
        return cls(
            name=f.get("name", ""),
            host=f["ip"],
            port=as_port(f["port"]),
            flags=_flags(f.get("flags", "")),
            num_replicas=as_int(f.get("num-slaves")),
            num_other_sentinels=as_int(f.get("num-other-sentinels")),
            quorum=as_int(f.get("quorum")),
            config_epoch=as_int(f.get("config-epoch")),
        )


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """A sentinel's view of one replica (an entry of ``SENTINEL REPLICAS <name>``)."""

    host: str
    port: int
    flags: frozenset[str]
    master_link_status: str = ""
    role_reported: str = ""
    primary_host: str = ""
    primary_port: int = 0
    priority: int = 100
    repl_offset: int = 0

    @property
    def address(self) -> Address:
        """``(host, port)``."""
        return self.host, self.port

    @property
    def usable(self) -> bool:
        """True when it may serve reads: up, linked to its primary, and really a replica."""
        return (
            not (self.flags & DOWN_FLAGS)
            and self.master_link_status == "ok"
            and self.role_reported in ("", "slave")
        )

    @classmethod
    def from_reply(cls, reply: Any) -> ReplicaInfo:
        """Parse one entry of a ``SENTINEL REPLICAS`` reply."""
        f = _fields(reply)
        return cls(
            host=f["ip"],
            port=as_port(f["port"]),
            flags=_flags(f.get("flags", "")),
            master_link_status=f.get("master-link-status", ""),
            role_reported=f.get("role-reported", ""),
            primary_host=f.get("master-host", ""),
            primary_port=as_int(f.get("master-port")),
            priority=as_int(f.get("slave-priority"), 100),
            repl_offset=as_int(f.get("slave-repl-offset")),
        )


@dataclass(frozen=True, slots=True)
class SentinelInfo:
    """Another sentinel watching the same service (an entry of ``SENTINEL SENTINELS``)."""

    host: str
    port: int
    run_id: str = ""
    flags: frozenset[str] = frozenset()

    @property
    def address(self) -> Address:
        """``(host, port)``."""
        return self.host, self.port

    @property
    def usable(self) -> bool:
        """True unless flagged ``s_down``, ``o_down`` or ``disconnected``."""
        return not (self.flags & DOWN_FLAGS)

    @classmethod
    def from_reply(cls, reply: Any) -> SentinelInfo:
        """Parse one entry of a ``SENTINEL SENTINELS`` reply."""
        f = _fields(reply)
        return cls(
            host=f["ip"],
            port=as_port(f["port"]),
            run_id=f.get("runid", ""),
            flags=_flags(f.get("flags", "")),
        )


def parse_replicas(reply: Any) -> tuple[ReplicaInfo, ...]:
    """Parse ``SENTINEL REPLICAS`` (or ``SLAVES``); malformed entries are skipped."""
    return tuple(_each(ReplicaInfo.from_reply, reply))


def parse_sentinels(reply: Any) -> tuple[SentinelInfo, ...]:
    """Parse ``SENTINEL SENTINELS``; malformed entries are skipped."""
    return tuple(_each(SentinelInfo.from_reply, reply))


def _each(parse: Any, reply: Any) -> Iterable[Any]:
    if reply is None or isinstance(reply, BaseException):
        return
    for entry in reply:
        try:
            yield parse(entry)
        except (KeyError, ValueError, TypeError):
            continue


def usable_replicas(
    replicas: Iterable[ReplicaInfo], primary: Address | None = None
) -> tuple[Address, ...]:
    """Addresses of the replicas fit for reads, in the sentinel's order, never ``primary``."""
    seen: dict[Address, None] = {}
    for replica in replicas:
        if replica.usable and replica.address != primary:
            seen.setdefault(replica.address)
    return tuple(seen)


@dataclass(frozen=True, slots=True)
class SentinelAnswer:
    """What one sentinel told us: the primary to try (or None and why) and its peers."""

    primary: Address | None
    reason: str = ""
    sentinels: tuple[Address, ...] = ()


def interpret_answer(
    service: str, address_reply: Any, master_reply: Any = None, sentinels_reply: Any = None
) -> SentinelAnswer:
    """Decide whether a sentinel's answer names a usable primary.

    ``address_reply``: ``GET-MASTER-ADDR-BY-NAME``; ``master_reply``: ``SENTINEL MASTER`` (or
    None/an error when unavailable); ``sentinels_reply``: ``SENTINEL SENTINELS``. The primary
    is refused when this sentinel flags it down. During the last phase of a failover the
    leader already reports the promoted replica while ``SENTINEL MASTER`` still describes the
    old primary; the reported address is then taken (the caller confirms it with ``ROLE``).
    """
    peers = tuple(s.address for s in parse_sentinels(sentinels_reply))
    if isinstance(address_reply, BaseException):
        return SentinelAnswer(None, f"error: {address_reply}", peers)
    try:
        address = parse_master_address(address_reply)
    except (TypeError, ValueError):
        return SentinelAnswer(None, f"malformed reply {address_reply!r}", peers)
    if address is None:
        return SentinelAnswer(None, f"does not monitor a service named {service!r}", peers)
    if master_reply is not None and not isinstance(master_reply, BaseException):
        try:
            info = PrimaryInfo.from_reply(master_reply)
        except (KeyError, ValueError, TypeError):
            info = None
        if info is not None and info.address == address and info.is_down:
            flags = ",".join(sorted(info.flags))
            return SentinelAnswer(
                None, f"reports the primary {format_address(address)} as {flags}", peers
            )
    return SentinelAnswer(address, "", peers)


# -- ROLE ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Role:
    """A node's own word on what it is (``ROLE``): ``primary``, ``replica`` or ``sentinel``."""

    kind: str
    offset: int | None = None
    primary: Address | None = None
    link_state: str = ""
    replicas: tuple[Address, ...] = ()
    services: tuple[str, ...] = ()

    @property
    def is_primary(self) -> bool:
        """True when the node says it is a primary (``master``)."""
        return self.kind == "primary"


_ROLE_KINDS: Final = {"master": "primary", "slave": "replica", "sentinel": "sentinel"}


def parse_role(reply: Any) -> Role:
    """Parse a ``ROLE`` reply; raises ``ValueError`` when it is not one."""
    if not isinstance(reply, Sequence) or isinstance(reply, str | bytes) or not reply:
        raise ValueError(f"not a ROLE reply: {reply!r}")
    word = as_text(reply[0])
    kind = _ROLE_KINDS.get(word, word)
    if kind == "primary":
        replicas = tuple(
            (as_text(r[0]), as_int(r[1]))
            for r in (reply[2] if len(reply) > 2 else ())
            if isinstance(r, Sequence) and len(r) >= 2
        )
        return Role(kind, offset=as_int(reply[1]) if len(reply) > 1 else None, replicas=replicas)
    if kind == "replica":
        if len(reply) < 5:
            raise ValueError(f"short ROLE reply: {reply!r}")
        return Role(
            kind,
            offset=as_int(reply[4], -1),
            primary=(as_text(reply[1]), as_int(reply[2])),
            link_state=as_text(reply[3]),
        )
    if kind == "sentinel":
        names = reply[1] if len(reply) > 1 else ()
        return Role(kind, services=tuple(as_text(n) for n in names))
    return Role(kind)
