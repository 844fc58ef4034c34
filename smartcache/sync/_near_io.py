"""The sync client's side of the near cache: a daemon thread for the keep-alive.

The sync client drains a tracking channel itself before each hit (see
:mod:`smartcache._near`); the thread drains what piled up for entries nobody reads, PINGs
quiet channels and waits for their PONG (so the lag figure is the network's), and
declares silent ones lost. It does not wake for every invalidation: on a small machine a
thread woken per write competes with the server for a core, which is what delays
invalidations (measured: docs/near-cache.md).
"""

from __future__ import annotations

import select
import threading
import time
import weakref
from typing import TYPE_CHECKING

from smartcache.sync._connection import Connection

if TYPE_CHECKING:
    from smartcache._near import NearRuntime
    from smartcache.sync._pool import ConnectionPool
    from smartcache.wire.tracking import TrackingChannel

__all__ = ["ThreadWorld", "borrow_reader", "connect_channel", "give_back_reader"]


class ThreadWorld:
    """Calls ``runtime.tick()`` every ``health_check_interval / 2`` from a daemon thread
    (which holds the runtime weakly and ends with it or with :meth:`stop`)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self, runtime: NearRuntime) -> None:
        """Start the thread if it is not running."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive() and not self._stop.is_set():
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=_run,
                args=(weakref.ref(runtime), runtime.config.health_check_interval / 2, self._stop),
                name="smartcache-near-cache",
                daemon=True,
            )
            self._thread.start()

    def watch(self, channel: TrackingChannel, runtime: NearRuntime) -> None:
        """Nothing: the client drains before each hit, the thread at each tick."""

    def unwatch(self, channel: TrackingChannel) -> None:
        """Nothing to undo."""

    def stop(self) -> None:
        """Stop the thread (idempotent)."""
        self._stop.set()


def _run(ref: weakref.ref[NearRuntime], period: float, stop: threading.Event) -> None:
    while not stop.is_set():
        runtime = ref()
        if runtime is None:
            return
        runtime.tick()
        _wait_on_channels(runtime, period, stop)
        del runtime


def _wait_on_channels(runtime: NearRuntime, period: float, stop: threading.Event) -> None:
    """Until ``period`` has passed (or ``stop``): serve the channels that owe a PONG as
    data arrives on them, then sleep."""
    deadline = time.monotonic() + period
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        watched = runtime.awaiting_pong()
        if not watched:
            stop.wait(left)
            return
        poller = select.poll()
        for fd in watched:
            poller.register(fd, select.POLLIN)
        try:
            events = poller.poll(max(1, int(left * 1000)))
        except OSError:  # a descriptor closed meanwhile: look again
            continue
        for channel in {id(watched[fd]): watched[fd] for fd, _ in events}.values():
            runtime.serve(channel)
        if any(flags & select.POLLNVAL for _, flags in events):
            stop.wait(0.001)  # closed under us: the next look has the new set


def connect_channel(runtime: NearRuntime, channel: TrackingChannel) -> TrackingChannel:
    """Connect ``channel`` and hand it to ``runtime`` (which may keep another one)."""
    channel.connect(runtime.connect_commands)
    return runtime.opened(channel)


def borrow_reader(channel: TrackingChannel, pool: ConnectionPool) -> Connection:
    """The channel's reader, for this thread alone until :func:`give_back_reader`
    (opened on first use: a connection of its own, not a pooled one, so that its end is
    seen at once: its socket is polled with the channel's)."""
    channel.reader_lock.acquire()
    try:
        conn = channel.reader
        if conn is None:
            conn = Connection(pool.settings)
            conn.connect()
            channel.watch_reader(conn)
    except BaseException:
        channel.reader_lock.release()
        raise
    return conn  # type: ignore[no-any-return]


def give_back_reader(channel: TrackingChannel) -> None:
    """Let the next thread read on the channel's reader."""
    channel.reader_lock.release()
