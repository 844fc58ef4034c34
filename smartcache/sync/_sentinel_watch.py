"""The Sentinel watcher: one daemon thread subscribed to every known sentinel.

It feeds each event to its :class:`~smartcache.sync._sentinel.SentinelState` (which runs
the failover state machine and follows ``+switch-master``), resubscribes to a sentinel that
went away with a bounded backoff, PINGs its subscriptions and asks the state to re-check the
primary every ``check_interval``.

Why every sentinel and not one: a forced failover (``SENTINEL FAILOVER``) is announced with
``+try-failover`` only by the sentinel that runs it, and the others publish
``+switch-master`` before the leader does; listening to all of them is what lets writes be
held for the whole failover and released at the earliest switch.

The thread holds only a weak reference to its state between steps, so it never outlives it:
it ends when the state is closed or garbage-collected. It never runs in a forked child; the
state starts a new watcher there when it is next used.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
import weakref
from typing import Protocol

import redis.exceptions as rx

from smartcache.core.sentinel import WATCHED_CHANNELS, Address, SentinelEvent, format_address
from smartcache.core.sentinel_watch import Watched, WatchPlan, read_message
from smartcache.exceptions import SmartConnectionError
from smartcache.sync._connection import Connection
from smartcache.wire import ConnectionSettings

__all__ = ["SentinelWatcher"]


class WatchedState(Watched, Protocol):
    """What the watcher needs of the Sentinel state it feeds (``sync._sentinel.SentinelState``),
    besides :class:`Watched`."""

    def sentinel_settings_for(
        self, sentinel: Address, *, subscriber: bool = False
    ) -> ConnectionSettings: ...
    def handle_event(self, event: SentinelEvent) -> None: ...
    def after_events(self) -> None: ...
    def periodic_check(self) -> None: ...


_READY = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP


class _Subscriber(Connection):
    """A subscribed connection to one sentinel; pollable, remembers an unanswered PING."""

    __slots__ = ("ping_sent", "sentinel", "source")

    def __init__(self, settings: ConnectionSettings, sentinel: Address) -> None:
        super().__init__(settings)
        self.sentinel = sentinel
        self.source = format_address(sentinel)
        self.ping_sent: float | None = None

    def fileno(self) -> int:
        """The socket's file descriptor, for ``poll``."""
        sock = self._sock
        if sock is None:
            raise SmartConnectionError(f"not connected to {self.address}", node=self.address)
        return sock.fileno()


_LIVE: weakref.WeakSet[SentinelWatcher] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for watcher in list(_LIVE):
        watcher.abandon()


os.register_at_fork(after_in_child=_after_fork_in_child)


