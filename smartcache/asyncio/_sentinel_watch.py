"""The asyncio Sentinel watcher: one task per subscribed sentinel under one supervisor task.

Each sentinel gets a dedicated :class:`~smartcache.asyncio._connection.AsyncConnection`
subscribed to :data:`~smartcache.core.sentinel.WATCHED_CHANNELS`; its messages arrive
through the connection's ``push_handler`` and are fed, in order, to the state
(:meth:`AsyncSentinelState.handle_event`, which runs the core's failover rules and follows
``+switch-master`` after ``ROLE`` confirms it). A subscription that breaks, or leaves a
PING unanswered for ``check_interval``, is dropped (what that sentinel reported is
forgotten) and re-made with a bounded backoff; the supervisor subscribes to sentinels as
they are learned and re-checks the primary every ``check_interval``.

Why every sentinel: a forced failover is announced with ``+try-failover`` only by the
sentinel that runs it, and the others publish ``+switch-master`` first (see
:mod:`smartcache.sync._sentinel_watch`).

The tasks hold only a weak reference to their state between steps: :meth:`stop` (called
by ``AsyncSentinelState.aclose()``) cancels and awaits them, and they are cancelled too if
the state is garbage-collected. They never outlive it.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import weakref
from typing import Any, Final, Protocol

import redis.exceptions as rx

from smartcache.asyncio._connection import AsyncConnection
from smartcache.asyncio._protocol import RespProtocol
from smartcache.core.sentinel import WATCHED_CHANNELS, Address, SentinelEvent, format_address
from smartcache.core.sentinel_watch import Watched, WatchPlan, read_message
from smartcache.wire import ConnectionSettings

__all__ = ["AsyncSentinelWatcher"]


class WatchedState(Watched, Protocol):
    """What a watcher needs of the Sentinel state it feeds
    (``asyncio._sentinel.AsyncSentinelState``), besides :class:`Watched`."""

    def sentinel_settings_for(self, sentinel: Address) -> ConnectionSettings: ...
    async def handle_event(self, event: SentinelEvent) -> None: ...
    async def after_events(self) -> None: ...
    async def periodic_check(self) -> None: ...


#: Put in a subscriber's queue when its connection breaks.
_LOST: Final = object()


class _Subscriber(AsyncConnection):
    """A connection whose pushes (and its loss) land in a queue, never reconnected."""

    __slots__ = ("broken", "queue")

    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__(settings)
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.broken = False
        self.push_handler = self.queue.put_nowait

    def _on_broken(self, proto: RespProtocol) -> None:
        super()._on_broken(proto)
        self.broken = True
        self.queue.put_nowait(_LOST)

    async def send_if_open(self, *args: Any) -> bool:
        """Send ``args`` unless the connection broke (``send`` would silently reconnect)."""
        if self.broken or not self.is_connected:
            return False
        await self.send(*args)
        return True


def _cancel_soon(loop: asyncio.AbstractEventLoop, task: asyncio.Task[None]) -> None:
    """Finalizer of a collected state: cancel its watcher from whatever thread the GC ran."""
    if not loop.is_closed():
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(task.cancel)


class AsyncSentinelWatcher:
    """Owns the subscription tasks of one :class:`WatchedState`."""

    def __init__(self, state: WatchedState) -> None:
        self._ref = weakref.ref(state)
        self.service_name = state.service_name
        self._wake = asyncio.Event()
        self._subs: dict[Address, asyncio.Task[None]] = {}
        self._subscribed: set[Address] = set()
        self._plan = WatchPlan(
            state.check_interval, time.monotonic(), primary_known=bool(state.primary_address)
        )
        self._task: asyncio.Task[None] | None = None
        self._finalizer: weakref.finalize[Any, Any] | None = None

    @property
    def running(self) -> bool:
        """True while the supervisor task runs."""
        task = self._task
        return task is not None and not task.done()

    @property
    def subscribed(self) -> list[str]:
        """``host:port`` of every sentinel whose events are heard now."""
        return [format_address(a) for a in self._subscribed]

    @property
    def tasks(self) -> list[asyncio.Task[None]]:
        """The supervisor task and every subscription task (for tests and diagnostics)."""
        found = [self._task] if self._task is not None else []
        return [*found, *self._subs.values()]

    def start(self) -> None:
        """Start the supervisor task in the running loop."""
        loop = asyncio.get_running_loop()
        task = self._task = loop.create_task(
            self._run(), name=f"smartcache-sentinel-{self.service_name}"
        )
        state = self._ref()
        if state is not None:
            self._finalizer = weakref.finalize(state, _cancel_soon, loop, task)

    def wake(self) -> None:
        """Make the supervisor look again now (a new sentinel, a switch)."""
        self._wake.set()

    async def stop(self) -> None:
        """Cancel every task of this watcher and wait until they have ended."""
        if self._finalizer is not None:
            self._finalizer.detach()
        tasks = [t for t in self.tasks if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks)

    # -- the supervisor -----------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            while True:
                state = self._ref()
                if state is None or state.closed:
                    return
                self._wake.clear()
                try:
                    timeout = await self._maintain(state)
                except Exception as exc:  # a bug must not end the watch
                    state.report("error", exc)
                    timeout = 0.1
                del state
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        await self._wake.wait()
        finally:
            subs = [t for t in self._subs.values() if not t.done()]
            for task in subs:
                task.cancel()
            if subs:
                await asyncio.wait(subs)

    async def _maintain(self, state: WatchedState) -> float:
        """(Re)subscribe where due, run the periodic check; return seconds until next duty."""
        loop = asyncio.get_running_loop()
        plan = self._plan
        now = time.monotonic()
        for address in plan.to_subscribe(state.sentinels, self._subs, now):
            self._subs[address] = loop.create_task(
                self._listen(address), name=f"smartcache-sentinel-{format_address(address)}"
            )
        if plan.check_due(now):
            await state.periodic_check()
            plan.checked(time.monotonic())
        return plan.wait(self._subs, time.monotonic())

    # -- one subscription -----------------------------------------------------------------------
    async def _listen(self, address: Address) -> None:
        """Subscribe to one sentinel and feed its events to the state until it breaks."""
        state = self._ref()
        if state is None:
            return
        settings = state.sentinel_settings_for(address)
        interval = state.check_interval
        del state
        sub = _Subscriber(settings)
        source = format_address(address)
        connected = False
        try:
            await sub.connect()
            await sub.send("SUBSCRIBE", *WATCHED_CHANNELS)
            connected = True
            if self._plan.subscribed(address):
                self._wake.set()  # events were missed while away: the check is due now
            await self._pump(sub, address, source, interval)
        except (rx.RedisError, OSError):
            pass
        finally:
            sub.close()
            self._subscribed.discard(address)
            if self._subs.get(address) is asyncio.current_task():
                del self._subs[address]
            self._plan.failed(address, time.monotonic(), was_subscribed=connected)
            state = self._ref()
            if state is not None:
                state.forget_source(source)
            self._wake.set()

    async def _pump(self, sub: _Subscriber, address: Address, source: str, interval: float) -> None:
        """Handle the messages of ``sub`` in order; return when it broke or went silent."""
        ping_sent = False
        while True:
            try:
                async with asyncio.timeout(interval):
                    message = await sub.queue.get()
            except TimeoutError:
                if ping_sent or not await sub.send_if_open("PING"):
                    return  # the last PING went unanswered: a hung sentinel
                ping_sent = True
                continue
            if message is _LOST:
                return
            ping_sent = False
            state = self._ref()
            if state is None:
                return
            try:
                await self._handle(state, message, address, source)
                if sub.queue.empty():
                    await state.after_events()
            except Exception as exc:  # e.g. ROLE refused our credentials; never end the watch
                state.report("error", exc)
            del state

    async def _handle(
        self, state: WatchedState, message: Any, address: Address, source: str
    ) -> None:
        news = read_message(message, source)
        if isinstance(news, SentinelEvent):
            await state.handle_event(news)
        elif news == "subscribed":
            self._subscribed.add(address)
            state.report("subscribed", source)
