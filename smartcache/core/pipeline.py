"""Pipeline planning: which node gets which queued command, and how replies come back.

A queued command becomes one or more *wire operations* (a cross-slot MGET in a pipeline is
split into per-slot parts, merged back into one result); operations are grouped per node,
written to every node before any reply is read, and failed operations are re-planned one by
one by the caller. A transaction must stay on one slot: that is checked here, before any
byte is sent; :func:`transaction_flow` carries it through MOVED, ASK and TRYAGAIN (which
prove that EXEC ran nothing) within one budget, for both shells.

Pure: no sockets, no clocks (``clock`` is a parameter).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.exceptions as rx
from redis.utils import safe_str, truncate_text

from smartcache.core.commands import (
    CommandTable,
    RequestPolicy,
    ResponsePolicy,
    SplitPlan,
    merge_replies,
    plan_across_slots,
)
from smartcache.core.flow import (
    ApplyMoved,
    Attempt,
    Effect,
    RefreshIfPending,
    RequestRefresh,
    Sleep,
    command_name,
)
from smartcache.core.retry import Action, RetryPolicy, decide, may_resend
from smartcache.core.stats import Counters
from smartcache.exceptions import AmbiguousCommandError, CrossSlotError

__all__ = [
    "after_loss",
    "EMPTY_RESPONSE",
    "NEVER_DECODE",
    "reads_undecoded",
    "RETRYABLE_REPLIES",
    "TRANSPORT_ERRORS",
    "UNWATCH_COMMANDS",
    "PlannedCommand",
    "annotate",
    "apply_callback",
    "assemble",
    "finish_transaction",
    "plan_command",
    "raise_first_error",
    "transaction_flow",
    "transaction_refusal",
    "transaction_slot",
]

Stack = Sequence[tuple[tuple[Any, ...], dict[str, Any]]]

#: errors of a transport: the command may or may not have been written
TRANSPORT_ERRORS = (rx.ConnectionError, rx.TimeoutError, OSError)
#: error replies proving a queued command did not run: re-run it alone (MOVED is handled
#: first, since it also updates the slot map)
RETRYABLE_REPLIES = (
    rx.AskError,
    rx.TryAgainError,
    rx.ClusterDownError,
    rx.ReadOnlyError,
    rx.BusyLoadingError,
    rx.MasterDownError,
)
#: commands that end a WATCH
UNWATCH_COMMANDS = frozenset({"DISCARD", "EXEC", "UNWATCH"})
#: redis-py's option: the reply to return when the command fails
EMPTY_RESPONSE = "EMPTY_RESPONSE"
NEVER_DECODE = "NEVER_DECODE"
_CALLBACK_SKIP = ("EMPTY_RESPONSE", "NEVER_DECODE", "keys", "target_nodes")

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
        slots = sorted({slot_of(k) for k in keys})
        plan = plan_across_slots(args, spec, slot_of, slots)  # or CrossSlotError
        return PlannedCommand(tuple((s, part) for s, part, _ in plan.parts), plan)
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


def transaction_refusal(replies: Sequence[Any]) -> BaseException | None:
    """The redirect or refusal that aborted a ``MULTI ... EXEC`` batch, else ``None``.

    ``replies`` are those of ``MULTI, *commands, EXEC``. Only when EXEC failed (so nothing
    ran) and a queued command, or EXEC itself, was refused with a MOVED, ASK, TRYAGAIN,
    CLUSTERDOWN... (:data:`RETRYABLE_REPLIES`): sending the batch again is then safe.
    """
    if not isinstance(replies[-1], rx.ResponseError):
        return None  # EXEC ran (or WATCH made it return nil)
    for reply in replies[1:]:
        if isinstance(reply, RETRYABLE_REPLIES):
            return reply
    return None


def transaction_flow(
    slot: int,
    *,
    policy: RetryPolicy,
    clock: Callable[[], float],
    counters: Counters | None = None,
) -> Generator[Effect, Any, list[Any]]:
    """Carry one cluster transaction (its keys on ``slot``) through redirects and retries.

    Yields :class:`~smartcache.core.flow.Attempt` (``asking``: send ``ASKING`` first, to
    that node) and expects an :class:`~smartcache.core.flow.Outcome` whose ``reply`` is
    the list of replies to ``MULTI, *commands, EXEC`` and whose ``address`` is the node
    that gave them; also ``RefreshIfPending``, ``ApplyMoved``, ``RequestRefresh`` and
    ``Sleep`` as :func:`~smartcache.core.flow.keyed_flow` does. Returns the replies of the
    last attempt, for :func:`finish_transaction` (which raises the refusal if the budget
    ran out). Transport errors are the shell's: the flow never sees them.
    """
    start = clock()
    attempts = redirects = 0
    asking: str | None = None
    while True:
        yield RefreshIfPending()
        outcome = yield Attempt(slot, asking)
        replies: list[Any] = outcome.reply
        refusal = transaction_refusal(replies)
        if refusal is None:
            return replies
        if isinstance(refusal, rx.AskError):  # MovedError too
            redirects += 1
        else:
            attempts += 1
        decision = decide(
            policy,
            refusal,
            attempt=attempts,
            redirects=redirects,
            elapsed=clock() - start,
            idempotent=True,  # EXEC was aborted: nothing ran
            sent=True,
            answered_by=outcome.address,
        )
        if counters is not None:
            counters.decided(decision, refusal)
        asking = None
        if decision.action is Action.RAISE:
            return replies
        if decision.action is Action.MOVED:
            assert decision.target is not None and decision.slot is not None
            yield ApplyMoved(decision.slot, decision.target)
        elif decision.action is Action.ASK:
            asking = decision.target
        else:
            if decision.refresh:
                yield RequestRefresh()
            yield Sleep(decision.delay)


def apply_callback(
    callbacks: Mapping[str, Any], name: Any, reply: Any, options: Mapping[str, Any]
) -> Any:
    """Run redis-py's response callback for ``name`` on ``reply`` (if it has one)."""
    cb = callbacks.get(name)
    if cb is None:
        return reply
    return cb(reply, **{k: v for k, v in options.items() if k not in _CALLBACK_SKIP})


