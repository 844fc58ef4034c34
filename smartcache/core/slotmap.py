"""The cluster slot map: an immutable value, built from CLUSTER SHARDS or CLUSTER SLOTS.

A refresh builds a new ``SlotMap`` and the client swaps it in whole, so readers never see a
half-built map. ``MOVED`` is applied with :meth:`SlotMap.with_moved`, which returns a new map.
``choose_view`` picks among the maps several nodes reported, so one node cut off from the
others (it still answers, with a stale view) does not win over the majority.

Pure: no sockets, no clocks, no threads.
"""

from __future__ import annotations

from array import array
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from smartcache.core.slots import SLOT_COUNT

__all__ = ["Shard", "SlotMap", "choose_view", "parse_address"]

_UNCOVERED = -1


def parse_address(address: str) -> tuple[str, int]:
    """Split ``host:port`` (IPv6 hosts keep their colons: the port is after the last one)."""
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


@dataclass(frozen=True, slots=True)
class Shard:
    """A primary and its replicas, as ``host:port`` addresses."""

    primary: str
    replicas: tuple[str, ...] = ()

    @property
    def nodes(self) -> tuple[str, ...]:
        """Primary first, then replicas."""
        return (self.primary, *self.replicas)


class SlotMap:
    """Which shard serves each of the 16384 slots. Immutable; O(1) lookup."""

    __slots__ = ("_index", "_primaries", "shards")

    def __init__(self, shards: Sequence[Shard], index: array[int]) -> None:
        if len(index) != SLOT_COUNT:
            raise ValueError(f"a slot index needs {SLOT_COUNT} entries, got {len(index)}")
        self.shards: tuple[Shard, ...] = tuple(shards)
        self._index = index
        self._primaries = tuple(s.primary for s in self.shards)

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_ranges(cls, ranges: Iterable[tuple[int, int, Shard]]) -> SlotMap:
        """Build from ``(first_slot, last_slot, shard)`` triples; equal shards are merged."""
        index = array("h", [_UNCOVERED]) * SLOT_COUNT
        shards: list[Shard] = []
        position: dict[str, int] = {}
        for lo, hi, shard in ranges:
            if not (0 <= lo <= hi < SLOT_COUNT):
                raise ValueError(f"bad slot range {lo}-{hi}")
            i = position.get(shard.primary)
            if i is None:
                i = position[shard.primary] = len(shards)
                shards.append(shard)
            elif len(shard.replicas) > len(shards[i].replicas):
                shards[i] = shard
            index[lo : hi + 1] = array("h", [i]) * (hi - lo + 1)
        return cls(shards, index)

    @classmethod
    def from_cluster_shards(cls, reply: Any, default_host: str) -> SlotMap:
        """Build from the reply of ``CLUSTER SHARDS`` (RESP2 lists or RESP3 maps)."""
        ranges: list[tuple[int, int, Shard]] = []
        for raw_shard in reply:
            shard = _as_map(raw_shard)
            slots = [int(s) for s in shard.get("slots", [])]
            primary: str | None = None
            replicas: list[str] = []
            for raw_node in shard.get("nodes", []):
                node = _as_map(raw_node)
                address = _node_address(node, default_host)
                if address is None:
                    continue
                role = _text(node.get("role", ""))
                if role == "master":
                    primary = address
                elif _text(node.get("health", "online")) != "fail":
                    # Not "online" only: Redis 7.0 reports "loading" for any replica whose
                    # offset is 0 (nothing written yet). A replica really loading answers
                    # -LOADING, which the retry path handles.
                    replicas.append(address)
            if primary is None or not slots:
                continue
            entry = Shard(primary, tuple(replicas))
            ranges.extend((slots[i], slots[i + 1], entry) for i in range(0, len(slots) - 1, 2))
        return cls.from_ranges(ranges)

    @classmethod
    def from_cluster_slots(cls, reply: Any, default_host: str) -> SlotMap:
        """Build from the reply of ``CLUSTER SLOTS`` (older servers)."""
        ranges: list[tuple[int, int, Shard]] = []
        for item in reply:
            lo, hi, *nodes = item
            addresses = []
            for node in nodes:
                host = _text(node[0]) if node[0] not in (None, b"", "") else default_host
                if host == "?":
                    continue
                addresses.append(f"{host}:{int(node[1])}")
            if addresses:
                ranges.append((int(lo), int(hi), Shard(addresses[0], tuple(addresses[1:]))))
        return cls.from_ranges(ranges)

    # -- lookup -----------------------------------------------------------------------
    def shard_for_slot(self, slot: int) -> Shard | None:
        """The shard serving ``slot``, or None when the slot is not covered."""
        i = self._index[slot]
        return None if i < 0 else self.shards[i]

    def primary_for_slot(self, slot: int) -> str | None:
        """Address of the primary serving ``slot``, or None when not covered."""
        i = self._index[slot]
        return None if i < 0 else self._primaries[i]

    def shard_indices(self) -> array[int]:
        """A copy of the slot -> shard index array (-1 for an uncovered slot)."""
        return array("h", self._index)

    @property
    def primaries(self) -> tuple[str, ...]:
        """Addresses of every primary that serves at least one slot."""
        return self._primaries

    @property
    def nodes(self) -> tuple[str, ...]:
        """Every address, primaries first."""
        seen = dict.fromkeys(self._primaries)
        for shard in self.shards:
            seen.update(dict.fromkeys(shard.replicas))
        return tuple(seen)

    @property
    def covered(self) -> int:
        """How many slots have an owner."""
        return SLOT_COUNT - self._index.count(_UNCOVERED)

    def slots_of(self, primary: str) -> list[int]:
        """Slots owned by ``primary``."""
        try:
            i = self._primaries.index(primary)
        except ValueError:
            return []
        return [s for s, owner in enumerate(self._index) if owner == i]

    def first_slot_of(self, primary: str) -> int | None:
        """The lowest slot ``primary`` owns, or None when it owns none."""
        try:
            return self._index.index(self._primaries.index(primary))
        except ValueError:
            return None

    def signature(self) -> tuple[tuple[str, tuple[str, ...], bytes], ...]:
        """A hashable description: equal for maps that route every slot the same way."""
        parts = []
        for i, shard in enumerate(self.shards):
            mask = bytes(1 if owner == i else 0 for owner in self._index)
            parts.append((shard.primary, tuple(sorted(shard.replicas)), mask))
        return tuple(sorted(parts))

    # -- change -----------------------------------------------------------------------
    def with_moved(self, slot: int, address: str) -> SlotMap:
        """A new map where ``slot`` is served by the primary at ``address`` (after MOVED)."""
        if self.primary_for_slot(slot) == address:
            return self
        shards = list(self.shards)
        try:
            i = self._primaries.index(address)
        except ValueError:
            # A primary we did not know yet (or a replica that was promoted).
            promoted = [j for j, s in enumerate(shards) if address in s.replicas]
            if promoted:
                j = promoted[0]
                old = shards[j]
                shards.append(Shard(address, tuple(r for r in old.replicas if r != address)))
            else:
                shards.append(Shard(address))
            i = len(shards) - 1
        index = array("h", self._index)
        index[slot] = i
        return SlotMap(shards, index)

    def __repr__(self) -> str:
        return f"<SlotMap {len(self.shards)} shards, {self.covered} slots covered>"


def choose_view(views: Sequence[SlotMap]) -> SlotMap:
    """Pick the view most nodes agree on; ties go to the view covering more slots.

    A lone node cut off from the others keeps answering with its old view; asking several
    nodes and taking the majority keeps that stale view from winning.
    """
    if not views:
        raise ValueError("choose_view needs at least one view")
    if len(views) == 1:
        return views[0]
    signatures = [v.signature() for v in views]
    counts = Counter(signatures)
    best = max(range(len(views)), key=lambda i: (counts[signatures[i]], views[i].covered, -i))
    return views[best]


# -- reply helpers ------------------------------------------------------------------------
def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _as_map(value: Any) -> Mapping[str, Any]:
    if isinstance(value, Mapping):
        return {_text(k): v for k, v in value.items()}
    items = list(value)
    return {_text(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}


def _node_address(node: Mapping[str, Any], default_host: str) -> str | None:
    port = node.get("port") or node.get("tls-port")
    if port is None:
        return None
    host = _text(node.get("endpoint") or node.get("ip") or "")
    if host == "?":
        return None
    if not host:
        host = default_host
    return f"{host}:{int(port)}"
