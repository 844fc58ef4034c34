"""``@write_through``: an update function (sync or ``async def``) made write-through.

The decorated function is the database step: it runs first, and on success the cache entry
under the rendered key is invalidated (or set to the return value). The rules (retries,
repair records, healing) are those of :class:`~smartcache.cache.WriteThrough`: the wrapper
drives the same engine (``_WriteThroughCore``), created at first use with the resolved client.
"""

from __future__ import annotations

import functools
import inspect
import threading
import types
from collections.abc import Callable, Coroutine
from dataclasses import fields
from typing import Any, Final, Generic, ParamSpec, TypeVar, cast, overload

from smartcache.cache._base import CachePolicy
from smartcache.cache._decorator import get_default_client
from smartcache.cache._keys import KeyBuilder
from smartcache.cache._protocol import AsyncRedisLike, RedisLike
from smartcache.cache._write_through import _STATS, Mode, _Call, _Flow, _WriteThroughCore

__all__ = [
    "AsyncWriteThroughFunction",
    "WriteThroughFunction",
    "write_through",
]

P = ParamSpec("P")
T = TypeVar("T")

_ENGINE_OPTIONS: Final = frozenset(
    {
        "retry_attempts",
        "retry_base_delay",
        "retry_max_delay",
        "repair_log",
        "on_cache_error",
        "clock",
        "rng",
    }
)
# CachePolicy.on_cache_error (a reader's choice) is not settable here: the name is ours.
_POLICY_OPTIONS: Final = frozenset(f.name for f in fields(CachePolicy)) - _ENGINE_OPTIONS


