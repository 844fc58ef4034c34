"""Multi-step command flows as generators, shared by the sync and the async client.

A flow yields *effects* (small frozen values saying "do this I/O") and receives their
results; it never touches a socket, a clock or a sleep itself. The sync shell drives a flow
with plain calls, the async shell with awaits, so the rules for redirects, suspects,
replica fallback and retries are written once (as ``httpx`` does for its auth flows).

Effects and what the driver sends back:

=====================  ==========================================================
``RefreshIfPending()``  refresh the slot map if one is pending -> ``None``
``IsSuspect(slot)``     is the primary of ``slot`` suspected hung? -> ``bool``
``Attempt(...)``        send the command once -> :class:`Outcome`
``MarkSuspect(addr)``   note that ``addr`` timed out or refused -> ``None``
``ApplyMoved(s, addr)`` point slot ``s`` at ``addr`` now -> ``None``
``RequestRefresh()``    ask for a refresh before the next attempt -> ``None``
``Sleep(seconds)``      back off -> ``None``
=====================  ==========================================================

Pure: no sockets, no clocks (``clock`` is a parameter), no sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import redis.exceptions as rx

from smartcache.core.commands import CommandSpec
from smartcache.core.node_choice import reads_from_replica
from smartcache.core.retry import (
    Action,
    AwaitingTopology,
    RetryPolicy,
    decide,
    is_network_failure,
    request_written,
)
from smartcache.core.stats import Counters
from smartcache.exceptions import AmbiguousCommandError, ClusterUnavailableError

__all__ = [
    "ApplyMoved",
    "Attempt",
    "Effect",
    "IsSuspect",
    "MarkSuspect",
    "Outcome",
    "RefreshIfPending",
    "RequestRefresh",
    "Sleep",
    "command_error",
    "command_name",
    "failed_attempt",
    "keyed_flow",
    "unserved",
]

_REPLICA_TROUBLE = (rx.ConnectionError, rx.TimeoutError, OSError, rx.BusyLoadingError)


@dataclass(frozen=True, slots=True)
class RefreshIfPending:
    """Refresh the slot map now if something asked for it."""


@dataclass(frozen=True, slots=True)
class RequestRefresh:
    """Ask for a refresh before the next attempt."""


@dataclass(frozen=True, slots=True)
class IsSuspect:
    """Is the primary serving ``slot`` suspected hung?"""

    slot: int


@dataclass(frozen=True, slots=True)
class Attempt:
    """Send the command once: to ``asking`` after ASKING, else to the slot's primary (or a
    replica of its shard when ``replica``); ``blocking`` lifts the read timeout."""

    slot: int
    asking: str | None = None
    replica: bool = False
    blocking: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an :class:`Attempt` gave: a reply, or an error, whether the request was written
    (``sent``), and the address it went to."""

    reply: Any = None
    error: BaseException | None = None
    sent: bool = False
    address: str | None = None


@dataclass(frozen=True, slots=True)
class MarkSuspect:
    """``address`` timed out or refused a connection."""

    address: str


@dataclass(frozen=True, slots=True)
class ApplyMoved:
    """Point ``slot`` at ``address`` now (after MOVED)."""

    slot: int
    address: str


@dataclass(frozen=True, slots=True)
class Sleep:
    """Back off for ``seconds``."""

    seconds: float


Effect = RefreshIfPending | RequestRefresh | IsSuspect | Attempt | MarkSuspect | ApplyMoved | Sleep


