"""One command on a Sentinel-managed primary (or its replicas), as a flow: the rules, once.

Driven by the sync :class:`~smartcache.sync._sentinel_exec.SentinelExecutor` and the asyncio
:class:`~smartcache.asyncio._sentinel_exec.AsyncSentinelExecutor`. The Sentinel-specific
rules: writes wait while the sentinels report a failover of our primary (nothing is
written to a primary about to be demoted); an error that means "this is no longer the
primary" (``READONLY``, a lost or refused connection, a timeout) makes the shell
re-discover the primary before the retry; reads may go to replicas, falling back to the
primary with ``read_from="replica_preferred"``; with ``wait_replicas`` a write is followed
by ``WAIT`` and too few acknowledgements raise
:class:`~smartcache.exceptions.DurabilityError`. Retries and backoff are the core's
(:func:`~smartcache.core.retry.decide`).

Effects and what the driver sends back:

============================  ======================================================
``WaitWritable(timeout)``     wait while a failover is under way -> ``bool`` (False:
                              still under way at ``timeout``)
``SendCommand(...)``          send the command once -> :class:`~smartcache.core.flow.
                              Outcome` with ``address`` ``"primary"`` or
                              ``"replica"`` (who was asked); with ``wait_replicas``
                              the reply is ``(reply, WAIT reply)``; error replies
                              come back as ``Outcome.error``
``Rediscover(error)``         find the primary again after ``error`` -> ``None``
``Sleep(seconds)``            back off -> ``None``
============================  ======================================================

Pure: no sockets, no clock (``clock`` is a parameter), no sleeping.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Final

import redis.exceptions as rx

from smartcache.core.commands import CommandSpec
from smartcache.core.flow import Outcome, Sleep, command_error, command_name
from smartcache.core.node_choice import reads_from_replica
from smartcache.core.retry import Action, RetryPolicy, decide
from smartcache.core.stats import Counters
from smartcache.exceptions import DurabilityError

__all__ = [
    "CommandEffect",
    "Rediscover",
    "SendCommand",
    "WaitWritable",
    "check_wait",
    "sentinel_command_flow",
    "wait_command",
]

_NET: Final = (rx.ConnectionError, rx.TimeoutError, OSError)
#: Error replies that say "not the primary (yet)" or "not ready": retried, never raised as is.
_NOT_SERVING: Final = (rx.ReadOnlyError, rx.BusyLoadingError, rx.MasterDownError)


@dataclass(frozen=True, slots=True)
class WaitWritable:
    """Wait up to ``timeout`` seconds while a failover of the primary is under way."""

    timeout: float


@dataclass(frozen=True, slots=True)
class SendCommand:
    """Send the command once: to a replica when ``replica`` (the primary if there is
    none), else to the primary; ``blocking`` lifts the read timeout (a connection of its
    own); ``wait_replicas`` > 0 follows it with ``WAIT wait_replicas wait_timeout_ms`` on
    the same connection."""

    replica: bool = False
    blocking: bool = False
    wait_replicas: int = 0
    wait_timeout_ms: int = 0
    #: use ``WAITAOF 0 wait_replicas timeout`` (replicas fsynced their AOF) instead of WAIT
    aof: bool = False

    def wait_command(self) -> tuple[Any, ...]:
        """The durability command that follows the write on its connection."""
        return wait_command(self.wait_replicas, self.wait_timeout_ms, aof=self.aof)


def wait_command(wanted: int, timeout_ms: int, *, aof: bool = False) -> tuple[Any, ...]:
    """The command sent right behind a write for ``wait_replicas=``: ``WAIT`` (replicas
    acknowledged it) or ``WAITAOF 0 n timeout`` (replicas fsynced it to their AOF); its
    reply goes to :func:`check_wait`."""
    if aof:
        return ("WAITAOF", 0, wanted, timeout_ms)
    return ("WAIT", wanted, timeout_ms)


@dataclass(frozen=True, slots=True)
class Rediscover:
    """The primary failed with ``error``: find (and install) the primary again. The driver
    answers True when a different primary was installed (the retry then goes at once)."""

    error: BaseException


CommandEffect = WaitWritable | SendCommand | Rediscover | Sleep


def sentinel_command_flow(
    args: tuple[Any, ...],
    spec: CommandSpec | None,
    *,
    policy: RetryPolicy,
    read_from: str,
    clock: Callable[[], float],
    wait_replicas: int = 0,
    wait_timeout_ms: int = 1000,
    hold_timeout: float = 10.0,
    first: Outcome | None = None,
    wait_aof: bool = False,
    counters: Counters | None = None,
) -> Generator[CommandEffect, Any, Any]:
    """Carry one command to the primary (or a replica) through failovers and retries.

    Returns the reply. Raises a plain error reply (``WRONGTYPE``...) at once,
    :class:`~smartcache.exceptions.DurabilityError` when too few replicas acknowledged a
    write, :class:`~smartcache.exceptions.AmbiguousCommandError` when a non-idempotent
    command's fate is unknown, or the last error when the retry budget is spent. ``first``
    hands over the outcome of an attempt the caller's fast path already made on the
    primary (with no ``WAIT``).
    """
    readonly = spec is not None and spec.readonly and not spec.write
    write = spec is None or spec.replicates
    blocking = spec is not None and spec.blocking and spec.is_blocking(args)
    idempotent = spec.is_idempotent(args) if spec is not None else False
    wait = wait_replicas if write and not readonly else 0
    use_replica = reads_from_replica(read_from, spec)
    start = clock()
    attempts = 0
    outcome = first
    while True:
        with_wait = False
        if outcome is None:
            if write and not (yield WaitWritable(hold_timeout)):
                held = rx.MasterDownError("a failover of the primary is still under way")
                outcome = Outcome(error=held)  # nothing was sent anywhere
            else:
                with_wait = bool(wait)
                outcome = yield SendCommand(
                    use_replica, blocking, wait, wait_timeout_ms if wait else 0, wait_aof
                )
        error = outcome.error
        if error is None:
            if with_wait:
                reply, acked = outcome.reply
                check_wait(args, acked, wait, wait_timeout_ms, aof=wait_aof)
                return reply
            return outcome.reply
        if isinstance(error, rx.ResponseError) and not isinstance(error, _NOT_SERVING):
            raise error  # a plain error reply (WRONGTYPE...): the caller's to see
        switched = False
        if outcome.address == "primary" and isinstance(error, (*_NET, rx.ReadOnlyError)):
            switched = bool((yield Rediscover(error)))  # find the new primary before the retry
        sent = outcome.sent
        outcome = None
        if use_replica and isinstance(error, (*_NET, rx.BusyLoadingError)):
            use_replica = read_from == "replica"  # "replica_preferred": the primary now
            if not use_replica:
                continue
        attempts += 1
        decision = decide(
            policy,
            error,
            attempt=attempts,
            redirects=0,
            elapsed=clock() - start,
            idempotent=idempotent,
            sent=sent,
        )
        if counters is not None:
            counters.decided(decision, error)
        if decision.action is not Action.RETRY:
            command_error(error, decision.ambiguous, args, attempts)
        if not switched:  # a new primary was just confirmed: retry on it without backing off
            yield Sleep(decision.delay)


def check_wait(
    args: tuple[Any, ...], acked: Any, wanted: int, timeout_ms: int, *, aof: bool = False
) -> None:
    """Raise :class:`~smartcache.exceptions.DurabilityError` unless ``WAIT`` (or
    ``WAITAOF``, whose reply is ``[local, replicas]``) said that at least ``wanted``
    replicas acknowledged the write ``args``."""
    name = command_name(args)
    if aof and isinstance(acked, list | tuple):
        acked = acked[1]
    if isinstance(acked, BaseException):
        raise DurabilityError(
            f"{name} was applied on the primary, but WAIT failed: {acked}",
            command=name,
            replicas=0,
            wanted=wanted,
        )
    if int(acked) < wanted:
        raise DurabilityError(
            f"{name} was applied on the primary but reached only {acked} of {wanted} "
            f"replica(s) within {timeout_ms} ms; it may be lost if the primary fails now",
            command=name,
            replicas=int(acked),
            wanted=wanted,
        )
