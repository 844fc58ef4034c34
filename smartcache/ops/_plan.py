"""Which slots move where: reshard and rebalance plans (no I/O).

A plan is a list of :class:`Move` (slot, source node id, target node id), computed from
who owns which slot now and, for a rebalance by memory, what each slot weighs. The
executor (:mod:`._reshard`) only carries plans out, so every planning rule is tested
without a server.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from smartcache.exceptions import ConfigurationError

__all__ = ["Move", "plan_rebalance", "plan_reshard"]

SLOTS = 16384


@dataclass(frozen=True, slots=True)
class Move:
    """Move ``slot`` from node ``source`` to node ``target`` (cluster node ids)."""

    slot: int
    source: str
    target: str


def plan_reshard(
    owners: Mapping[str, Sequence[int]], sources: Sequence[str], target: str, count: int
) -> list[Move]:
    """``count`` slots from ``sources`` to ``target``, taken from each source in
    proportion to what it owns (its lowest slots first, as redis-cli does)."""
    if count <= 0:
        raise ConfigurationError(f"--slots must be a positive number of slots, got {count}")
    if target not in owners:
        raise ConfigurationError(f"the target {target[:12]} is not a primary of this cluster")
    sources = [s for s in sources if s != target]
    if not sources:
        raise ConfigurationError("no source primary other than the target")
    for s in sources:
        if s not in owners:
            raise ConfigurationError(f"the source {s[:12]} is not a primary of this cluster")
    available = sum(len(owners[s]) for s in sources)
    if count > available:
        raise ConfigurationError(f"the sources own {available} slots in all; cannot move {count}")
    moves: list[Move] = []
    remaining = count
    for i, s in enumerate(sorted(sources, key=lambda s: -len(owners[s]))):
        owned = sorted(owners[s])
        if i == len(sources) - 1:
            take = remaining
        else:
            take = min(len(owned), round(count * len(owned) / available), remaining)
        moves.extend(Move(slot, s, target) for slot in owned[:take])
        remaining -= take
    if remaining:  # rounding left some: take them from whoever still has slots
        taken = {m.slot for m in moves}
        for s in sources:
            for slot in sorted(owners[s]):
                if remaining and slot not in taken:
                    moves.append(Move(slot, s, target))
                    remaining -= 1
    return moves


def plan_rebalance(
    owners: Mapping[str, Sequence[int]],
    *,
    weights: Mapping[int, float] | None = None,
    node_weights: Mapping[str, float] | None = None,
    threshold: float = 0.02,
) -> list[Move]:
    """Moves that bring every primary within ``threshold`` of its share.

    By slots (``weights`` None): each slot weighs 1, so the shares are slot counts. By
    memory: ``weights[slot]`` is what the slot holds (bytes), and slots are chosen to even
    out the bytes. ``node_weights`` gives primaries unequal shares (default equal; 0
    empties a node). Nothing moves when every primary is already within ``threshold``
    (a fraction of its share); otherwise the moves aim at the shares exactly."""
    nodes = sorted(owners)
    if len(nodes) < 2:
        return []
    w = dict(node_weights or {})
    shares = {n: float(w.get(n, 1.0)) for n in nodes}
    if any(v < 0 for v in shares.values()) or sum(shares.values()) <= 0:
        raise ConfigurationError("node weights must be >= 0 and not all 0")

    def weight(slot: int) -> float:
        return 1.0 if weights is None else float(weights.get(slot, 0.0))

    load = {n: sum(weight(s) for s in owners[n]) for n in nodes}
    total = sum(load.values())
    if total <= 0:
        return []
    goal = {n: total * shares[n] / sum(shares.values()) for n in nodes}
    tolerance = {n: max(goal[n] * threshold, 1.0 if weights is None else 0.0) for n in nodes}
    if all(abs(load[n] - goal[n]) <= tolerance[n] for n in nodes):
        return []
    # the threshold decides whether to act; acting aims at the shares themselves (to one
    # slot by slots; by memory, as near as whole slots allow), as redis-cli does
    tolerance = dict.fromkeys(nodes, 1.0 if weights is None else 0.0)
    pool = {n: sorted(owners[n], key=lambda s: (-weight(s), s)) for n in nodes}
    moves: list[Move] = []
    receivers = sorted((n for n in nodes if load[n] < goal[n]), key=lambda n: load[n] - goal[n])
    givers = [n for n in nodes if load[n] > goal[n]]
    for r in receivers:
        for g in sorted(givers, key=lambda n: goal[n] - load[n]):
            while load[r] < goal[r] - tolerance[r] and load[g] > goal[g] and pool[g]:
                need = min(goal[r] - load[r], load[g] - goal[g])
                pick = _pick(pool[g], need, weight)
                if pick is None:
                    break
                pool[g].remove(pick)
                load[g] -= weight(pick)
                load[r] += weight(pick)
                moves.append(Move(pick, g, r))
    # a node with no share gives away everything, rounding leftovers included
    keep = [n for n in nodes if shares[n] > 0]
    for g in nodes:
        if shares[g] == 0:
            for slot in list(pool[g]):
                r = min(keep, key=lambda n: (load[n] - goal[n], n))
                pool[g].remove(slot)
                load[g] -= weight(slot)
                load[r] += weight(slot)
                moves.append(Move(slot, g, r))
    return moves


def _pick(candidates: list[int], need: float, weight: Callable[[int], float]) -> int | None:
    """The heaviest slot that does not overshoot ``need`` (candidates: heaviest first)."""
    for slot in candidates:
        value = weight(slot)
        if 0 < value <= need:
            return slot
    return None