def keyed_flow(
    args: tuple[Any, ...],
    spec: CommandSpec | None,
    slot: int,
    *,
    policy: RetryPolicy,
    read_from: str,
    clock: Callable[[], float],
    first: Outcome | None = None,
    reroutable: bool = True,
    counters: Counters | None = None,
) -> Generator[Effect, Any, Any]:
    """Carry one keyed command to its node through redirects, failover and retries.

    Returns the reply; raises what the node said, :class:`ClusterUnavailableError` when the
    cluster kept refusing past the budget, or :class:`AmbiguousCommandError` when a
    non-idempotent command's fate is unknown. ``first`` hands over a failure the caller's
    fast path already met. ``reroutable=False``: the shell talks to one fixed server
    (see :func:`~smartcache.core.retry.decide`).
    """
    start = clock()
    attempts = redirects = 0
    asking: str | None = None
    last_real: BaseException | None = None
    use_replica = reads_from_replica(read_from, spec)
    blocking = spec is not None and spec.blocking and spec.is_blocking(args)
    outcome = first
    while True:
        if outcome is None:
            yield RefreshIfPending()
            if asking is None and not use_replica and (yield IsSuspect(slot)):
                outcome = Outcome(error=AwaitingTopology())
            else:
                outcome = yield Attempt(slot, asking, use_replica, blocking)
                if outcome.error is None:
                    return outcome.reply
        error = outcome.error
        assert error is not None
        if outcome.address is not None and is_network_failure(error):
            yield MarkSuspect(outcome.address)
        if not isinstance(error, AwaitingTopology):
            last_real = error
        asking = None
        if use_replica and read_from == "replica_preferred" and isinstance(error, _REPLICA_TROUBLE):
            use_replica = False  # a replica failed: the primary serves the retry at once
            outcome = None
            continue
        if isinstance(error, rx.AskError):
            redirects += 1
        elif not isinstance(error, AwaitingTopology):
            attempts += 1
        decision = decide(
            policy,
            error,
            attempt=attempts,
            redirects=redirects,
            elapsed=clock() - start,
            idempotent=spec.is_idempotent(args) if spec is not None else False,
            sent=outcome.sent,
            answered_by=outcome.address,
            reroutable=reroutable,
        )
        if counters is not None:
            counters.decided(decision, error)
        if decision.action is Action.RAISE:
            if isinstance(error, AwaitingTopology):
                if last_real is None:
                    name = command_name(args)
                    raise ClusterUnavailableError(
                        f"{name}: the primary serving slot {slot} stopped answering and the "
                        "cluster did not fail over within the command's retry budget",
                        command=name,
                        slot=slot,
                        attempts=attempts,
                    )
                error = last_real
            command_error(error, decision.ambiguous, args, attempts)
        target = decision.target  # an empty-host redirect already names the host that answered
        if decision.action is Action.MOVED:
            assert target is not None and decision.slot is not None
            yield ApplyMoved(decision.slot, target)
        elif decision.action is Action.ASK:
            asking = target
        else:
            if decision.refresh:
                yield RequestRefresh()
            yield Sleep(decision.delay)
        outcome = None


def failed_attempt(error: BaseException, address: str | None) -> Outcome:
    """The outcome of an attempt that failed with ``error`` (an error reply or a transport
    error), for the flows: whether the request may have run is
    :func:`~smartcache.core.retry.request_written` (an error reply: it reached the server;
    a transport error: its ``request_sent``). The one rule every shell's attempt uses."""
    return Outcome(error=error, sent=request_written(error), address=address)


def unserved(slot: int) -> Outcome:
    """The outcome of an attempt on a slot no node serves (a hole in the slot map): the
    ``CLUSTERDOWN`` a node would answer, so the flow backs off and refreshes."""
    return Outcome(error=rx.ClusterDownError(f"CLUSTERDOWN Hash slot {slot} is not served"))


def command_name(args: Sequence[Any]) -> str:
    """The upper-case name of a command tuple, for messages."""
    first = args[0]
    text = first.decode(errors="replace") if isinstance(first, bytes) else str(first)
    return text.upper()


def command_error(
    error: BaseException, ambiguous: bool, args: Sequence[Any], attempts: int
) -> NoReturn:
    """Raise the error a caller sees when a command's budget is spent."""
    name = command_name(args)
    if ambiguous:
        raise AmbiguousCommandError(
            f"{name}: the connection was lost after the command was sent, so it may or "
            "may not have run; it was not re-sent because it is not idempotent (pass "
            "retry_non_idempotent=True to re-send such commands)",
            command=name,
            node=getattr(error, "node", None),
            attempts=attempts,
        ) from error
    if isinstance(error, rx.ClusterDownError | rx.TryAgainError):
        raise ClusterUnavailableError(
            f"{name}: the cluster kept refusing the command after {attempts} attempt(s): {error}",
            command=name,
            attempts=attempts,
        ) from error
    raise error
