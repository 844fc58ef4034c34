"""In-process single-flight: one loader per key per process, everyone else shares its result.

Threads wait on a :class:`threading.Event`; asyncio tasks await one shared future per key (per
event loop, since futures belong to a loop). Waiting is bounded by the caller's timeout.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["AsyncSingleFlight", "SingleFlight"]


class _Call:
    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class SingleFlight:
    """Collapses concurrent ``do(key, fn)`` calls from threads into one ``fn()`` per key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, _Call] = {}

    def do(self, key: str, fn: Callable[[], Any], timeout: float | None = None) -> tuple[Any, bool]:
        """Run ``fn`` once for all concurrent callers of ``key``; return (value, was_leader).

        Followers re-raise the leader's exception; a follower whose wait exceeds ``timeout``
        gets :class:`TimeoutError`.
        """
        with self._lock:
            call = self._calls.get(key)
            leader = call is None
            if call is None:
                call = self._calls[key] = _Call()
        if not leader:
            if not call.done.wait(timeout):
                raise TimeoutError(f"waited more than {timeout}s for the load of {key!r}")
            if call.error is not None:
                raise call.error
            return call.value, False
        try:
            call.value = fn()
        except BaseException as exc:
            call.error = exc
            raise
        finally:
            with self._lock:
                del self._calls[key]
            call.done.set()
        return call.value, True


class AsyncSingleFlight:
    """Collapses concurrent ``await do(key, fn)`` calls from tasks into one ``fn()`` per key."""

    def __init__(self) -> None:
        self._calls: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Future[Any]] = {}

    async def do(
        self, key: str, fn: Callable[[], Awaitable[Any]], timeout: float | None = None
    ) -> tuple[Any, bool]:
        """Run ``fn`` once for all concurrent tasks awaiting ``key``; return (value, was_leader)."""
        loop = asyncio.get_running_loop()
        slot = (loop, key)
        future = self._calls.get(slot)
        if future is not None:
            # shield: a cancelled follower must not cancel the leader's shared result.
            return await asyncio.wait_for(asyncio.shield(future), timeout), False
        future = self._calls[slot] = loop.create_future()
        try:
            value = await fn()
        except BaseException as exc:
            if not future.done():
                if isinstance(exc, Exception):
                    future.set_exception(exc)
                else:  # the leader was cancelled: its followers were not
                    future.set_exception(RuntimeError(f"the load of {key!r} was cancelled"))
                future.exception()  # mark retrieved: followers may not exist
            raise
        else:
            future.set_result(value)
            return value, True
        finally:
            del self._calls[slot]
