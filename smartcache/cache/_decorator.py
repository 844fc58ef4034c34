"""``@cached``: cache-aside for sync and async functions, with the policies composed.

All inspection (signature, key template, sync vs async) happens at decoration time; a call
binds its arguments once, builds the key, and hands over to the :class:`Cache` engine.
The client is resolved at the first call (explicit ``client=``, else :func:`configure`), so
modules can be decorated before the application configures its client.
"""

from __future__ import annotations

import functools
import inspect
import threading
import types
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, cast, overload

from smartcache.cache._base import CachePolicy, CacheStats
from smartcache.cache._cache import Cache
from smartcache.cache._codec import Entry, Serializer, get_serializer
from smartcache.cache._keys import KeyBuilder
from smartcache.cache._protocol import AsyncRedisLike, RedisLike
from smartcache.exceptions import ConfigurationError

__all__ = ["AsyncCachedFunction", "CachedFunction", "cached", "configure", "get_default_client"]

P = ParamSpec("P")
T = TypeVar("T")

_default: dict[str, RedisLike | AsyncRedisLike] = {}


def configure(*, client: RedisLike | AsyncRedisLike | None) -> None:
    """Set the client ``@cached`` functions without an explicit ``client=`` use (None unsets)."""
    if client is None:
        _default.pop("client", None)
    else:
        _default["client"] = client


def get_default_client() -> RedisLike | AsyncRedisLike:
    """The client given to :func:`configure` (LookupError if none)."""
    try:
        return _default["client"]
    except KeyError:
        raise LookupError(
            "no client for @cached: pass client= or call smartcache.cache.configure(client=...)"
        ) from None


class _CachedBase(Generic[P, T]):
    def __init__(
        self,
        func: Callable[P, Any],
        *,
        policy: CachePolicy,
        keys: KeyBuilder,
        client: RedisLike | AsyncRedisLike | None,
        tags: tuple[str, ...],
        bloom: Any,
    ) -> None:
        functools.update_wrapper(cast(Any, self), func)
        self.__wrapped__ = func
        self._func = func
        self.policy = policy
        self._keys = keys
        self._client = client
        self._tags = tags
        self._bloom = bloom
        self._stats = CacheStats()
        self._cache: Cache | None = None
        self._init_lock = threading.Lock()

    @property
    def cache(self) -> Cache:
        """The engine (created at first use, with the resolved client)."""
        cache = self._cache
        if cache is None:
            with self._init_lock:
                if self._cache is None:
                    client = self._client if self._client is not None else get_default_client()
                    if self.policy.near and getattr(client, "near_cache", None) is None:
                        raise ConfigurationError(
                            f"@cached(near=True) on {self._func.__qualname__} needs a client "
                            "with a near cache: SmartClient(..., near_cache=NearCache()) "
                            "or AsyncSmartClient(..., near_cache=NearCache())"
                        )
                    name = f"{self._func.__module__}.{self._func.__qualname__}"
                    self._cache = Cache(client, self.policy, stats=self._stats, name=name)
                cache = self._cache
        return cache

    def _key_and_tags(self, args: Any, kwargs: Any) -> tuple[str, tuple[str, ...]]:
        arguments = self._keys.bound(args, kwargs)
        key = self._keys.render(arguments)
        if not self._tags:
            return key, ()
        return key, tuple(t.format_map(arguments) for t in self._tags)

    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The cache key of the call ``f(*args, **kwargs)``."""
        return self._keys(args, kwargs)

    def stats(self) -> dict[str, int]:
        """hits, misses, loads, errors, stale_serves, lock_waits, refreshes, bloom_rejects."""
        return self._stats.snapshot()

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return types.MethodType(cast(Any, self), obj)


class CachedFunction(_CachedBase[P, T]):
    """A cached synchronous function; call it like the original."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        key, tags = self._key_and_tags(args, kwargs)
        if self._bloom is not None and not self._bloom.contains(key):
            self._stats.incr("bloom_rejects")
            return None  # type: ignore[return-value]
        result: T = self.cache.get_or_load(
            key, lambda: self._func(*args, **kwargs), policy=self.policy, tags=tags
        )
        return result

    def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """Delete the entry of this call."""
        return self.cache.invalidate(self._keys(args, kwargs))

    def refresh(self, *args: P.args, **kwargs: P.kwargs) -> T:
        """Reload this call now and store the result."""
        key, tags = self._key_and_tags(args, kwargs)
        result: T = self.cache.refresh(
            key, lambda: self._func(*args, **kwargs), policy=self.policy, tags=tags
        )
        return result

    def peek(self, *args: P.args, **kwargs: P.kwargs) -> Entry | None:
        """The stored entry of this call (value, expiry, load time), or None."""
        return self.cache.peek(self._keys(args, kwargs), policy=self.policy)


