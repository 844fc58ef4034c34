# Generated from smartcache/asyncio/_sentinel.py by scripts/unasync.py: do not edit.
"""Sentinel state: the current primary, the replica pools, and the failover holds.

:class:`SentinelState` drives the core's Sentinel flows
(:func:`~smartcache.core.sentinel_flow.discovery_flow`,
:func:`~smartcache.core.sentinel_flow.replicas_flow`,
:func:`~smartcache.core.sentinel_flow.react`): it finds the primary of one service through
its sentinels, confirms it with ``ROLE`` on the node itself, keeps one pool for it (swapped
whole on a switch; the old pool is retired, so no connection to a demoted primary is
reused) and pools for the usable replicas. Its watcher (:mod:`._sentinel_watch`) follows
the sentinels' events: a failover of our primary holds writes
(:meth:`SentinelState.wait_until_writable`) until ``+switch-master`` (or an abort),
so nothing is written to an old primary whose writes the failover will erase. Every
decision is the core's; this module only does the I/O and the swapping. The primitives
that differ between tasks and threads (the state lock, events, retiring a pool, fork
handling) are :mod:`._sentinel_io`'s.

Generated from ``smartcache/asyncio/_sentinel.py`` by ``scripts/unasync.py``: edit that file.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis.exceptions as rx

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
from smartcache.sync._pool import ConnectionPool
from smartcache.sync._sentinel_exec import SentinelExecutor
from smartcache.sync._sentinel_io import (
    Event,
    Lock,
    PoolRetirer,
    StateLock,
    track_forks,
    unless_busy,
    wait_event,
)
from smartcache.sync._sentinel_probe import ask_replicas, ask_sentinel, role_refusal
from smartcache.sync._sentinel_replicas import ReplicaSet
from smartcache.sync._sentinel_watch import SentinelWatcher
from smartcache.wire import ConnectionSettings
from smartcache.wire.settings import short_timeouts

__all__ = ["SentinelExecutor", "SentinelState", "Listener"]

#: ``listener(kind, value)``: ``"switch"`` (new primary ``host:port``), ``"replicas"`` (tuple
#: of ``host:port``), ``"sentinels"`` (tuple of ``(host, port)``), ``"failover"``
#: (:class:`~smartcache.core.sentinel.FailoverState`), ``"error"`` (an exception the watcher
#: survived), ``"subscribed"`` (the watcher now hears the sentinel ``host:port``). Called
#: where the change was made; it must not block.
Listener = Callable[[str, Any], None]


class SentinelState:
    """The primary and replicas of one Sentinel-managed service, kept current.

    ``sentinels``: ``(host, port)`` of at least one sentinel (the others are learned).
    ``data_settings`` / ``sentinel_settings``: how to reach the data nodes and the sentinels
    (separate credentials; ``sentinel_settings.db`` is ignored). ``pool_factory`` makes a
    pool from a node's settings. ``check_interval``: seconds between re-checks of the primary
    and replicas by the watcher. ``query_timeout`` caps connect/read timeouts of sentinel
    queries and ``ROLE`` probes; ``discover_timeout`` bounds :meth:`discover`'s retries while
    the sentinels report an unconfirmable primary (a failover under way).
    """

    def __init__(  # noqa: PLR0917 - the signature the client was promised
        self,
        sentinels: Sequence[tuple[str, int]],
        service_name: str,
        data_settings: ConnectionSettings,
        sentinel_settings: ConnectionSettings,
        pool_factory: Callable[[ConnectionSettings], ConnectionPool],
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
        self._watch_wanted = False
        self._watcher: SentinelWatcher | None = None
        self._primary: Address | None = None
        self._primary_pool: ConnectionPool | None = None
        self._retirer = PoolRetirer()
        self._replicas = ReplicaSet(
            lambda address: pool_factory(data_settings.with_address(*address)),
            self._retirer.retire,
        )
        self._failover = FailoverState(service_name)
        self._discoveries = 0
        self._switches = 0
        self._init_locks(writable=True)
        track_forks(self)

    def _init_locks(self, *, writable: bool) -> None:
        self._lock = StateLock()
        self._discover_lock = Lock()
        self._replica_lock = Lock()
        self._writable = Event()  # set while no failover of the primary is reported
        if writable:
            self._writable.set()
        self._switched = Event()  # set (and replaced) on every switch

    def __repr__(self) -> str:
        return f"<SentinelState {self.service_name} primary={self.primary_address}>"

    # -- views ------------------------------------------------------------------------------
    @property
    def closed(self) -> bool:
        """True once the state is closed."""
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
    def current_pool(self) -> ConnectionPool | None:
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
        """True while this process's watcher runs."""
        watcher = self._watcher
        return watcher is not None and watcher.running

    @property
    def watcher(self) -> SentinelWatcher | None:
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
    def primary_pool(self) -> ConnectionPool:
        """The pool of the current primary (discovered on first use)."""
        if self._watch_wanted and self._watcher is None:
            self.start_watcher()  # first use in a forked child: this process's own watcher
        pool = self._primary_pool
        if pool is None:
            self._check_open()
            self._discover()
            pool = self._primary_pool
            if pool is None:  # closed while discovering
                raise self._closed_error()
        return pool

    def discover(self) -> str:
        """Find the primary through the sentinels, confirm it with ``ROLE``; return host:port.

        Sentinels are asked in turn: one that does not answer, or that reports the primary
        down, is skipped; a reported primary that is not a ``master`` by its own ``ROLE`` is
        refused. The other sentinels are learned from each answer. While sentinels answer but
        no primary can be confirmed (a failover under way), it retries for up to
        ``discover_timeout`` (the rules are
        :func:`~smartcache.core.sentinel_flow.discovery_flow`'s). Concurrent calls collapse
        into one. Raises :class:`~smartcache.exceptions.NoReachableNodeError` listing every
        address tried.
        """
        self._check_open()
        return format_address(self._discover())

    def on_error(self, exc: BaseException | None = None) -> bool:
        """Re-discover the primary at once after ``exc`` on it; True if the primary changed.

        For ``READONLY`` (the primary was demoted), a lost connection or a timeout. Joins a
        discovery already running instead of starting another. Never raises.
        """
        if self._closed:
            return False
        before = self._primary
        try:
            self._discover()
        except (rx.RedisError, OSError) as error:
            self.report("error", error)
            return False
        return self._primary != before

    def wait_until_writable(self, timeout: float) -> bool:
        """Wait while a failover of our primary is under way; False if still so at ``timeout``.

        Returns at once (True) when no failover is reported. Otherwise waits, without
        polling, for ``+switch-master`` (the new primary is then confirmed and installed) or
        an abort. Also True once the state is closed.
        """
        return wait_event(self._writable, timeout)

    def _check_open(self) -> None:
        if self._closed:
            raise self._closed_error()

    def _closed_error(self) -> SmartConnectionError:
        return SmartConnectionError(f"the Sentinel state of {self.service_name!r} is closed")

    def _discover(self) -> Address:
        seen = self._discoveries
        with self._discover_lock:
            if self._discoveries != seen and self._primary is not None:
                return self._primary  # someone discovered while we waited
            address = self._run_discovery(self.discover_timeout)
            self._discoveries += 1
            return address

    def _run_discovery(self, timeout: float) -> Address:
        """Drive :func:`~smartcache.core.sentinel_flow.discovery_flow` for up to ``timeout``."""
        switches = self._switches
        flow = discovery_flow(
            self.sentinels, self.service_name, clock=time.monotonic, timeout=timeout
        )
        answer: Any = None
        try:
            while True:
                effect = flow.send(answer)
                answer = None
                match effect:
                    case AskSentinel(address=sentinel, commands=commands):
                        try:
                            answer = ask_sentinel(
                                self.sentinel_settings_for(sentinel), self.service_name, commands
                            )
                        except (rx.RedisError, OSError) as exc:
                            answer = exc
                    case ConfirmRole(address=address):
                        answer = self._refusal(address)
                    case LearnSentinels(addresses=addresses):
                        self._learn_sentinels(addresses)
                    case Pause(seconds=seconds):
                        answer = self._pause(seconds, switches)
        except StopIteration as done:
            found: Discovery = done.value
        finally:
            flow.close()
        if found.sentinel is not None:
            self._promote_sentinel(found.sentinel)
            self._install_primary(found.primary)
        return found.primary

    def _pause(self, seconds: float, switches: int) -> Address | None:
        """Wait (woken at once by a switch); the primary installed meanwhile, if any."""
        switched = self._switched  # taken first: a switch from now on sets it
        if self._switches == switches and seconds > 0 and not self._closed:
            wait_event(switched, seconds)
        if self._closed:
            raise self._closed_error()
        return self._primary if self._switches != switches else None

    def _refusal(self, address: Address) -> str | None:
        return role_refusal(self._data_probe.with_address(*address))

    def _install_primary(self, address: Address) -> None:
        """Make ``address`` the primary: new pool swapped in, old one retired, holds lifted.

        Under the state lock, which no ever splits: every user sees the old primary
        or the new one, never a mix.
        """
        old = None
        with self._lock:
            if self._closed:
                return  # a discovery that finished after close: install nothing
            switched = address != self._primary or self._primary_pool is None
            if switched:
                old = self._primary_pool
                self._primary_pool = self._pool_factory(self._data_settings.with_address(*address))
                self._primary = address
                self._switches += 1
                self._replicas.dirty = True
                event, self._switched = self._switched, Event()
                event.set()
            state = self._failover.with_primary(address)
            changed = state is not self._failover
            self._set_failover(state)
            watcher = self._watcher
        if old is not None:
            self._retirer.retire(old)  # closed once its in-flight commands are answered
        if switched:
            if watcher is not None:
                watcher.wake()  # it refreshes the replicas after its next wake-up
            self.report("switch", format_address(address))
        if changed:
            self.report("failover", state)

    def _set_failover(self, state: FailoverState) -> None:
        """Publish ``state`` (under the state lock) and wake writers waiting on it."""
        self._failover = state
        if state.writable:
            self._writable.set()
        else:
            self._writable.clear()

    # -- sentinels ---------------------------------------------------------------------------
    def sentinel_settings_for(
        self, sentinel: Address, *, subscriber: bool = False
    ) -> ConnectionSettings:
        """Settings for a connection to ``sentinel``, with short timeouts (a subscriber's
        read timeout at least one second)."""
        read = max(self.query_timeout, 1.0) if subscriber else self.query_timeout
        return short_timeouts(
            self._sentinel_settings.with_address(*sentinel), self.query_timeout, read
        )

    def _learn_sentinels(self, addresses: Iterable[Address]) -> None:
        with self._lock:
            new = [a for a in dict.fromkeys(addresses) if a not in self._sentinels]
            if new:
                self._sentinels = [*self._sentinels, *new]
            known = tuple(self._sentinels)
            watcher = self._watcher
        if new:
            if watcher is not None:
                watcher.wake()
            self.report("sentinels", known)

    def _promote_sentinel(self, sentinel: Address) -> None:
        with self._lock:
            if self._sentinels and self._sentinels[0] != sentinel:
                self._sentinels = [sentinel, *(a for a in self._sentinels if a != sentinel)]

    # -- replicas ---------------------------------------------------------------------------
    def replica_pools(self) -> list[ConnectionPool]:
        """Pools of the replicas fit for reads (loaded on first use; may be empty)."""
        if self._watch_wanted and self._watcher is None:
            self.start_watcher()
        if not self._replicas.loaded:
            self._check_open()
            self.refresh_replicas()
        elif self._replicas.dirty and not self.watcher_running:
            self.after_events()  # the primary moved and no watcher refreshes for us
        return self._replicas.pools

    def refresh_replicas(self) -> list[str]:
        """Ask a sentinel for the replicas and keep the usable ones; return their addresses.

        Usable: not ``s_down``/``o_down``/``disconnected``, ``master-link-status`` ok,
        reporting the replica role, and not the current primary (the rules are
        :func:`~smartcache.core.sentinel_flow.replicas_flow`'s). Pools of replicas that left
        the list are retired.
        """
        with self._replica_lock:
            flow = replicas_flow(self.sentinels, self.service_name, self._primary)
            answer: Any = None
            try:
                while True:
                    step: ListReplicas = flow.send(answer)
                    settings = self.sentinel_settings_for(step.address)
                    try:
                        answer = ask_replicas(settings, step.command)
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
    def handle_event(self, event: SentinelEvent) -> None:
        """Feed one sentinel event to the failover state; follow a switch at once."""
        with self._lock:
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
            self._follow_switch(reaction.follow)
        elif reaction.replicas_stale:
            self._replicas.dirty = True

    def _follow_switch(self, address: Address) -> None:
        if self._refusal(address) is None:
            self._install_primary(address)
            return
        self.discover_once()  # the announced primary does not confirm: ask the sentinels

    def discover_once(self) -> None:
        """One discovery round for the watcher: skipped if a discovery already runs (it
        will find the truth; the watcher must not wait behind its retries). Never raises
        a Redis or network error (reports it)."""
        if self._closed:
            return
        with unless_busy(self._discover_lock) as held:
            if not held:
                return
            try:
                self._run_discovery(0.0)
                self._discoveries += 1
            except (rx.RedisError, OSError) as exc:
                self.report("error", exc)

    def forget_source(self, source: str) -> None:
        """A sentinel's subscription was lost: whatever failover it reported may never end."""
        with self._lock:
            before = self._failover
            after = before.forget(source)
            if after is not before:
                self._set_failover(after)
        if after is not before:
            self.report("failover", after)

    def after_events(self) -> None:
        """After a batch of events: refresh the replicas if an event concerned them."""
        if self._replicas.dirty and not self._closed:
            self._replicas.dirty = False
            try:
                self.refresh_replicas()
            except (rx.RedisError, OSError) as exc:
                self.report("error", exc)

    def periodic_check(self) -> None:
        """Re-confirm the primary and refresh the replicas (one round, never waiting long)."""
        if self._closed:
            return
        self.discover_once()
        self._replicas.dirty = True
        self.after_events()

    # -- watcher, fork, close ---------------------------------------------------------------------
    def start_watcher(self) -> None:
        """Start following the sentinels' events (idempotent): :mod:`._sentinel_watch`.

        Stopped when the state is closed or garbage-collected. In a forked
        child (sync) the parent's watcher does not run; the child's first use of
        :meth:`primary_pool` or :meth:`replica_pools` starts its own.
        """
        self._check_open()
        with self._lock:
            self._watch_wanted = True
            current = self._watcher
            if current is not None and current.running:
                return
            watcher = self._watcher = SentinelWatcher(self)
        watcher.start()

    def _after_fork(self) -> None:
        """In a forked child, right after fork (sync: see ``track_forks``): fresh locks, and
        the parent's watcher forgotten (it lets go of its sockets by itself)."""
        self._init_locks(writable=self._writable.is_set())
        self._replicas.reset_lock()
        self._watcher = None

    def close(self) -> None:
        """Stop the watcher, close every pool, release waiting writers. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._watch_wanted = False
            watcher, self._watcher = self._watcher, None
            pool, self._primary_pool = self._primary_pool, None
        self._writable.set()  # waiting writers wake, and find the state closed
        self._switched.set()
        if watcher is not None:
            watcher.stop()
        if pool is not None:
            pool.close()
        self._replicas.close()
        self._retirer.close()

    def __enter__(self) -> SentinelState:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
