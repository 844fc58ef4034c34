"""One cache scenario for both worlds: SmartClient with plain functions (``sync``), or
AsyncSmartClient with coroutine functions (``async``).

A scenario is written once with plain calls. In the async world :class:`World` hands out an
AsyncSmartClient behind a :class:`~tests.integration._dual.SyncProxy` (each call awaited on
a private event loop in a thread), turns a plain loader into an ``async def`` (the loader
itself runs in a worker thread, ``asyncio.to_thread``, so a slow or gated loader never
blocks the loop), decorates it with ``@cached`` over the real async client, and returns the
:class:`AsyncCachedFunction` behind a proxy too: ``get_user(1)``, ``get_user.peek(1)``
are plain calls in both worlds. :meth:`World.concurrently` starts N callers at once:
threads released by a barrier (sync), or tasks gathered on the loop (async).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import threading
from collections.abc import Callable, Sequence
from typing import Any

from smartcache.cache import (
    AsyncCachedFunction,
    AsyncFlusher,
    AsyncWriteBehind,
    Cache,
    CachedFunction,
    Flusher,
    WriteBehind,
    ainvalidate_tag,
    cached,
    invalidate_tag,
)
from smartcache.cache import _primitives as sync_primitives
from smartcache.cache import _primitives_async as async_primitives
from tests.integration._dual import (
    AsyncRunner,
    SyncProxy,
    close_client,
    make_client,
    make_reference,
)

__all__ = ["World"]


class _Proxy(SyncProxy):
    """A SyncProxy that binds like the function it wraps (``@cached`` on a method)."""

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return _Proxy(self._target.__get__(obj, objtype), self._runner)


class World:
    """The ``sync`` or ``async`` world of one test; :meth:`close` releases what it made."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.is_async = kind == "async"
        # N concurrent callers: the thread count of the sync tests, the task count of the
        # async ones (tasks are cheap; both original numbers are kept)
        self.callers = 200 if self.is_async else 50
        self._box: list[AsyncRunner] = []
        self._closers: list[Callable[[], Any]] = []

    # -- plumbing -------------------------------------------------------------------------

    @property
    def runner(self) -> AsyncRunner:
        if not self._box:
            self._box.append(AsyncRunner())
        return self._box[0]

    @staticmethod
    def raw(obj: Any) -> Any:
        """The object behind a proxy (what ``@cached(client=...)`` and friends take)."""
        return obj._target if isinstance(obj, SyncProxy) else obj

    def wrap(self, obj: Any) -> Any:
        """``obj`` for plain calls: itself (sync), or behind a proxy (async)."""
        return _Proxy(obj, self.runner) if self.is_async else obj

    def run(self, value: Any) -> Any:
        """``value``, or the result of awaiting it on the world's loop."""
        return self.runner.run(value) if inspect.isawaitable(value) else value

    def either(self, sync_fn: Callable[..., Any], async_fn: Callable[..., Any]) -> Any:
        """The world's spelling of one operation, as a plain callable
        (``world.either(guard.warm, guard.awarm)(items)``)."""
        if not self.is_async:
            return sync_fn
        return lambda *args, **kwargs: self.runner.run(async_fn(*args, **kwargs))

    def close(self) -> None:
        for closer in reversed(self._closers):
            with contextlib.suppress(Exception):  # a test may have closed it already
                closer()
        for runner in self._box:
            runner.stop()

    # -- clients --------------------------------------------------------------------------

    def client(self, **kwargs: Any) -> Any:
        """A SmartClient, or an AsyncSmartClient behind a proxy; closed at teardown."""
        client = make_client(self.kind, self._box, **kwargs)
        self._closers.append(lambda: close_client(client))
        return client

    def redis_py(self, **kwargs: Any) -> Any:
        """``redis.Redis`` / ``redis.asyncio.Redis`` (behind a proxy); closed at teardown."""
        client = make_reference(self.kind, self._box, **kwargs)
        self._closers.append(lambda: close_client(client))
        return client

    # -- caching --------------------------------------------------------------------------

    def loader(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` as the world's loader: itself, or an ``async def`` awaiting it in a worker
        thread (same signature, so key templates bind the same argument names)."""
        if not self.is_async:
            return fn

        @functools.wraps(fn)
        async def load(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(fn, *args, **kwargs)

        return load

    def cached(self, **kwargs: Any) -> Callable[[Callable[..., Any]], Any]:
        """``@cached(...)`` in this world: a CachedFunction, or an AsyncCachedFunction of
        the loader made async, behind a proxy (``client=`` may be a proxy)."""
        if kwargs.get("client") is not None:
            kwargs["client"] = self.raw(kwargs["client"])
        decorate = cached(**kwargs)

        def apply(fn: Callable[..., Any]) -> Any:
            made = decorate(self.loader(fn))
            assert isinstance(made, AsyncCachedFunction if self.is_async else CachedFunction)
            return self.wrap(made)

        return apply

    def cache(self, client: Any) -> Any:
        """A :class:`Cache` whose plain-named operations are the world's
        (``get_or_load`` is ``aget_or_load`` in the async world, the loader made async)."""
        return _WorldCache(self, Cache(self.raw(client)))

    def invalidate_tag(self, tag: str, *, client: Any, namespace: str) -> int:
        fn = self.either(invalidate_tag, ainvalidate_tag)
        return int(fn(tag, client=self.raw(client), namespace=namespace))

    def wait_refreshes(self, fn: Any) -> None:
        """Wait for the background refreshes ``fn`` (a world-cached function) started."""
        if self.is_async:
            self.runner.run(self.raw(fn).await_refreshes())
        else:
            fn.cache.wait_refreshes(30)

    def concurrently(self, calls: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Every ``(fn, *args)`` called once, all at once; the results in order. Sync:
        one thread per call, released together by a barrier. Async: one task per call,
        gathered on the world's loop."""
        if self.is_async:

            async def gather() -> list[Any]:
                return list(await asyncio.gather(*(self.raw(fn)(*args) for fn, *args in calls)))

            return list(self.runner.run(gather()))
        barrier = threading.Barrier(len(calls))
        results: list[Any] = [None] * len(calls)
        errors: list[BaseException] = []

        def worker(i: int, fn: Any, args: Sequence[Any]) -> None:
            barrier.wait()
            try:
                results[i] = fn(*args)
            except BaseException as exc:  # re-raised in the test's thread
                errors.append(exc)

        threads = [
            threading.Thread(target=worker, args=(i, fn, args))
            for i, (fn, *args) in enumerate(calls)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return results

    # -- write-behind ---------------------------------------------------------------------

    def _build(self, factory: Callable[[], Any]) -> Any:
        """``factory()`` run in the world (on the loop for the async world)."""
        if not self.is_async:
            return factory()

        async def build() -> Any:
            return factory()

        return self.runner.run(build())

    def write_behind(self, client: Any, store: Any = None, **kwargs: Any) -> Any:
        """WriteBehind, or AsyncWriteBehind behind a proxy; closed at teardown."""
        cls = AsyncWriteBehind if self.is_async else WriteBehind
        wb = self.wrap(self._build(lambda: cls(self.raw(client), store, **kwargs)))
        self._closers.append(lambda: self.close_write_behind(wb, timeout=5))
        return wb

    def close_write_behind(self, wb: Any, **kwargs: Any) -> None:
        """``close()`` / ``aclose()``."""
        if self.is_async:
            wb.aclose(**kwargs)
        else:
            wb.close(**kwargs)

    def flusher(self, client: Any, store: Any, *args: Any, **kwargs: Any) -> Any:
        """A Flusher, or an AsyncFlusher (``start()`` on the loop, ``stop()`` awaited)."""
        cls = AsyncFlusher if self.is_async else Flusher
        return self.wrap(self._build(lambda: cls(self.raw(client), store, *args, **kwargs)))

    def start(self, flusher: Any) -> None:
        """``flusher.start()``: a thread, or a task of the world's loop."""
        self._build(self.raw(flusher).start)

    def alive(self, worker: Any) -> bool:
        """Whether a flusher's worker (thread or task) has not finished."""
        return (async_primitives if self.is_async else sync_primitives).alive(worker)


class _WorldCache:
    """A :class:`Cache` with the world's operations under the sync names."""

    def __init__(self, world: World, cache: Cache) -> None:
        self._world = world
        self._cache = cache

    def get_or_load(self, key: str, loader: Callable[[], Any], **kwargs: Any) -> Any:
        w = self._world
        if not w.is_async:
            return self._cache.get_or_load(key, loader, **kwargs)
        return w.runner.run(self._cache.aget_or_load(key, w.loader(loader), **kwargs))

    def invalidate(self, *keys: str) -> int:
        return int(self._world.either(self._cache.invalidate, self._cache.ainvalidate)(*keys))
