"""Pipeline planning: which node gets which queued command, and how replies come back.

A queued command becomes one or more *wire operations* (a cross-slot MGET in a pipeline is
split into per-slot parts, merged back into one result); operations are grouped per node,
written to every node before any reply is read, and failed operations are re-planned one by
one by the caller. A transaction must stay on one slot: that is checked here, before any
byte is sent.

Pure: no sockets, no clocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from smartcache.core.commands import (
    CommandTable,
    RequestPolicy,
    SplitPlan,
    split_multi_key,
)
from smartcache.exceptions import CrossSlotError

__all__ = ["PlannedCommand", "plan_command", "transaction_slot"]

ANY_SLOT = -1  # keyless: any primary will do
ALL_PRIMARIES = -2  # keyless, sent to every primary and merged


@dataclass(frozen=True, slots=True)
class PlannedCommand:
    """One queued command as wire operations: ``ops`` holds ``(slot, args)`` pairs.

    ``slot`` is a real slot, :data:`ANY_SLOT` or :data:`ALL_PRIMARIES`. ``split`` is set when
    the command was split by slot; its ``merge`` rebuilds the single reply.
    """

    ops: tuple[tuple[int, tuple[Any, ...]], ...]
    split: SplitPlan | None = None


def _name(args: Sequence[Any]) -> str:
    first = args[0]
    return (first.decode(errors="replace") if isinstance(first, bytes) else str(first)).upper()


def plan_command(
    table: CommandTable, args: tuple[Any, ...], slot_of: Callable[[Any], int]
) -> PlannedCommand:
    """Plan one queued command of a non-transactional cluster pipeline."""
    spec = table.lookup(args)
    keys = spec.keys(args) if spec is not None else ()
    if not keys:
        policy = spec.request_policy if spec is not None else RequestPolicy.DEFAULT_KEYLESS
        if policy in (RequestPolicy.ALL_SHARDS, RequestPolicy.ALL_NODES):
            return PlannedCommand(((ALL_PRIMARIES, args),))
        return PlannedCommand(((ANY_SLOT, args),))
    slot = slot_of(keys[0])
    if len(keys) > 1 and any(slot_of(k) != slot for k in keys[1:]):
        if spec is not None and spec.request_policy is RequestPolicy.MULTI_SHARD:
            plan = split_multi_key(args, spec, slot_of)
            return PlannedCommand(tuple((s, part) for s, part, _ in plan.parts), plan)
        name = _name(args)
        raise CrossSlotError(
            f"{name} in a pipeline: its keys hash to different slots and it cannot be split "
            "without losing atomicity; use a hash tag to keep them on one slot",
            command=name,
            slots=sorted({slot_of(k) for k in keys}),
        )
    return PlannedCommand(((slot, args),))


def transaction_slot(
    table: CommandTable, commands: Sequence[tuple[Any, ...]], slot_of: Callable[[Any], int]
) -> int | None:
    """The one slot every key of a transaction hashes to (None when it has no keys).

    Raises :class:`CrossSlotError` naming the slots when keys span more than one.
    """
    slots: set[int] = set()
    for args in commands:
        spec = table.lookup(args)
        if spec is None:
            continue
        slots.update(slot_of(k) for k in spec.keys(args))
    if len(slots) > 1:
        raise CrossSlotError(
            f"a transaction on a cluster must keep every key on one slot; these keys use "
            f"{len(slots)} slots (use a hash tag such as '{{order:42}}:items' to group them)",
            command="MULTI",
            slots=sorted(slots),
        )
    return slots.pop() if slots else None