class SentinelWatcher:
    """Owns the subscriptions and the thread of one :class:`WatchedState`.

    In a forked child it lets go of the parent's sockets by itself (:meth:`abandon`) and
    is not :attr:`running`.
    """

    def __init__(self, state: WatchedState) -> None:
        self._ref = weakref.ref(state)
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._subs: dict[Address, _Subscriber] = {}
        # Connects run in short-lived threads (a paused or unreachable sentinel must not
        # stall the events of the others); results arrive here: a subscriber or a failure.
        self._connecting: set[Address] = set()
        self._arrived: list[_Subscriber | Address] = []
        self._arrived_lock = threading.Lock()
        self._plan = WatchPlan(
            state.check_interval, time.monotonic(), primary_known=bool(state.primary_address)
        )
        self.pid = os.getpid()
        self._thread = threading.Thread(
            target=self._run, name=f"smartcache-sentinel-{state.service_name}", daemon=True
        )
        weakref.finalize(state, self.stop, False)
        _LIVE.add(self)

    @property
    def running(self) -> bool:
        """True while the thread runs (in this process)."""
        return self.pid == os.getpid() and self._thread.is_alive()

    @property
    def subscribed(self) -> list[str]:
        """``host:port`` of every sentinel subscribed to now."""
        return [format_address(a) for a in list(self._subs)]

    def start(self) -> None:
        """Start the thread."""
        self._thread.start()

    def stop(self, join: bool = True, timeout: float = 5.0) -> None:
        """Ask the thread to end (and wait for it unless ``join`` is false)."""
        self._stop.set()
        self.wake()
        if join and self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def wake(self) -> None:
        """Interrupt the thread's wait (for a stop, or a new sentinel to subscribe to)."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def abandon(self) -> None:
        """In a forked child: drop the parent's sockets without touching its conversations."""
        # Locks may have been held by the parent's threads at fork time: never reuse them.
        self._arrived_lock = threading.Lock()
        self._stop = threading.Event()
        self._stop.set()
        for item in [*self._subs.values(), *self._take_arrived()]:
            if isinstance(item, _Subscriber):
                item.forget()
        self._subs.clear()
        for sock in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                sock.close()

    # -- the thread -----------------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                state = self._ref()
                if state is None or state.closed:
                    return
                try:
                    timeout = self._maintain(state)
                except Exception as exc:  # a bug must not end the watch
                    state.report("error", exc)
                    timeout = 0.1
                del state
                ready = self._wait(timeout)
                if self._stop.is_set():
                    return
                state = self._ref()
                if state is None:
                    return
                try:
                    for sub in ready:
                        self._drain(state, sub)
                    state.after_events()
                except Exception as exc:
                    state.report("error", exc)
                del state
        finally:
            self._stop.set()  # connects that finish from now on close their own socket
            for item in [*self._subs.values(), *self._take_arrived()]:
                if isinstance(item, _Subscriber):
                    item.close()
            self._subs.clear()
            for sock in (self._wake_r, self._wake_w):
                sock.close()

    def _maintain(self, state: WatchedState) -> float:
        """(Re)subscribe where due, run the periodic check; return seconds until next duty."""
        plan = self._plan
        now = time.monotonic()
        for item in self._take_arrived():
            if isinstance(item, _Subscriber):
                self._connecting.discard(item.sentinel)
                self._subs[item.sentinel] = item
                plan.subscribed(item.sentinel)  # after a failure, the check is due at once
            else:
                self._connecting.discard(item)
                plan.failed(item, now, was_subscribed=False)
        busy = self._subs.keys() | self._connecting
        for address in plan.to_subscribe(state.sentinels, busy, now):
            self._connecting.add(address)
            settings = state.sentinel_settings_for(address, subscriber=True)
            threading.Thread(
                target=self._connect,
                args=(settings, address),
                name="smartcache-sentinel-connect",
                daemon=True,
            ).start()
        if plan.check_due(now):
            self._ping(state, now)
            state.periodic_check()
            plan.checked(time.monotonic())
        return plan.wait(self._connecting, time.monotonic())

    def _connect(self, settings: ConnectionSettings, address: Address) -> None:
        """In a connect thread: subscribe to one sentinel, hand the result to the watcher."""
        sub = _Subscriber(settings, address)
        result: _Subscriber | Address = sub
        try:
            sub.connect()
            sub.send_command("SUBSCRIBE", *WATCHED_CHANNELS)
        except (rx.RedisError, OSError):
            sub.close()
            result = address
        with self._arrived_lock:
            stopped = self._stop.is_set()
            if not stopped:
                self._arrived.append(result)
        if stopped:
            sub.close()
        else:
            self.wake()

    def _take_arrived(self) -> list[_Subscriber | Address]:
        with self._arrived_lock:
            arrived, self._arrived = self._arrived, []
        return arrived

    def _ping(self, state: WatchedState, now: float) -> None:
        """Drop subscriptions that left the last PING unanswered; PING the others."""
        for sub in list(self._subs.values()):
            if sub.ping_sent is not None:
                self._drop(state, sub)
                continue
            try:
                sub.send_command("PING")
            except (rx.RedisError, OSError):
                self._drop(state, sub)
                continue
            sub.ping_sent = now

    def _wait(self, timeout: float) -> list[_Subscriber]:
        poller = select.poll()
        poller.register(self._wake_r, select.POLLIN)
        by_fd: dict[int, _Subscriber] = {}
        for sub in self._subs.values():
            try:
                fd = sub.fileno()
            except SmartConnectionError:
                continue
            by_fd[fd] = sub
            poller.register(fd, _READY)
        ready = []
        for fd, _ in poller.poll(timeout * 1000):
            if fd in by_fd:
                ready.append(by_fd[fd])
            else:
                with contextlib.suppress(OSError):
                    while self._wake_r.recv(4096):
                        pass
        return ready

    def _drain(self, state: WatchedState, sub: _Subscriber) -> None:
        """Handle every message ready on ``sub``; drop it if its connection failed."""
        try:
            while True:
                message = sub.read_next()
                sub.ping_sent = None
                news = read_message(message, sub.source)
                if isinstance(news, SentinelEvent):
                    state.handle_event(news)
                elif news == "subscribed":
                    state.report("subscribed", sub.source)
                if not sub.can_read(0.0):
                    return
        except (rx.RedisError, OSError):
            self._drop(state, sub)

    def _drop(self, state: WatchedState, sub: _Subscriber) -> None:
        sub.close()
        self._subs.pop(sub.sentinel, None)
        self._plan.failed(sub.sentinel, time.monotonic(), was_subscribed=True)
        state.forget_source(sub.source)
