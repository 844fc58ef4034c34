"""The asyncio cache-aside engine: the twin of ``_sync.py`` over an async client.

Background refreshes (stale serving, XFetch) run in tasks this engine keeps references to
(``await cache.aclose()`` or ``await cache.await_refreshes()`` waits for them).
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable, Sequence
from typing import Any

from smartcache.cache._base import REDIS_ERRORS, CacheBase, CachePolicy, LoaderError, tag_key
from smartcache.cache._codec import Entry
from smartcache.cache._flight import AsyncSingleFlight
from smartcache.cache._lock import AsyncLeaseLock

__all__ = ["AsyncEngine"]


async def atimed(loader: Callable[[], Any]) -> tuple[Any, int]:
    """Call (and await) ``loader``; its value and duration in microseconds."""
    start = time.perf_counter()
    try:
        value = loader()
        if inspect.isawaitable(value):
            value = await value
    except Exception as exc:
        raise LoaderError(exc) from exc
    return value, int((time.perf_counter() - start) * 1_000_000)


class AsyncEngine(CacheBase):
    """Async operations of :class:`~smartcache.cache.Cache` (methods prefixed ``a``)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._aflight = AsyncSingleFlight()
        self._alease: AsyncLeaseLock | None = None
        self._arefreshing: set[str] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._gets: dict[str, asyncio.Future[Any]] = {}

    def _alock(self, policy: CachePolicy) -> AsyncLeaseLock:
        lease = self._alease
        if lease is None or lease.lease_ms != policy.lease_ms:
            lease = self._alease = AsyncLeaseLock(self.client, policy.lease_ms)
        return lease

    async def aget_or_load(
        self,
        key: str,
        loader: Callable[[], Any],
        *,
        policy: CachePolicy | None = None,
        tags: Sequence[str] = (),
        **options: Any,
    ) -> Any:
        """The cached value of ``key``; ``loader()`` may be sync or return an awaitable."""
        policy = (policy or self.policy).with_options(**options)
        try:
            try:
                raw = await self._aget_shared(key)
            except REDIS_ERRORS as exc:
                return await self._adegraded(loader, policy, exc)
            entry = self._decode(raw, policy)
            if entry is not None:
                if self._needs_refresh(entry, policy):
                    self.stats.incr("stale_serves" if policy.stale_ttl else "hits")
                    self._arefresh_later(key, loader, policy, tags, entry)
                else:
                    self.stats.incr("hits")
                return entry.value
            self.stats.incr("misses")
            value, _ = await self._aflight.do(
                key, lambda: self._afill(key, loader, policy, tags), policy.wait_timeout
            )
            return value
        except LoaderError as err:
            raise err.original from None

    async def _aget_shared(self, key: str) -> Any:
        """GET ``key``; tasks reading one key at the same time share one GET.

        A burst of readers of a hot key (200 tasks when it expires) sends one GET, not 200.
        Each caller decodes the shared reply itself, so no two callers share a value object.
        If the task that sent the GET is cancelled, the others read for themselves.
        """
        pending = self._gets.get(key)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if not pending.cancelled() or (task is not None and task.cancelling()):
                    raise  # this task was cancelled, not the one that sent the GET
                return await self._aget_shared(key)
        shared: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._gets[key] = shared
        try:
            raw = await self.client.get(key)
        except asyncio.CancelledError:
            shared.cancel()
            raise
        except BaseException as exc:
            shared.set_exception(exc)
            shared.exception()  # the waiters re-raise it; nobody waiting is fine too
            raise
        else:
            shared.set_result(raw)
            return raw
        finally:
            if self._gets.get(key) is shared:
                del self._gets[key]

    async def _adegraded(
        self, loader: Callable[[], Any], policy: CachePolicy, exc: Exception
    ) -> Any:
        self.stats.incr("errors")
        if policy.on_cache_error == "raise":
            raise exc
        self.stats.incr("loads")
        return (await atimed(loader))[0]

    async def _afill(
        self, key: str, loader: Callable[[], Any], policy: CachePolicy, tags: Sequence[str]
    ) -> Any:
        try:
            return await self._afill_locked(key, loader, policy, tags)
        except REDIS_ERRORS as exc:
            return await self._adegraded(loader, policy, exc)

    async def _afill_locked(
        self, key: str, loader: Callable[[], Any], policy: CachePolicy, tags: Sequence[str]
    ) -> Any:
        lock = self._alock(policy)
        deadline = time.monotonic() + policy.wait_timeout
        while True:
            token = await lock.acquire(key)
            if token is not None:
                try:
                    entry = self._decode(await self.client.get(key), policy)
                    if entry is not None and self._is_fresh(entry, policy):
                        return entry.value
                    async with lock.watchdog(key, token) as lost:
                        value, load_us = await atimed(loader)
                        self.stats.incr("loads")
                        if not lost.is_set():
                            await self._astore(key, value, load_us, policy, tags)
                    return value
                finally:
                    await lock.release(key, token)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.stats.incr("lock_waits")
            await lock.wait(key, min(remaining, policy.lease_ms / 1000))
            entry = self._decode(await self.client.get(key), policy)
            if entry is not None and self._is_fresh(entry, policy):
                return entry.value
        value, load_us = await atimed(loader)
        self.stats.incr("loads")
        await self._astore(key, value, load_us, policy, tags)
        return value

    async def _astore(
        self, key: str, value: Any, load_us: int, policy: CachePolicy, tags: Sequence[str]
    ) -> None:
        if not self._should_store(value, policy):
            return
        data, px = self._write_plan(key, value, load_us, policy)
        if tags:
            pipe = self.client.pipeline(transaction=False)
            self._queue_write(pipe, key, data, px, tags=tags, policy=policy)
            await pipe.execute()
        else:
            await self.client.set(key, data, px=px)

    def _arefresh_later(
        self,
        key: str,
        loader: Callable[[], Any],
        policy: CachePolicy,
        tags: Sequence[str],
        seen: Entry,
    ) -> None:
        if key in self._arefreshing:
            return
        self._arefreshing.add(key)
        task = asyncio.create_task(self._arefresh_job(key, loader, policy, tags, seen))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _arefresh_job(
        self,
        key: str,
        loader: Callable[[], Any],
        policy: CachePolicy,
        tags: Sequence[str],
        seen: Entry,
    ) -> None:
        try:
            lock = self._alock(policy)
            token = await lock.acquire(key)
            if token is None:
                return
            try:
                current = self._decode(await self.client.get(key), policy)
                if current is not None and current.expiry_ms != seen.expiry_ms:
                    return
                async with lock.watchdog(key, token) as lost:
                    value, load_us = await atimed(loader)
                    self.stats.incr("loads")
                    self.stats.incr("refreshes")
                    if not lost.is_set():
                        await self._astore(key, value, load_us, policy, tags)
            finally:
                await lock.release(key, token)
        except Exception:
            self.stats.incr("errors")
        finally:
            self._arefreshing.discard(key)

    async def arefresh(
        self,
        key: str,
        loader: Callable[[], Any],
        *,
        policy: CachePolicy | None = None,
        tags: Sequence[str] = (),
    ) -> Any:
        """Load now and overwrite the entry; return the new value."""
        policy = policy or self.policy
        try:
            value, load_us = await atimed(loader)
        except LoaderError as err:
            raise err.original from None
        self.stats.incr("loads")
        await self._astore(key, value, load_us, policy, tags)
        return value

    async def apeek(self, key: str, *, policy: CachePolicy | None = None) -> Entry | None:
        """The decoded entry under ``key``, without loading or counting."""
        return self._decode(await self.client.get(key), policy or self.policy)

    async def ainvalidate(self, *keys: str) -> int:
        """Delete entries; the number deleted."""
        return int(await self.client.delete(*keys)) if keys else 0

    async def ainvalidate_tag(self, tag: str, *, namespace: str | None = None) -> int:
        """Delete every entry written with ``tag``; the number deleted."""
        tkey = tag_key(self.policy.namespace if namespace is None else namespace, tag)
        members = list(await self.client.smembers(tkey))
        deleted = int(await self.client.delete(*members)) if members else 0
        await self.client.delete(tkey)
        return deleted

    async def await_refreshes(self) -> None:
        """Wait for the background refresh tasks started so far."""
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def aclose(self) -> None:
        """Wait for background refreshes (the client itself is the caller's to close)."""
        await self.await_refreshes()
