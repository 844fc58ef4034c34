"""One SCAN cursor over every primary of a cluster.

A cluster's keys live on several primaries, each with its own SCAN cursor. redis-py's
``RedisCluster.scan()`` hands the caller a dict of cursors; code written for one server
loops ``while cursor != 0`` on an int. SmartClient keeps the int: the cluster cursor
carries the position in the sorted list of primaries in its low :data:`NODE_BITS` bits and
that primary's own cursor above them. Cursor 0 starts at the first primary; a primary that
finishes hands over to the next one within the same call, and 0 comes back only when the
last primary is done, so ``while cursor != 0`` visits every key.

Like SCAN itself, a scan that spans a change of topology (a failover, a new primary) may
return a key twice or miss one that moved.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from smartcache.exceptions import InvalidArgumentError

__all__ = ["NODE_BITS", "ScanStep", "first_step", "next_step"]

#: low bits of a cluster cursor that name the primary (up to 65,536 primaries)
NODE_BITS: Final = 16
_NODE_MASK: Final = (1 << NODE_BITS) - 1


@dataclass(frozen=True, slots=True)
class ScanStep:
    """Where the next SCAN call goes: ``node`` (index into the sorted primaries) and the
    cursor to send it, or ``done``."""

    node: int
    cursor: int
    done: bool = False

    def to_cursor(self) -> int:
        """The cluster cursor the caller gets back (0 when every primary is done)."""
        return 0 if self.done else (self.cursor << NODE_BITS) | self.node


def first_step(cursor: int, primaries: int) -> ScanStep:
    """Decode the caller's cluster cursor for a cluster of ``primaries`` primaries.

    Raises :class:`~smartcache.exceptions.InvalidArgumentError` for a negative cursor, and
    for one naming a primary the cluster no longer has (the topology shrank under the scan).
    """
    cursor = int(cursor)
    if cursor < 0:
        raise InvalidArgumentError(f"SCAN cursor must be >= 0, got {cursor}")
    node, node_cursor = cursor & _NODE_MASK, cursor >> NODE_BITS
    if node >= primaries:
        raise InvalidArgumentError(
            f"SCAN cursor {cursor} names primary #{node}, but the cluster has {primaries} "
            "now: the topology changed under the scan; start again from cursor 0"
        )
    return ScanStep(node, node_cursor)


def next_step(step: ScanStep, reply_cursor: int, primaries: int) -> ScanStep:
    """The step after ``step``'s primary answered with ``reply_cursor``."""
    if int(reply_cursor) != 0:
        return ScanStep(step.node, int(reply_cursor))
    if step.node + 1 < primaries:
        return ScanStep(step.node + 1, 0)
    return ScanStep(step.node, 0, done=True)
