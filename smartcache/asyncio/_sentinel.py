"""Sentinel state for the asyncio client: the current primary, replica pools, failover holds.

:class:`AsyncSentinelState` is the async driver of the core's Sentinel flows
(:func:`~smartcache.core.sentinel_flow.discovery_flow`,
:func:`~smartcache.core.sentinel_flow.replicas_flow`,
:func:`~smartcache.core.sentinel_flow.react`): it finds the primary of one service through
its sentinels, confirms it with ``ROLE``, keeps one pool for it (swapped whole on a switch;
the old pool is closed once its in-flight commands are answered) and pools for the usable
replicas. Its watcher (:mod:`smartcache.asyncio._sentinel_watch`, an asyncio task) follows
the sentinels' events: a failover of our primary holds writes
(:meth:`AsyncSentinelState.wait_until_writable`) until ``+switch-master`` (or an abort).
:class:`~smartcache.asyncio._sentinel_exec.AsyncSentinelExecutor` runs commands on it.

Every decision is the core's; this module only awaits where the sync
:class:`~smartcache.sync._sentinel.SentinelState` blocks. One event loop only; not
fork-safe (no asyncio code is).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis.exceptions as rx

from smartcache.asyncio._pool import AsyncConnectionPool
from smartcache.asyncio._sentinel_exec import AsyncSentinelExecutor
from smartcache.asyncio._sentinel_probe import ask_replicas, ask_sentinel, role_refusal
from smartcache.asyncio._sentinel_replicas import AsyncReplicaSet, PoolRetirer
from smartcache.asyncio._sentinel_watch import AsyncSentinelWatcher
from smartcache.core.sentinel import Address, FailoverState, SentinelEvent, format_address
from smartcache.core.sentinel_flow import (
    AskSentinel,
    ConfirmRole,
    Discovery,
    LearnSentinels,
    ListReplicas,
    Pause,
    check_config,
    discovery_flow,
    react,
    replicas_flow,
)
from smartcache.exceptions import SmartConnectionError
from smartcache.wire import ConnectionSettings
from smartcache.wire.settings import short_timeouts

__all__ = ["AsyncSentinelExecutor", "AsyncSentinelState", "Listener"]

#: ``listener(kind, value)``, as :data:`smartcache.sync._sentinel.Listener`: ``"switch"``,
#: ``"replicas"``, ``"sentinels"``, ``"failover"``, ``"error"``, ``"subscribed"``. Called in
#: the event loop; it must not block.
Listener = Callable[[str, Any], None]


class AsyncSentinelState:
    """The primary and replicas of one Sentinel-managed service, kept current (asyncio).

    Arguments as :class:`~smartcache.sync._sentinel.SentinelState`; ``pool_factory``
    makes an :class:`~smartcache.asyncio._pool.AsyncConnectionPool` from a node's
    settings. May be built outside a running loop; every coroutine must run in one loop.
    """

    def __init__(  # noqa: PLR0917 - the same signature as SentinelState
        self,
        sentinels: Sequence[tuple[str, int]],
        service_name: str,
        data_settings: ConnectionSettings,
        sentinel_settings: ConnectionSettings,
        pool_factory: Callable[[ConnectionSettings], AsyncConnectionPool],
        check_interval: float = 5.0,
        *,
        query_timeout: float = 0.5,
        discover_timeout: float = 5.0,
    ) -> None:
        self._sentinels = check_config(
            sentinels,
            service_name,
            check_interval=check_interval,
            query_timeout=query_timeout,
            discover_timeout=discover_timeout,
        )
        self.service_name = service_name
        self.check_interval = check_interval
        self.query_timeout = query_timeout
        self.discover_timeout = discover_timeout
        self._data_settings = data_settings
        self._data_probe = short_timeouts(data_settings, query_timeout, query_timeout)
        self._sentinel_settings = sentinel_settings.replace(db=0)  # sentinels have no dbs
        self._pool_factory = pool_factory
        self._listeners: list[Listener] = []
        self._closed = False
        self._watcher: AsyncSentinelWatcher | None = None
        self._primary: Address | None = None
        self._primary_pool: AsyncConnectionPool | None = None
        self._retirer = PoolRetirer()
        self._replicas = AsyncReplicaSet(
            lambda address: pool_factory(data_settings.with_address(*address)),
            self._retirer.retire,
        )
        self._failover = FailoverState(service_name)
        self._writable = asyncio.Event()
        self._writable.set()
        self._switched = asyncio.Event()  # set (and replaced) on every switch
        self._discover_lock = asyncio.Lock()
        self._replica_lock = asyncio.Lock()
        self._discoveries = 0
        self._switches = 0

    def __repr__(self) -> str:
        return f"<AsyncSentinelState {self.service_name} primary={self.primary_address}>"

    # -- views ------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True after :meth:`aclose`."""
        return self._closed

    @property
    def sentinels(self) -> list[Address]:
        """Known sentinels, deduplicated, the last one that answered first."""
        return list(self._sentinels)

    @property
    def primary_address(self) -> str | None:
        """``host:port`` of the confirmed primary (None before the first discovery)."""
        return format_address(self._primary) if self._primary else None

    @property
    def current_pool(self) -> AsyncConnectionPool | None:
        """The primary's pool as it stands (None before discovery): for hot paths."""
        return self._primary_pool

    @property
    def writable(self) -> bool:
        """True when no failover of the primary is reported (writes may go now)."""
        return self._writable.is_set()

    @property
    def replica_addresses(self) -> list[str]:
        """``host:port`` of the replicas fit for reads, as last refreshed."""
        return self._replicas.addresses

    @property
    def failover_state(self) -> FailoverState:
        """The failover state machine as it stands."""
        return self._failover

    @property
    def watcher_running(self) -> bool:
        """True while the watcher task runs."""
        watcher = self._watcher
        return watcher is not None and watcher.running

    @property
    def watcher(self) -> AsyncSentinelWatcher | None:
        """The watcher, once started."""
        return self._watcher

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(kind, value)`` on every change (see :data:`Listener`)."""
        self._listeners.append(listener)

    def report(self, kind: str, value: Any) -> None:
        """Tell the listeners; a failing listener is ignored."""
        for listener in list(self._listeners):
            with contextlib.suppress(Exception):  # a listener must never break the state
                listener(kind, value)

    # -- the primary ------------------------------------------------------------------------
    async def primary_pool(self) -> AsyncConnectionPool:
        """The pool of the current primary (discovered on first use)."""
        pool = self._primary_pool
        if pool is None:
            self._check_open()
            await self._discover(retry=True)
            pool = self._primary_pool
            if pool is None:  # closed while discovering
                raise self._closed_error()
        return pool

    async def discover(self) -> str:
        """Find the primary through the sentinels, confirm it with ``ROLE``; return host:port.

        The rules are :func:`~smartcache.core.sentinel_flow.discovery_flow`'s. Concurrent
        calls collapse into one. Raises :class:`~smartcache.exceptions.NoReachableNodeError`
        listing every address tried.
        """
        self._check_open()
        return format_address(await self._discover(retry=True))

    async def on_error(self, exc: BaseException | None = None) -> bool:
        """Re-discover the primary at once after ``exc`` on it; True if the primary changed.

        Joins a discovery already running instead of starting another. Never raises.
        """
        if self._closed:
            return False
        before = self._primary
        try:
            await self._discover(retry=True)
        except (rx.RedisError, OSError) as error:
            self.report("error", error)
            return False
        return self._primary != before

    async def wait_until_writable(self, timeout: float) -> bool:
        """Wait while a failover of our primary is under way; False if still so at ``timeout``.

        True at once when no failover is reported, and once the state is closed.
        """
        event = self._writable
        if event.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()
        return event.is_set()

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    def _closed_error(self) -> SmartConnectionError:
        return SmartConnectionError(f"the Sentinel state of {self.service_name!r} is closed")

    async def _discover(self, *, retry: bool) -> Address:
        seen = self._discoveries
        async with self._discover_lock:
            if self._discoveries != seen and self._primary is not None:
                return self._primary  # someone discovered while we waited
            address = await self._run_discovery(self.discover_timeout if retry else 0.0)
            self._discoveries += 1
            return address

    async def _run_discovery(self, timeout: float) -> Address:
        """Drive :func:`~smartcache.core.sentinel_flow.discovery_flow`: the async driver."""
        switches = self._switches
        flow = discovery_flow(
            self._sentinels, self.service_name, clock=time.monotonic, timeout=timeout
        )
        answer: Any = None
        try:
            while True:
                effect = flow.send(answer)
                answer = None
                match effect:
                    case AskSentinel(address=sentinel, commands=commands):
                        try:
                            answer = await ask_sentinel(
                                self.sentinel_settings_for(sentinel), self.service_name, commands
                            )
                        except (rx.RedisError, OSError) as exc:
                            answer = exc
                    case ConfirmRole(address=address):
                        answer = await self._refusal(address)
                    case LearnSentinels(addresses=addresses):
                        self._learn_sentinels(addresses)
                    case Pause(seconds=seconds):
                        answer = await self._pause(seconds, switches)
        except StopIteration as done:
            found: Discovery = done.value
        finally:
            flow.close()
        if found.sentinel is not None:
            self._promote_sentinel(found.sentinel)
            self._install_primary(found.primary)
        return found.primary

    async def _pause(self, seconds: float, switches: int) -> Address | None:
        """Wait (woken at once by a switch); the primary installed meanwhile, if any."""
        if self._switches == switches and seconds > 0 and not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self._switched.wait()
        if self._closed:
            raise self._closed_error()
        return self._primary if self._switches != switches else None

    async def _refusal(self, address: Address) -> str | None:
        return await role_refusal(self._data_probe.with_address(*address))

    def _install_primary(self, address: Address) -> None:
        """Make ``address`` the primary: new pool swapped in, old one retired, holds lifted.

        No await in here: every task sees the old primary or the new one, never a mix.
        """
        if self._closed:
            return  # a discovery that finished after aclose(): install nothing
        switched = address != self._primary or self._primary_pool is None
        if switched:
            old = self._primary_pool
            self._primary_pool = self._pool_factory(self._data_settings.with_address(*address))
            self._primary = address
            self._switches += 1
            self._replicas.dirty = True
            if old is not None:
                self._retirer.retire(old)  # closed once its in-flight commands are answered
            event, self._switched = self._switched, asyncio.Event()
            event.set()
        state = self._failover.with_primary(address)
        changed = state is not self._failover
        self._set_failover(state)
        if switched:
            if self._watcher is not None:
                self._watcher.wake()  # it refreshes the replicas after its next wake-up
            self.report("switch", format_address(address))
        if changed:
            self.report("failover", state)

    def _set_failover(self, state: FailoverState) -> None:
        self._failover = state
        if state.writable:
            self._writable.set()
        else:
            self._writable.clear()

    # -- sentinels ---------------------------------------------------------------------------
    def sentinel_settings_for(self, sentinel: Address) -> ConnectionSettings:
        """Settings for a connection to ``sentinel``, with short timeouts."""
        return short_timeouts(
            self._sentinel_settings.with_address(*sentinel),
            self.query_timeout,
            self.query_timeout,
        )

    def _learn_sentinels(self, addresses: Iterable[Address]) -> None:
        new = [a for a in dict.fromkeys(addresses) if a not in self._sentinels]
        if new:
            self._sentinels = [*self._sentinels, *new]
            if self._watcher is not None:
                self._watcher.wake()
            self.report("sentinels", tuple(self._sentinels))

    def _promote_sentinel(self, sentinel: Address) -> None:
        if self._sentinels and self._sentinels[0] != sentinel:
            self._sentinels = [sentinel, *(a for a in self._sentinels if a != sentinel)]

    # -- replicas ---------------------------------------------------------------------------
    async def replica_pools(self) -> list[AsyncConnectionPool]:
        """Pools of the replicas fit for reads (loaded on first use; may be empty)."""
        if not self._replicas.loaded:
            self._check_open()
            await self.refresh_replicas()
        elif self._replicas.dirty and not self.watcher_running:
            await self.after_events()  # the primary moved and no watcher refreshes for us
        return self._replicas.pools

    async def refresh_replicas(self) -> list[str]:
        """Ask a sentinel for the replicas and keep the usable ones; return their addresses.

        The rules are :func:`~smartcache.core.sentinel_flow.replicas_flow`'s. Pools of
        replicas that left the list are closed.
        """
        async with self._replica_lock:
            flow = replicas_flow(self._sentinels, self.service_name, self._primary)
            answer: Any = None
            try:
                while True:
                    step: ListReplicas = flow.send(answer)
                    settings = self.sentinel_settings_for(step.address)
                    try:
                        answer = await ask_replicas(settings, step.command)
                    except (rx.RedisError, OSError) as exc:
                        answer = exc
            except StopIteration as done:
                addresses: tuple[Address, ...] = done.value
            finally:
                flow.close()
            if self._replicas.install(addresses):
                self.report("replicas", tuple(format_address(a) for a in addresses))
        return self.replica_addresses

    # -- called by the watcher ---------------------------------------------------------------
    async def handle_event(self, event: SentinelEvent) -> None:
        """Feed one sentinel event to the failover state; follow a switch at once."""
        before = self._failover
        reaction = react(before, event)
        after = reaction.failover
        if after is not before:
            self._set_failover(after)
        if reaction.learn is not None:
            self._learn_sentinels([reaction.learn])
        if after is not before:
            self.report("failover", after)
        if reaction.follow is not None:
            await self._follow_switch(reaction.follow)
        elif reaction.replicas_stale:
            self._replicas.dirty = True

    async def _follow_switch(self, address: Address) -> None:
        if await self._refusal(address) is None:
            self._install_primary(address)
            return
        await self.discover_once()  # the announced primary does not confirm: ask the sentinels

    async def discover_once(self) -> None:
        """One discovery round for the watcher: skipped if a discovery already runs (it
        will find the truth; the watcher must not wait behind its retries). Never raises
        a Redis or network error (reports it)."""
        if self._discover_lock.locked() or self._closed:
            return
        async with self._discover_lock:
            try:
                await self._run_discovery(0.0)
                self._discoveries += 1
            except (rx.RedisError, OSError) as exc:
                self.report("error", exc)

    def forget_source(self, source: str) -> None:
        """A sentinel's subscription was lost: whatever failover it reported may never end."""
        before = self._failover
        after = before.forget(source)
        if after is not before:
            self._set_failover(after)
            self.report("failover", after)

    async def after_events(self) -> None:
        """After a batch of events: refresh the replicas if an event concerned them."""
        if self._replicas.dirty and not self._closed:
            self._replicas.dirty = False
            try:
                await self.refresh_replicas()
            except (rx.RedisError, OSError) as exc:
                self.report("error", exc)

    async def periodic_check(self) -> None:
        """Re-confirm the primary and refresh the replicas (one round, never waiting long)."""
        if self._closed:
            return
        await self.discover_once()
        self._replicas.dirty = True
        await self.after_events()

    # -- watcher and close -----------------------------------------------------------------------
    def start_watcher(self) -> None:
        """Start following the sentinels' events in a task of the running loop (idempotent).

        The task is cancelled by :meth:`aclose` (or when the state is garbage-collected).
        """
        self._check_open()
        if self._watcher is not None and self._watcher.running:
            return
        self._watcher = AsyncSentinelWatcher(self)
        self._watcher.start()

    async def aclose(self) -> None:
        """Cancel the watcher, close every pool, release waiting writers. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._writable.set()  # waiting writers wake, and find the state closed
        self._switched.set()
        watcher, self._watcher = self._watcher, None
        pool, self._primary_pool = self._primary_pool, None
        if watcher is not None:
            await watcher.stop()
        if pool is not None:
            await pool.aclose()
        await self._replicas.aclose()
        await self._retirer.aclose()

    async def __aenter__(self) -> AsyncSentinelState:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
