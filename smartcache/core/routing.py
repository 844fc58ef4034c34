"""Where one command goes in a cluster: the routing decision, shared by both clients.

``route()`` looks at a command's keys and the server's request policy and answers with one
of four small values; the shells only carry it out:

- :class:`ToSlot` — the node serving one slot (a keyed command, or a keyless one without a
  routing rule of its own: a slot of the default node, as RedisCluster sends those to its
  default node);
- :class:`ToNodes` — several nodes (``"primaries"`` or ``"all"``, or named addresses from
  redis-py's ``target_nodes=``), replies merged by the command's response policy, or one
  reply per node where the caller named the nodes (:mod:`smartcache.core.fanout`);
- :class:`Split` — a multi-key command cut by slot (MGET, MSET, DEL...), parts merged back;
- otherwise :class:`~smartcache.exceptions.CrossSlotError`, before anything is sent.

Pure: randomness and the default node are parameters, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from smartcache.core.commands import (
    CommandSpec,
    CommandTable,
    RequestPolicy,
    SplitPlan,
    plan_across_slots,
    slot_argument,
)
from smartcache.core.fanout import answers_by_node
from smartcache.core.node_choice import reads_from_replica
from smartcache.core.slotmap import SlotMap
from smartcache.exceptions import ConfigurationError

__all__ = [
    "TARGET_NAMES",
    "Route",
    "Split",
    "ToNodes",
    "ToSlot",
    "fast_key_index",
    "fast_path_entry",
    "resolve_group",
    "route",
    "target_names",
]

#: redis-py RedisCluster's names for ``target_nodes=``
TARGET_NAMES = frozenset({"primaries", "replicas", "all", "random", "default-node"})


@dataclass(frozen=True, slots=True)
class ToSlot:
    """Send to the node serving ``slot``; ``default_node``: a keyless command sent to the
    default node (RedisCluster finishes such replies with its result callbacks)."""

    spec: CommandSpec | None
    slot: int
    default_node: bool = False


@dataclass(frozen=True, slots=True)
class ToNodes:
    """Send to several nodes: ``group`` (``"primaries"``, ``"all"``, ``"replicas"``,
    ``"random"``, ``"default-node"``) or the explicit ``addresses``; ``by_node``: answer
    one reply per node (:func:`~smartcache.core.fanout.fan_out_reply`), not a merged one."""

    spec: CommandSpec | None
    group: str | None = None
    addresses: tuple[str, ...] = ()
    by_node: bool = False


@dataclass(frozen=True, slots=True)
class Split:
    """Send each part of ``plan`` to its slot's node and merge with ``plan.merge``."""

    spec: CommandSpec
    plan: SplitPlan


Route = ToSlot | ToNodes | Split


def target_names(target: Any) -> ToNodes:
    """Interpret redis-py's ``target_nodes=`` (a group name, a node, a list of nodes, or a
    dict whose values are nodes, as RedisCluster takes them)."""
    if isinstance(target, str):
        lowered = target.lower()
        if lowered not in TARGET_NAMES:
            raise ConfigurationError(
                f"target_nodes={target!r}: use one of {sorted(TARGET_NAMES)} or node objects"
            )
        return ToNodes(None, group=lowered)
    if isinstance(target, dict):
        target = list(target.values())
    items: Sequence[Any] = target if isinstance(target, list | tuple) else [target]
    return ToNodes(None, addresses=tuple(str(getattr(item, "name", item)) for item in items))