def annotate(exc: BaseException, number: int, command: Sequence[Any]) -> None:
    """Prefix ``exc``'s message as redis-py does: ``Command # N (CMD args) of pipeline``."""
    text = truncate_text(" ".join(map(safe_str, command)))  # type: ignore[no-untyped-call]
    first = exc.args[0] if exc.args else exc
    exc.args = (f"Command # {number} ({text}) of pipeline caused error: {first}", *exc.args[1:])


def raise_first_error(stack: Stack, results: Sequence[Any]) -> None:
    """Raise the first error reply (annotated), as ``execute(raise_on_error=True)`` does."""
    for i, r in enumerate(results):
        if isinstance(r, rx.ResponseError | AmbiguousCommandError):
            annotate(r, i + 1, stack[i][0])
            raise r


def finish_transaction(
    stack: Stack, replies: Sequence[Any], callbacks: Mapping[str, Any], raise_on_error: bool
) -> list[Any]:
    """Turn the replies of ``MULTI, *commands, EXEC`` into the caller's results.

    Raises the first queued error (EXECABORT), ``WatchError`` when EXEC returned nil, and
    the first error reply inside EXEC's results when ``raise_on_error``.
    """
    queued, exec_reply = replies[1:-1], replies[-1]
    if isinstance(replies[0], rx.ResponseError):
        raise replies[0]
    if isinstance(exec_reply, rx.ResponseError):
        errors = [(i, r) for i, r in enumerate(queued) if isinstance(r, rx.ResponseError)]
        if errors:
            i, err = errors[0]
            annotate(err, i + 1, stack[i][0])
            raise err
        raise exec_reply
    if exec_reply is None:
        raise rx.WatchError("Watched variable changed.")
    if isinstance(exec_reply, UnicodeDecodeError):
        raise exec_reply  # a binary reply under decode_responses (DUMP): as redis-py raises
    results = list(exec_reply)
    if len(results) != len(stack):
        raise rx.ResponseError("Wrong number of response items from pipeline execution")
    if raise_on_error:
        raise_first_error(stack, results)
    return [
        r if isinstance(r, Exception) else apply_callback(callbacks, args[0], r, options)
        for r, (args, options) in zip(results, stack, strict=True)
    ]


def assemble(
    plans: Sequence[PlannedCommand],
    owners: Sequence[int],
    replies: Sequence[Any],
    table: CommandTable,
) -> list[Any]:
    """Merge the replies of wire operations back into one result per queued command.

    ``owners[i]`` is the index of the command that wire operation ``i`` belongs to.
    """
    per_command: list[list[Any]] = [[] for _ in plans]
    for owner, reply in zip(owners, replies, strict=True):
        per_command[owner].append(reply)
    out: list[Any] = []
    for plan, parts in zip(plans, per_command, strict=True):
        try:
            if plan.split is not None:
                out.append(plan.split.merge(parts))
            elif len(parts) == 1:
                out.append(parts[0])
            else:
                spec = table.lookup(plan.ops[0][1])
                policy = spec.response_policy if spec is not None else ResponsePolicy.DEFAULT
                out.append(merge_replies(policy, parts, str(plan.ops[0][1][0])))
        except rx.RedisError as exc:
            out.append(exc)
    return out


def reads_undecoded(options: Mapping[str, Any], decode_responses: bool) -> bool:
    """Whether a queued command's reply is read as bytes although the client decodes
    replies: redis-py's ``NEVER_DECODE`` option (DUMP, FUNCTION DUMP...), as redis-py's
    own pipelines honour it outside MULTI."""
    return decode_responses and NEVER_DECODE in options


def after_loss(
    policy: RetryPolicy, table: CommandTable, unread: Sequence[Sequence[Any]], *, sent: bool
) -> list[AmbiguousCommandError | None]:
    """The commands of a pipeline whose connection was lost before their replies came:
    ``None`` where the command is re-run alone through its own retry path
    (:func:`~smartcache.core.retry.may_resend`), else the error reported in its place
    (it may or may not have run, and is not sent again)."""
    out: list[AmbiguousCommandError | None] = []
    for args in unread:
        if may_resend(policy, idempotent=table.is_idempotent(args), sent=sent):
            out.append(None)
        else:
            name = command_name(args)
            out.append(
                AmbiguousCommandError(
                    f"{name} in a pipeline: the connection was lost after it was sent, so it "
                    "may or may not have run; it was not re-sent",
                    command=name,
                )
            )
    return out
