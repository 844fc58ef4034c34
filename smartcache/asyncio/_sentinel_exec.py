"""Running commands on a Sentinel-managed primary (and its replicas): the asyncio driver.

The rules (hold writes during a failover, re-discover after READONLY or a lost primary,
replica reads and their fallback, ``WAIT`` after writes, retries) are the core's
:func:`~smartcache.core.sentinel_command.sentinel_command_flow`; this module only does the
I/O the flow asks for, each attempt through the pool's ``attempt()`` (blocking commands
and writes followed by ``WAIT`` on a connection of their own: ``WAIT`` blocks the
connection it runs on, and waits for that connection's writes only).

``smartcache/sync/_sentinel_exec.py`` is generated from this file (``scripts/unasync.py``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import time
from typing import Any, Protocol

import redis.exceptions as rx

from smartcache.asyncio._pool import AsyncConnectionPool
from smartcache.core.commands import CommandTable
from smartcache.core.flow import (
    Outcome,
    Sleep,
    failed_attempt,
)
from smartcache.core.retry import RetryPolicy
from smartcache.core.sentinel_command import (
    Rediscover,
    SendCommand,
    WaitWritable,
    sentinel_command_flow,
)
from smartcache.core.stats import Counters

__all__ = ["AsyncSentinelExecutor"]

_NET = (rx.ConnectionError, rx.TimeoutError, OSError)


class _State(Protocol):
    """What the executor needs of the Sentinel state it drives (``AsyncSentinelState``): a
    Protocol, so this module does not import the state's, which imports this one."""

    @property
    def current_pool(self) -> AsyncConnectionPool | None: ...
    @property
    def writable(self) -> bool: ...
    async def primary_pool(self) -> AsyncConnectionPool: ...
    async def replica_pools(self) -> list[AsyncConnectionPool]: ...
    async def on_error(self, exc: BaseException | None = None) -> bool: ...
    async def wait_until_writable(self, timeout: float) -> bool: ...


class AsyncSentinelExecutor:
    """Executes commands against the primary a Sentinel state (``AsyncSentinelState``)
    follows."""

    def __init__(
        self,
        state: _State,
        policy: RetryPolicy,
        table: CommandTable,
        *,
        read_from: str = "primary",
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        hold_timeout: float = 10.0,
        wait_aof: bool = False,
        counters: Counters | None = None,
    ) -> None:
        self.state = state
        self.counters = counters
        self.policy = policy
        self.table = table
        self.read_from = read_from
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self.hold_timeout = hold_timeout
        self.wait_aof = wait_aof
        # Every command goes to the primary: try it before the flow.
        self._fast = read_from == "primary" and not wait_replicas

    async def execute(self, args: tuple[Any, ...]) -> Any:
        """Run one command (multi-word names already split) and return its raw reply.

        Raises what the flow raises: a plain error reply, ``DurabilityError``,
        ``AmbiguousCommandError``, or the last error once the retry budget is spent.
        """
        state = self.state
        pool = state.current_pool
        if (
            self._fast
            and pool is not None
            and state.writable
            and pool.ready
            and not self.table.is_blocking(args)
        ):
            # The fast path: the flow's first attempt, made inline (nothing is awaited
            # between the writable check and queuing the command, so no hold is missed).
            try:
                return await pool.execute(*args)
            except (rx.ResponseError, *_NET) as exc:
                first = failed_attempt(exc, "primary")
            return await self._run(args, first)
        return await self._run(args, None)

    async def _run(self, args: tuple[Any, ...], first: Outcome | None) -> Any:
        """Drive :func:`~smartcache.core.sentinel_command.sentinel_command_flow`."""
        flow = sentinel_command_flow(
            args,
            self.table.lookup(args),
            policy=self.policy,
            read_from=self.read_from,
            clock=time.monotonic,
            wait_replicas=self.wait_replicas,
            wait_timeout_ms=self.wait_timeout_ms,
            hold_timeout=self.hold_timeout,
            wait_aof=self.wait_aof,
            first=first,
            counters=self.counters,
        )
        state = self.state
        result: Any = None
        try:
            while True:
                effect = flow.send(result)
                result = None
                match effect:
                    case SendCommand():
                        result = await self._send(args, effect)
                    case WaitWritable(timeout=timeout):
                        result = await state.wait_until_writable(timeout)
                    case Rediscover(error=error):
                        result = await state.on_error(error)
                    case Sleep(seconds=seconds):
                        await asyncio.sleep(seconds)
        except StopIteration as done:
            return done.value
        finally:
            flow.close()

    async def _send(self, args: tuple[Any, ...], step: SendCommand) -> Outcome:
        """One try. ``Outcome.address`` is ``"primary"`` or ``"replica"``: who was asked."""
        state = self.state
        pools = await state.replica_pools() if step.replica else []
        role = "replica" if pools else "primary"
        try:
            pool = random.choice(pools) if pools else await state.primary_pool()
        except rx.ResponseError as exc:  # e.g. the handshake was refused
            return Outcome(error=exc, address=role)
        except _NET as exc:
            return Outcome(error=exc, address=role)
        wait = step.wait_command() if step.wait_replicas else None
        outcome = await pool.attempt(
            args, blocking=step.blocking, then=wait, then_timeout=step.wait_timeout_ms / 1000
        )
        return dataclasses.replace(outcome, address=role)