def route(
    table: CommandTable,
    args: tuple[Any, ...],
    slot_of: Callable[[Any], int],
    default_slot: Callable[[], int],
    target_nodes: Any = None,
    *,
    nonatomic: bool = False,
    merged: Collection[str] | None = None,
) -> Route:
    """Decide where ``args`` goes; raises :class:`CrossSlotError` for keys on several slots
    that may not be split (:func:`~smartcache.core.commands.plan_across_slots`;
    ``nonatomic=True`` lets MGET and MSET be split). Nodes named by ``target_nodes``
    answer one reply each unless the command is in ``merged`` (redis-py names, ``"DBSIZE"``,
    ``"CONFIG SET"``: the commands RedisCluster merges; None: merge every command);
    broadcasts the command's own request policy asks for are always merged."""
    spec = table.lookup(args)
    if target_nodes is not None:
        chosen = target_names(target_nodes)
        by_node = merged is not None and answers_by_node(spec, args, merged)
        return ToNodes(spec, chosen.group, chosen.addresses, by_node)
    keys = spec.keys(args) if spec is not None else ()
    if not keys:
        named = slot_argument(spec, args)  # CLUSTER COUNTKEYSINSLOT <slot>...
        if named is not None:
            return ToSlot(spec, named)
        policy = spec.request_policy if spec is not None else RequestPolicy.DEFAULT_KEYLESS
        if policy is RequestPolicy.ALL_SHARDS:
            return ToNodes(spec, group="primaries")
        if policy is RequestPolicy.ALL_NODES:
            return ToNodes(spec, group="all")
        return ToSlot(spec, default_slot(), default_node=True)
    slot = slot_of(keys[0])
    if len(keys) > 1:
        per_key = [slot_of(k) for k in keys]
        slots = set(per_key)
        if len(slots) > 1:
            memo = _memo(keys, per_key, slot_of)
            try:
                plan = plan_across_slots(args, spec, memo, sorted(slots), nonatomic=nonatomic)
            except ValueError:
                return ToSlot(spec, slot)  # malformed (MSET k v k): the server says why
            assert spec is not None  # only a known command is split
            return Split(spec, plan)
    return ToSlot(spec, slot)


def fast_key_index(spec: CommandSpec | None, name: object) -> int:
    """Position of the only key when ``name`` may take the single-key fast path, else 0."""
    if (
        spec is not None
        and spec.single_key_index
        and spec.request_policy is RequestPolicy.KEYED
        and type(name) is str
    ):
        return spec.single_key_index
    return 0


def fast_path_entry(
    spec: CommandSpec | None, name: object, read_from: str
) -> tuple[int, bool] | None:
    """What a client's single-key fast path needs to send ``name`` as the general path
    would: ``(position of its only key, whether it goes to a replica)``; ``None`` when the
    command must take the general path. The replica flag is
    :func:`~smartcache.core.node_choice.reads_from_replica`, the very rule
    :func:`~smartcache.core.flow.keyed_flow` applies.
    """
    index = fast_key_index(spec, name)
    if not index:
        return None
    return index, reads_from_replica(read_from, spec)


def _memo(
    keys: Sequence[Any], slots: Sequence[int], slot_of: Callable[[Any], int]
) -> Callable[[Any], int]:
    """``slot_of`` that reuses the slots already computed for ``keys`` (CRC once per key)."""
    try:
        known: dict[Any, int] = dict(zip(keys, slots, strict=True))
    except TypeError:  # an unhashable key (memoryview): compute again
        return slot_of

    def lookup(key: Any) -> int:
        try:
            return known[key]
        except (KeyError, TypeError):
            return slot_of(key)

    return lookup


def resolve_group(
    slot_map: SlotMap,
    group: str | None,
    addresses: Sequence[str],
    choose: Callable[[Sequence[str]], str],
    default: str | None = None,
) -> list[str]:
    """Addresses of a :class:`ToNodes` target in ``slot_map`` (``choose`` picks "random",
    ``default`` is the default node's address)."""
    if group is None:
        return list(addresses)
    primaries = list(slot_map.primaries)
    if group == "primaries":
        return primaries
    if group == "all":
        return list(slot_map.nodes)
    if group == "replicas":
        return [n for n in slot_map.nodes if n not in set(primaries)]
    if group == "default-node":
        return [default] if default is not None else primaries[:1]
    return [choose(primaries)]