class _WriteThroughFunctionBase(Generic[P, T]):
    def __init__(
        self,
        func: Callable[P, Any],
        *,
        key_of: Callable[[tuple[Any, ...], dict[str, Any]], str],
        client: RedisLike | AsyncRedisLike | None,
        mode: Mode,
        policy: CachePolicy,
        options: dict[str, Any],
    ) -> None:
        functools.update_wrapper(cast(Any, self), func)
        self.__wrapped__ = func
        self._func = func
        self._key_of = key_of
        self._client = client
        self.mode: Mode = mode
        self.policy = policy
        self._options = options
        self._engine: _WriteThroughCore | None = None
        self._init_lock = threading.Lock()

    @property
    def engine(self) -> _WriteThroughCore:
        """The write-through engine (created at first use, with the resolved client)."""
        engine = self._engine
        if engine is None:
            with self._init_lock:
                if self._engine is None:
                    client = self._client if self._client is not None else get_default_client()
                    self._engine = _WriteThroughCore(
                        client, mode=self.mode, policy=self.policy, **self._options
                    )
                engine = self._engine
        return engine

    def key_for(self, *args: P.args, **kwargs: P.kwargs) -> str:
        """The cache key the call ``f(*args, **kwargs)`` writes through."""
        return self._key_of(args, kwargs)

    def pending_repairs(self) -> list[str]:
        """Keys whose entries may be stale until :meth:`repair`."""
        return self.engine.pending_repairs()

    def stats(self) -> dict[str, int]:
        """writes, deletes, store_errors, cache_errors, repairs_pending, repaired."""
        if self._engine is None and self._options.get("repair_log") is None:
            return dict.fromkeys(_STATS, 0)  # not used yet: no client needed to say so
        return self.engine.stats()

    def _flow(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _Flow[Any]:
        engine = self.engine
        key = self._key_of(args, kwargs)  # before the database: a bad key writes nothing
        yield from engine._heal()
        leases = yield from engine._lease([key])
        result = yield from engine._database(_Call(self._func, args, kwargs), [key], "writes")
        values = {key: result} if self.mode == "set" else None
        yield from engine._cache_step(engine._cache_op(values, [key], leases))
        return result

    def _what(self) -> str:
        kind = "async def" if isinstance(self, AsyncWriteThroughFunction) else "sync function"
        return f"@write_through on the {kind} {getattr(self._func, '__qualname__', '?')}"

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        if obj is None:
            return self
        return types.MethodType(cast(Any, self), obj)


_ASYNC_FIX: Final = "with an async client, decorate an 'async def' update function"
_SYNC_FIX: Final = "with a sync client, decorate a plain 'def' update function"


class WriteThroughFunction(_WriteThroughFunctionBase[P, T]):
    """A sync update function made write-through; call it like the original."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        engine = self.engine
        engine._check(False, self._what(), _ASYNC_FIX)
        return cast(T, engine._run(self._flow(args, kwargs)))

    def repair(self) -> int:
        """DEL every recorded key; how many were repaired."""
        engine = self.engine
        engine._check(False, self._what(), _ASYNC_FIX)
        return engine._run(engine._repair_flow())


class AsyncWriteThroughFunction(_WriteThroughFunctionBase[P, T]):
    """An async update function made write-through; ``await f(...)`` as before."""

    async def __call__(self, *args: P.args, **kwargs: P.kwargs) -> T:
        engine = self.engine
        engine._check(True, self._what(), _SYNC_FIX)
        return cast(T, await engine._arun(self._flow(args, kwargs)))

    async def repair(self) -> int:
        """DEL every recorded key; how many were repaired."""
        engine = self.engine
        engine._check(True, self._what(), _SYNC_FIX)
        return await engine._arun(engine._repair_flow())


class _WriteThroughDecorator:
    def __init__(
        self,
        key: str | Callable[..., str],
        *,
        client: RedisLike | AsyncRedisLike | None,
        mode: Mode,
        policy: CachePolicy,
        version: int | str | None,
        options: dict[str, Any],
    ) -> None:
        self._key = key
        self._client = client
        self._mode = mode
        self._policy = policy
        self._version = version
        self._options = options

    @overload
    def __call__(  # type: ignore[overload-overlap]
        self, func: Callable[P, Coroutine[Any, Any, T]]
    ) -> AsyncWriteThroughFunction[P, T]: ...

    @overload
    def __call__(self, func: Callable[P, T]) -> WriteThroughFunction[P, T]: ...

    def __call__(self, func: Callable[P, Any]) -> Any:
        key_of: Callable[[tuple[Any, ...], dict[str, Any]], str]
        if isinstance(self._key, str):
            key_of = KeyBuilder(
                func,
                namespace=self._policy.namespace,
                version=self._version,
                template=self._key,
                ignore=(),
            )
        else:
            key_fn = self._key

            def key_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
                return key_fn(*args, **kwargs)

        cls = (
            AsyncWriteThroughFunction if inspect.iscoroutinefunction(func) else WriteThroughFunction
        )
        return cls(
            func,
            key_of=key_of,
            client=self._client,
            mode=self._mode,
            policy=self._policy,
            options=self._options,
        )


def write_through(
    key: str | Callable[..., str],
    *,
    client: RedisLike | AsyncRedisLike | None = None,
    mode: Mode = "invalidate",
    policy: CachePolicy | None = None,
    version: int | str | None = None,
    **options: Any,
) -> _WriteThroughDecorator:
    """Make an update function (sync or ``async def``) that writes the database write-through.

    The function runs first; if it raises, the exception propagates and the cache is left
    alone. On success the entry under ``key`` is invalidated (default) or, with
    ``mode="set"``, replaced by the function's return value, encoded as ``@cached`` reads it.
    ``key`` is a template rendered from the call's bound arguments exactly as
    ``@cached(key=...)`` renders it (``"user:{user_id}"`` -> ``"sc:user:42"``; ``version`` and
    the policy's ``namespace`` apply), or a callable taking the function's arguments and
    returning the full Redis key (e.g. ``lambda user_id, **_: get_user.key_for(user_id)``).

    ``options``: the :class:`WriteThrough` options (``retry_attempts``, ``retry_base_delay``,
    ``retry_max_delay``, ``repair_log``, ``on_cache_error``, ``clock``, ``rng``) and
    :class:`CachePolicy` fields (``ttl``, ``jitter``, ``serializer``, ``namespace``...).
    ``client=None`` uses the client given to :func:`~smartcache.cache.configure`.

    The wrapper keeps the function's signature and adds ``key_for()``, ``pending_repairs()``,
    ``repair()`` (a coroutine for an async function) and ``stats()``.

    **Races**: both modes are safe against concurrent writers. ``mode="set"`` holds a lease
    on the key from before the call to the cache step and sets the entry only if no other
    writer of the key overlapped it (otherwise it deletes it), so racing writers never leave
    the older value cached; it costs one more round trip per call.
    """
    engine_options = {k: v for k, v in options.items() if k in _ENGINE_OPTIONS}
    policy_options = {k: v for k, v in options.items() if k in _POLICY_OPTIONS}
    unknown = set(options) - set(engine_options) - set(policy_options)
    if unknown:
        raise TypeError(f"write_through() got unknown options {sorted(unknown)}")
    return _WriteThroughDecorator(
        key,
        client=client,
        mode=mode,
        policy=(policy or CachePolicy()).with_options(**policy_options),
        version=version,
        options=engine_options,
    )
