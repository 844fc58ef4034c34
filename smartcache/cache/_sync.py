# Generated from smartcache/cache/_async.py by scripts/unasync.py: do not edit.
"""The cache-aside engine: read, single-flight, lease lock, load, write.

Flow of ``get_or_load``: GET -> fresh hit returns; stale/XFetch hit returns at once and hands
the refresh to a background job; a miss goes through in-process single-flight, then the
cross-process lease loop (acquire -> re-check -> load -> write -> release, or wait on the
holder's signal and re-check), bounded by ``wait_timeout``. Redis failures fall back to the
loader (``on_cache_error="load"``); loader exceptions propagate and are never cached.

The sync engine (``_sync.py``, the same methods without the ``a`` prefix) is generated from
the async one (``_async.py``) by ``scripts/unasync.py``; what threads and tasks do
differently (background refreshes, shared GETs, awaiting the loader) is in
``_primitives.py`` / ``_primitives_async.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from smartcache.cache._base import REDIS_ERRORS, CacheBase, CachePolicy, LoaderError, tag_key
from smartcache.cache._codec import Entry
from smartcache.cache._flight import SingleFlight
from smartcache.cache._lock import LeaseLock
from smartcache.cache._primitives import BackgroundJobs, SharedGets, timed

__all__ = ["SyncEngine"]


class SyncEngine(CacheBase):
    """Cache-aside operations of :class:`~smartcache.cache.Cache` (the async engine's methods
    are prefixed ``a``, and their ``loader()`` may return an awaitable)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._flight = SingleFlight()
        self._lease: LeaseLock | None = None
        self._reads = SharedGets()
        self._refreshes = BackgroundJobs("smartcache-refresh")

    def _lock(self, policy: CachePolicy) -> LeaseLock:
        lease = self._lease
        if lease is None or lease.lease_ms != policy.lease_ms:
            lease = self._lease = LeaseLock(self.client, policy.lease_ms)
        return lease

    def get_or_load(
        self,
        key: str,
        loader: Callable[[], Any],
        *,
        policy: CachePolicy | None = None,
        tags: Sequence[str] = (),
        **options: Any,
    ) -> Any:
        """The cached value of ``key``, calling ``loader()`` (once, cluster-wide) on a miss."""
        policy = (policy or self.policy).with_options(**options)
        try:
            try:
                raw = self._reads.get(self.client, key)
            except REDIS_ERRORS as exc:
                return self._degraded(loader, policy, exc)
            entry = self._decode(raw, policy)
            if entry is not None:
                if self._needs_refresh(entry, policy):
                    self.stats.incr("stale_serves" if policy.stale_ttl else "hits")
                    self._refreshes.start(key, self._refresh_job, key, loader, policy, tags, entry)
                else:
                    self.stats.incr("hits")
                return entry.value
            self.stats.incr("misses")
            value, _ = self._flight.do(
                key, lambda: self._fill(key, loader, policy, tags), policy.wait_timeout
            )
            return value
        except LoaderError as err:
            raise err.original from None

    def _degraded(self, loader: Callable[[], Any], policy: CachePolicy, exc: Exception) -> Any:
        self.stats.incr("errors")
        if policy.on_cache_error == "raise":
            raise exc
        self.stats.incr("loads")
        value, _ = timed(loader)
        return value

    def _fill(
        self, key: str, loader: Callable[[], Any], policy: CachePolicy, tags: Sequence[str]
    ) -> Any:
        try:
            return self._fill_locked(key, loader, policy, tags)
        except REDIS_ERRORS as exc:
            return self._degraded(loader, policy, exc)

    def _fill_locked(
        self, key: str, loader: Callable[[], Any], policy: CachePolicy, tags: Sequence[str]
    ) -> Any:
        lock = self._lock(policy)
        deadline = time.monotonic() + policy.wait_timeout
        while True:
            token = lock.acquire(key)
            if token is not None:
                try:
                    entry = self._decode(self.client.get(key), policy)
                    if entry is not None and self._is_fresh(entry, policy):
                        return entry.value  # filled between our miss and our lock
                    with lock.watchdog(key, token) as lost:
                        value, load_us = timed(loader)
                        self.stats.incr("loads")
                        if not lost.is_set():
                            self._store(key, value, load_us, policy, tags)
                    return value
                finally:
                    lock.release(key, token)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.stats.incr("lock_waits")
            lock.wait(key, min(remaining, policy.lease_ms / 1000))
            entry = self._decode(self.client.get(key), policy)
            if entry is not None and self._is_fresh(entry, policy):
                return entry.value
        # The holder neither finished nor gave up in time: load without the lock.
        value, load_us = timed(loader)
        self.stats.incr("loads")
        self._store(key, value, load_us, policy, tags)
        return value

    def _store(
        self, key: str, value: Any, load_us: int, policy: CachePolicy, tags: Sequence[str]
    ) -> None:
        if not self._should_store(value, policy):
            return
        data, px = self._write_plan(key, value, load_us, policy)
        if tags:
            pipe = self.client.pipeline(transaction=False)
            self._queue_write(pipe, key, data, px, tags=tags, policy=policy)
            pipe.execute()
        else:
            self.client.set(key, data, px=px)

    def _refresh_job(
        self,
        key: str,
        loader: Callable[[], Any],
        policy: CachePolicy,
        tags: Sequence[str],
        seen: Entry,
    ) -> None:
        try:
            lock = self._lock(policy)
            token = lock.acquire(key)
            if token is None:
                return  # another process is refreshing it
            try:
                current = self._decode(self.client.get(key), policy)
                if current is not None and current.expiry_ms != seen.expiry_ms:
                    return  # somebody refreshed it meanwhile
                with lock.watchdog(key, token) as lost:
                    value, load_us = timed(loader)
                    self.stats.incr("loads")
                    self.stats.incr("refreshes")
                    if not lost.is_set():
                        self._store(key, value, load_us, policy, tags)
            finally:
                lock.release(key, token)
        except Exception:
            self.stats.incr("errors")  # the stale value stays until its physical expiry

    def refresh(
        self,
        key: str,
        loader: Callable[[], Any],
        *,
        policy: CachePolicy | None = None,
        tags: Sequence[str] = (),
    ) -> Any:
        """Load now and overwrite the entry, whatever it holds; return the new value."""
        policy = policy or self.policy
        try:
            value, load_us = timed(loader)
        except LoaderError as err:
            raise err.original from None
        self.stats.incr("loads")
        self._store(key, value, load_us, policy, tags)
        return value

    def peek(self, key: str, *, policy: CachePolicy | None = None) -> Entry | None:
        """The decoded entry under ``key`` (stale or not), without loading or counting."""
        return self._decode(self.client.get(key), policy or self.policy)

    def invalidate(self, *keys: str) -> int:
        """Delete entries; the number deleted."""
        return int(self.client.delete(*keys)) if keys else 0

    def invalidate_tag(self, tag: str, *, namespace: str | None = None) -> int:
        """Delete every entry written with ``tag``; the number deleted."""
        tkey = tag_key(self.policy.namespace if namespace is None else namespace, tag)
        members = list(self.client.smembers(tkey))
        deleted = int(self.client.delete(*members)) if members else 0
        self.client.delete(tkey)
        return deleted

    def wait_refreshes(self, timeout: float | None = None) -> None:
        """Wait (up to ``timeout`` seconds) for the background refreshes started so far."""
        self._refreshes.wait(timeout)

    def close(self) -> None:
        """Wait for the background refreshes (the sync engine then ends its refresh threads);
        the client itself is the caller's to close."""
        self._refreshes.close()
