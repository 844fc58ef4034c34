"""Which node of a shard serves one attempt: the primary, or one of its replicas.

The rule, once, for every path that sends a keyed command (the cluster router's general
path, the single-key fast paths of both clients, the Sentinel flow): a command goes to a
replica only when the client reads from replicas (``read_from`` other than
``"primary"``) and the command only reads; then a replica of the shard is picked at
random, and a shard without replicas is served by its primary.

Pure: the random pick is a parameter.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from smartcache.core.commands import CommandSpec

__all__ = ["READ_FROM", "choose_node", "default_node", "reads_from_replica"]

#: the values ``read_from=`` accepts
READ_FROM = frozenset({"primary", "replica", "replica_preferred"})

N = TypeVar("N")


def reads_from_replica(read_from: str, spec: CommandSpec | None) -> bool:
    """Whether a command described by ``spec`` goes to a replica under ``read_from``.

    Only commands flagged read-only and not write (GET, HGETALL, ...) do, and only when
    ``read_from`` is ``"replica"`` or ``"replica_preferred"``; an unknown command goes to
    the primary.
    """
    return read_from != "primary" and spec is not None and spec.readonly and not spec.write


def choose_node(
    primary: N | None, replicas: Sequence[N], pick: Callable[[Sequence[N]], N]
) -> N | None:
    """The node of a shard that serves a replica read: ``pick(replicas)``, or the primary
    when the shard has none (``None`` when the slot is not served at all)."""
    if replicas:
        return pick(replicas)
    return primary


def default_node(current: str | None, primaries: Sequence[str]) -> str | None:
    """The primary that keyless commands without a routing rule of their own go to (CLIENT
    SETNAME, CLIENT GETNAME, CONFIG GET, LASTSAVE...), as RedisCluster's default node: kept
    while it serves slots, so consecutive keyless commands meet the same server; else the
    first primary of the map (``None`` when no primary serves a slot)."""
    if current is not None and current in primaries:
        return current
    return primaries[0] if primaries else None
