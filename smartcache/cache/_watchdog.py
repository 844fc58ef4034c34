"""One lease-extending thread per :class:`~smartcache.cache._lock.LeaseLock`, not one per load.

Loads register their lease; the thread sleeps on a condition until the earliest lease is due
for extension (a third of the lease), extends it with ``extend(key, token)``, and flags the
lease as lost when the extension fails, so its holder abandons the write.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable

__all__ = ["Lease", "Watchdog"]

_IDLE_EXIT = 5.0  # seconds without leases before the thread exits


class Lease:
    """A registered lease; ``lost`` is set when an extension failed."""

    __slots__ = ("active", "key", "lost", "token")

    def __init__(self, key: str, token: bytes) -> None:
        self.key = key
        self.token = token
        self.lost = threading.Event()
        self.active = True


class Watchdog:
    """Extends every registered lease each ``interval`` seconds until it is unregistered."""

    def __init__(self, extend: Callable[[str, bytes], bool], interval: float) -> None:
        self._extend = extend
        self._interval = interval
        self._cv = threading.Condition()
        self._heap: list[tuple[float, int, Lease]] = []
        self._order = itertools.count()
        self._thread: threading.Thread | None = None

    def register(self, key: str, token: bytes) -> Lease:
        """Start extending ``key``'s lease."""
        lease = Lease(key, token)
        with self._cv:
            due = time.monotonic() + self._interval
            heapq.heappush(self._heap, (due, next(self._order), lease))
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="smartcache-lease-watchdog", daemon=True
                )
                self._thread.start()
            self._cv.notify()
        return lease

    def unregister(self, lease: Lease) -> None:
        """Stop extending (the entry leaves the heap when it next comes due)."""
        lease.active = False

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._heap or self._heap[0][0] > time.monotonic():
                    if self._heap and not self._heap[0][2].active:
                        heapq.heappop(self._heap)
                        continue
                    if not self._heap:
                        # idle: wait a while for work, then let the thread end
                        if not self._cv.wait(_IDLE_EXIT) and not self._heap:
                            self._thread = None
                            return
                        continue
                    self._cv.wait(self._heap[0][0] - time.monotonic())
                _, _, lease = heapq.heappop(self._heap)
            if not lease.active:
                continue
            try:
                ok = self._extend(lease.key, lease.token)
            except Exception:
                ok = False
            if not ok:
                lease.lost.set()
                continue
            with self._cv:
                due = time.monotonic() + self._interval
                heapq.heappush(self._heap, (due, next(self._order), lease))
