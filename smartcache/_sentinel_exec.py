"""Running commands on a Sentinel-managed primary (and its replicas).

The retry rules are the core's (``decide``); what is Sentinel-specific lives here: writes
wait while the sentinels report a failover of our primary under way (so nothing is written
to a primary about to be demoted), errors that mean "this is no longer the primary"
(READONLY, a lost or refused connection, a timeout) make the state re-discover the primary
before the retry, reads may go to replicas, and with ``wait_replicas`` every write is
followed by WAIT in the same round trip, raising when too few replicas acknowledged it.
"""

from __future__ import annotations

import random
import time
from typing import Any

import redis.exceptions as rx

from smartcache._router import blocking_round_trip
from smartcache._sentinel_state import SentinelState
from smartcache.core.commands import CommandTable
from smartcache.core.flow import Outcome, command_error, command_name
from smartcache.core.retry import Action, RetryPolicy, decide
from smartcache.exceptions import DurabilityError
from smartcache.wire import ConnectionPool

__all__ = ["SentinelExecutor"]

_NET = (rx.ConnectionError, rx.TimeoutError, OSError)


class SentinelExecutor:
    """Executes commands against the primary a :class:`SentinelState` follows."""

    def __init__(
        self,
        state: SentinelState,
        policy: RetryPolicy,
        table: CommandTable,
        *,
        read_from: str = "primary",
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        hold_timeout: float = 10.0,
    ) -> None:
        self.state = state
        self.policy = policy
        self.table = table
        self.read_from = read_from
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.hold_timeout = hold_timeout

    def execute(self, args: tuple[Any, ...]) -> Any:
        """Run one command (already normalised) and return its raw reply."""
        spec = self.table.lookup(args)
        readonly = spec is not None and spec.readonly and not spec.write
        write = spec is None or spec.write
        blocking = spec is not None and spec.blocking and spec.is_blocking(args)
        idempotent = spec.is_idempotent(args) if spec is not None else False
        start = time.monotonic()
        attempts = 0
        use_replica = readonly and self.read_from != "primary"
        while True:
            outcome = self._once(args, write, readonly, use_replica, blocking)
            error = outcome.error
            if error is None:
                return outcome.reply
            on_primary = outcome.address == "primary"
            if on_primary and isinstance(error, (*_NET, rx.ReadOnlyError)):
                self.state.on_error(error)  # find the new primary before the retry
            if use_replica and isinstance(error, (*_NET, rx.BusyLoadingError)):
                use_replica = self.read_from == "replica"  # "replica_preferred": primary now
                if not use_replica:
                    continue
            attempts += 1
            decision = decide(
                self.policy,
                error,
                attempt=attempts,
                redirects=0,
                elapsed=time.monotonic() - start,
                idempotent=idempotent,
                sent=outcome.sent,
            )
            if decision.action is not Action.RETRY:
                command_error(error, decision.ambiguous, args, attempts)
            time.sleep(decision.delay)

    def _once(
        self, args: tuple[Any, ...], write: bool, readonly: bool, replica: bool, blocking: bool
    ) -> Outcome:
        """One try. ``Outcome.address`` is ``"primary"`` or ``"replica"``: which one answered."""
        state = self.state
        if write and not state.wait_until_writable(self.hold_timeout):
            held = rx.MasterDownError("a failover of the primary is still under way")
            return Outcome(error=held, address="replica")
        pools: list[ConnectionPool] = state.replica_pools() if replica else []
        role = "replica" if pools else "primary"
        try:
            pool = random.choice(pools) if pools else state.primary_pool()
        except _NET as exc:
            return Outcome(error=exc, address=role)
        conn = None
        sent = False
        try:
            conn = pool.get()
            sent = conn.is_connected
            if blocking:
                reply = blocking_round_trip(conn, args)
            elif write and self.wait_replicas and not readonly:
                reply, acked = conn.execute_many(
                    [args, ("WAIT", self.wait_replicas, self.wait_timeout_ms)]
                )
                if not isinstance(reply, rx.RedisError):
                    self._check_wait(args, acked)
            else:
                conn.send_command(*args)
                sent = True
                reply = conn.read_raw()
            sent = True
        except _NET as exc:
            return Outcome(error=exc, sent=sent, address=role)
        finally:
            if conn is not None:
                pool.release(conn)
        if isinstance(reply, rx.RedisError):
            if isinstance(reply, rx.ResponseError) and not isinstance(
                reply, rx.ReadOnlyError | rx.BusyLoadingError | rx.MasterDownError
            ):
                raise reply  # a plain error reply (WRONGTYPE...): the caller's to see
            return Outcome(error=reply, sent=True, address=role)
        return Outcome(reply=reply)

    def _check_wait(self, args: tuple[Any, ...], acked: Any) -> None:
        if isinstance(acked, BaseException):
            raise DurabilityError(
                f"{command_name(args)} was applied on the primary, but WAIT failed: {acked}",
                command=command_name(args),
                replicas=0,
                wanted=self.wait_replicas,
            )
        if int(acked) < self.wait_replicas:
            raise DurabilityError(
                f"{command_name(args)} was applied on the primary but reached only {acked} of "
                f"{self.wait_replicas} replica(s) within {self.wait_timeout_ms} ms; it may be "
                "lost if the primary fails now",
                command=command_name(args),
                replicas=int(acked),
                wanted=self.wait_replicas,
            )
