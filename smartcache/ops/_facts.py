"""What ``smartcache doctor`` learned about a deployment: plain data, no I/O.

The collector (:mod:`._collect`) fills these from live servers; the checks
(:mod:`._checks`) read only these, so every rule is tested without a server.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ClusterNode",
    "Facts",
    "Finding",
    "HostFacts",
    "KeySample",
    "NodeFacts",
    "SentinelFacts",
    "Status",
    "parse_cluster_nodes",
]


class Status(enum.Enum):
    """A check's verdict, ordered from best to worst (``unknown`` sits below ``warn``)."""

    PASS = "pass"
    UNKNOWN = "unknown"
    WARN = "warn"
    FAIL = "fail"

    @property
    def rank(self) -> int:
        """0 pass, 1 unknown, 2 warn, 3 fail."""
        return _RANKS[self]


_RANKS = {Status.PASS: 0, Status.UNKNOWN: 1, Status.WARN: 2, Status.FAIL: 3}


@dataclass(frozen=True, slots=True)
class Finding:
    """One check's result: what was measured, why it matters, and the exact fix."""

    check: str  #: a stable id, ``config.maxmemory``
    title: str  #: what is checked, for people
    status: Status
    value: str  #: what was measured
    why: str = ""  #: why it matters
    fix: str = ""  #: the config line or command that fixes it (empty when it passes)
    node: str = ""  #: ``host:port`` it concerns; empty for the whole deployment

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "check": self.check,
            "title": self.title,
            "status": self.status.value,
            "value": self.value,
            "why": self.why,
            "fix": self.fix,
            "node": self.node,
        }


@dataclass(frozen=True, slots=True)
class ClusterNode:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    address: str  #: ``host:port`` (the cluster bus port dropped)
    flags: frozenset[str]
    primary_id: str | None  #: for a replica, its primary's id
    connected: bool
    slots: tuple[tuple[int, int], ...]  #: inclusive ranges
    migrating: dict[int, str]  #: slot -> target node id
    importing: dict[int, str]  #: slot -> source node id
    #: the line of the node that answered: only that line shows open slots (a node shows
    #: its own migrating/importing state, never another's)
    myself: bool = False

    @property
    def is_primary(self) -> bool:
        """Flagged ``master``."""
        return "master" in self.flags

    @property
    def failed(self) -> bool:
        """Flagged ``fail`` (or ``fail?``: suspected by this view)."""
        return "fail" in self.flags or "fail?" in self.flags


def parse_cluster_nodes(text: str) -> list[ClusterNode]:
    """Parse a ``CLUSTER NODES`` reply (``myself`` moved from the flags to its own field)."""
    nodes = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        slots: list[tuple[int, int]] = []
        migrating: dict[int, str] = {}
        importing: dict[int, str] = {}
        for item in parts[8:]:
            if item.startswith("["):  # [slot->-target] or [slot-<-source]
                body = item.strip("[]")
                if "->-" in body:
                    slot, peer = body.split("->-", 1)
                    migrating[int(slot)] = peer
                elif "-<-" in body:
                    slot, peer = body.split("-<-", 1)
                    importing[int(slot)] = peer
                continue
            lo, _, hi = item.partition("-")
            slots.append((int(lo), int(hi or lo)))
        nodes.append(
            ClusterNode(
                node_id=parts[0],
                address=parts[1].split("@", 1)[0],
                flags=frozenset(parts[2].split(",")) - {"myself"},
                primary_id=None if parts[3] == "-" else parts[3],
                connected=parts[7] == "connected",
                slots=tuple(slots),
                migrating=migrating,
                importing=importing,
                myself="myself" in parts[2].split(","),
            )
        )
    return nodes


@dataclass(slots=True)
class NodeFacts:
    """One Redis/Valkey server as the collector saw it."""

    address: str
    reachable: bool = True
    error: str = ""  #: why it could not be read (no secrets)
    info: dict[str, Any] = field(default_factory=dict)  #: ``INFO everything``, flat
    config: dict[str, str] | None = None  #: ``CONFIG GET *``; None when refused
    default_user_nopass: bool | None = None  #: ACL: the default user needs no password
    slowlog: list[dict[str, Any]] = field(default_factory=list)
    cluster_nodes: list[ClusterNode] | None = None  #: its view of the cluster
    local: bool = False  #: served by this machine (host checks apply)

    @property
    def role(self) -> str:
        """``master`` or ``slave`` (INFO's words), ``""`` when unknown."""
        return str(self.info.get("role", ""))

    @property
    def host(self) -> str:
        """The host part of the address."""
        return self.address.rsplit(":", 1)[0]


@dataclass(slots=True)
class SentinelFacts:
    """One sentinel's view of the monitored service."""

    address: str
    reachable: bool = True
    error: str = ""
    primary: str | None = None  #: ``host:port`` it names
    quorum: int | None = None
    ckquorum: str = ""  #: ``SENTINEL CKQUORUM``'s answer (or error text)
    ckquorum_ok: bool | None = None
    known_sentinels: int | None = None  #: other sentinels it knows + itself
    replicas: list[dict[str, Any]] = field(default_factory=list)
    primary_flags: str = ""


@dataclass(slots=True)
class KeySample:
    """One key read by the sampler (``TYPE``, ``MEMORY USAGE``, ``TTL``)."""

    key: str
    node: str
    type: str
    memory: int  #: bytes, ``MEMORY USAGE``
    ttl: int  #: seconds, -1 when none
    value_bytes: int | None = None  #: strings: ``STRLEN``
    json_fields: int | None = None  #: a flat JSON object's field count (strings)
    hash_estimate: int | None = None  #: bytes the same object would take as a hash


@dataclass(slots=True)
class HostFacts:
    """This machine's kernel settings from the checklist (read from /proc and limits)."""

    overcommit_memory: str | None = None
    transparent_hugepage: str | None = None  #: the selected mode: always, madvise, never
    nofile: dict[str, int] = field(default_factory=dict)  #: node address -> its fd limit


@dataclass(slots=True)
class Facts:
    """Everything the checks read."""

    kind: str  #: ``standalone``, ``sentinel`` or ``cluster``
    target: str  #: the URL, password masked
    nodes: list[NodeFacts] = field(default_factory=list)
    sentinels: list[SentinelFacts] = field(default_factory=list)
    service_name: str = ""
    samples: list[KeySample] = field(default_factory=list)
    sampled: int = 0  #: keys the sampler read
    keys_total: int = 0  #: DBSIZE summed over primaries
    sample_complete: bool = True  #: False when --max-seconds cut the sampling short
    host: HostFacts | None = None  #: None when no node is local
    seconds: float = 0.0

    def open_slots(self) -> list[ClusterNode]:
        """Each reachable primary's own line (the one that shows its open slots; replicas
        that mirror their primary's migration state are not counted twice)."""
        return [
            c
            for n in self.nodes
            if n.reachable and n.cluster_nodes
            for c in n.cluster_nodes
            if c.myself and c.is_primary
        ]

    def primaries(self) -> list[NodeFacts]:
        """Reachable nodes whose INFO says ``role:master``."""
        return [n for n in self.nodes if n.reachable and n.role == "master"]