class AsyncCachedFunction(_CachedBase[P, T]):
    """A cached coroutine function; ``await f(...)`` as before. Helpers are coroutines too."""

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        key, tags = self._key_and_tags(args, kwargs)
        if self._bloom is not None and not await self._bloom.acontains(key):
            self._stats.incr("bloom_rejects")
            return None  # type: ignore[return-value]
        result: T = await self.cache.aget_or_load(
            key, lambda: self._func(*args, **kwargs), policy=self.policy, tags=tags
        )
        return result

    async def invalidate(self, *args: P.args, **kwargs: P.kwargs) -> int:
        """Delete the entry of this call."""
        return await self.cache.ainvalidate(self._keys(args, kwargs))

    async def refresh(self, *args: P.args, **kwargs: P.kwargs) -> T:
        """Reload this call now and store the result."""
        key, tags = self._key_and_tags(args, kwargs)
        result: T = await self.cache.arefresh(
            key, lambda: self._func(*args, **kwargs), policy=self.policy, tags=tags
        )
        return result

    async def peek(self, *args: P.args, **kwargs: P.kwargs) -> Entry | None:
        """The stored entry of this call, or None."""
        return await self.cache.apeek(self._keys(args, kwargs), policy=self.policy)

    async def await_refreshes(self) -> None:
        """Wait for the background refreshes this function started."""
        if self._cache is not None:
            await self._cache.await_refreshes()


class _Decorator:
    def __init__(
        self,
        *,
        client: RedisLike | AsyncRedisLike | None,
        policy: CachePolicy,
        key: str | None,
        version: Any,
        tags: tuple[str, ...],
        bloom: Any,
        ignore: Iterable[str],
    ) -> None:
        self._client = client
        self._policy = policy
        self._key = key
        self._version = version
        self._tags = tags
        self._bloom = bloom
        self._ignore = tuple(ignore)

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, func: Callable[P, Coroutine[Any, Any, T]]
    ) -> AsyncCachedFunction[P, T]: ...

    @overload
    def __call__(self, func: Callable[P, T]) -> CachedFunction[P, T]: ...

    def __call__(self, func: Callable[P, Any]) -> Any:
        keys = KeyBuilder(
            func,
            namespace=self._policy.namespace,
            version=self._version,
            template=self._key,
            ignore=self._ignore,
        )
        for tag in self._tags:
            KeyBuilder(func, template=tag)  # validates the tag's argument names
        cls = AsyncCachedFunction if inspect.iscoroutinefunction(func) else CachedFunction
        return cls(
            func,
            policy=self._policy,
            keys=keys,
            client=self._client,
            tags=self._tags,
            bloom=self._bloom,
        )


def cached(
    *,
    client: RedisLike | AsyncRedisLike | None = None,
    ttl: float = 300.0,
    jitter: float = 0.0,
    key: str | None = None,
    namespace: str = "sc",
    version: int | str | None = None,
    serializer: str | Serializer = "json",
    compress_over: int | None = 10_240,
    condition: Callable[[Any], bool] | None = None,
    cache_none: bool = False,
    null_ttl: float = 60.0,
    on_cache_error: str = "load",
    stale_ttl: float = 0.0,
    early_refresh: bool = False,
    beta: float = 1.0,
    lease_ms: int = 10_000,
    wait_timeout: float = 15.0,
    tags: Iterable[str] = (),
    bloom: Any = None,
    ignore: Iterable[str] = ("self", "cls"),
    near: bool = False,
) -> _Decorator:
    """Cache a function's results in Redis; works on sync and ``async def`` functions.

    ``key="user:{user_id}"`` names the key (default: module.qualname + blake2b of the bound
    arguments); ``version`` bumps every key at once. ``stale_ttl`` serves stale values while
    one caller refreshes; ``early_refresh`` enables XFetch (``beta`` > 1 refreshes earlier).
    ``cache_none`` stores ``None`` for ``null_ttl`` (penetration); ``bloom`` answers "absent"
    for keys never added to the guard. ``tags`` are templates for :func:`invalidate_tag`.
    ``near=True`` (the client must have a near cache: ``SmartClient(near_cache=...)``)
    serves hits from the process: the stored entry comes from the client's near cache,
    which the server's invalidations keep coherent, and its decoded value is kept beside it,
    so a hit decodes nothing; the value returned is then shared by the callers that hit
    the same entry (as with ``functools.lru_cache``): do not change it.
    """
    policy = CachePolicy(
        ttl=ttl,
        jitter=jitter,
        stale_ttl=stale_ttl,
        early_refresh=early_refresh,
        beta=beta,
        serializer=get_serializer(serializer),
        compress_over=compress_over,
        cache_none=cache_none,
        null_ttl=null_ttl,
        condition=condition,
        on_cache_error=on_cache_error,  # type: ignore[arg-type]  # validated by CachePolicy
        lease_ms=lease_ms,
        wait_timeout=wait_timeout,
        namespace=namespace,
        near=near,
    )
    return _Decorator(
        client=client,
        policy=policy,
        key=key,
        version=version,
        tags=tuple(tags),
        bloom=bloom,
        ignore=ignore,
    )
