"""State and pure helpers shared by the sync and async cache engines.

No I/O here: the policy value, the statistics, entry decisions and the write plan. The
engines (``_sync.py``, ``_async.py``) only perform what these helpers decide.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

import redis.exceptions

from smartcache.cache._codec import (
    PINNED_EXPIRY_MS,
    CorruptEntryError,
    Entry,
    Serializer,
    decode_entry,
    encode_entry,
    get_serializer,
)
from smartcache.cache._policy import RandomSource, jittered_ttl_ms, should_refresh_early
from smartcache.cache._protocol import AsyncRedisLike, RedisLike

__all__ = ["CacheBase", "CachePolicy", "CacheStats", "LoaderError", "REDIS_ERRORS", "tag_key"]

#: What "the cache is unreachable or misbehaving" looks like (loader errors never count).
REDIS_ERRORS: Final = (redis.exceptions.RedisError, OSError)

OnError = Literal["load", "raise"]


@dataclass(frozen=True, slots=True)
class CachePolicy:
    """How one cached function (or one ``get_or_load`` call) stores and refreshes entries.

    ``ttl``/``jitter``/``stale_ttl``/``null_ttl`` are seconds. ``stale_ttl`` keeps an entry
    that long past its logical expiry, served while one caller refreshes it.
    """

    ttl: float = 300.0
    jitter: float = 0.0
    stale_ttl: float = 0.0
    early_refresh: bool = False
    beta: float = 1.0
    serializer: Serializer = field(default_factory=get_serializer)
    compress_over: int | None = 10_240
    cache_none: bool = False
    null_ttl: float = 60.0
    condition: Callable[[Any], bool] | None = None
    on_cache_error: OnError = "load"
    lease_ms: int = 10_000
    wait_timeout: float = 15.0
    namespace: str = "sc"
    #: keep decoded entries beside the client's near cache (``@cached(near=True)``)
    near: bool = False

    def __post_init__(self) -> None:
        if self.on_cache_error not in ("load", "raise"):
            raise ValueError("on_cache_error must be 'load' or 'raise'")
        if self.ttl <= 0 or self.null_ttl <= 0:
            raise ValueError("ttl and null_ttl must be positive")
        if self.stale_ttl < 0 or self.jitter < 0 or self.beta <= 0:
            raise ValueError("stale_ttl and jitter must be >= 0, beta > 0")

    def with_options(self, **options: Any) -> CachePolicy:
        """A copy with ``options`` changed (``serializer`` may be a name)."""
        if isinstance(options.get("serializer"), str):
            options["serializer"] = get_serializer(options["serializer"])
        return replace(self, **options) if options else self


class CacheStats:
    """Counters for one cache user; ``snapshot()`` returns a plain dict."""

    FIELDS: Final = (
        "hits",
        "misses",
        "loads",
        "errors",
        "stale_serves",
        "lock_waits",
        "refreshes",
        "bloom_rejects",
    )

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.FIELDS, 0)

    def incr(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name``."""
        with self._lock:
            self._counts[name] += n

    def snapshot(self) -> dict[str, int]:
        """The current counts."""
        with self._lock:
            return dict(self._counts)


class LoaderError(Exception):
    """Carries an exception raised by the user's loader through the cache machinery."""

    def __init__(self, original: BaseException) -> None:
        super().__init__(repr(original))
        self.original = original


def tag_key(namespace: str, tag: str) -> str:
    """The SET holding the keys of entries tagged ``tag``."""
    return f"{namespace}:tag:{tag}" if namespace else f"tag:{tag}"


#: how many decoded entries ``near=True`` keeps beside the near cache (then starts over)
_DECODED_MAX: Final = 10_000


class CacheBase:
    """Configuration, statistics and pure entry decisions for both engines."""

    def __init__(
        self,
        client: RedisLike | AsyncRedisLike,
        policy: CachePolicy | None = None,
        *,
        clock: Callable[[], float] = time.time,
        rng: RandomSource | None = None,
        stats: CacheStats | None = None,
        name: str | None = None,
    ) -> None:
        self.client = client
        self.policy = policy or CachePolicy()
        self.clock = clock
        self.rng: RandomSource = rng or random.Random()
        self.stats = stats or CacheStats()
        register = getattr(client, "_register_cache", None)  # a smartcache client: metrics
        if register is not None:
            register(name or self.policy.namespace, self.stats)
        #: decoded entries by their stored bytes (``near=True``), at most _DECODED_MAX
        self._decoded: dict[Any, Entry] = {}

    def now_ms(self) -> int:
        """Wall-clock milliseconds (entries carry absolute expiries shared across processes)."""
        return int(self.clock() * 1000)

    def _decode(self, raw: Any, policy: CachePolicy) -> Entry | None:
        if policy.near and raw is not None:
            # The near cache hands back the very bytes it keeps (their hash is computed
            # once), so a hit finds its decoded entry here; equal bytes decode equally.
            memo = self._decoded
            entry = memo.get(raw)
            if entry is not None:
                return entry
            try:
                decoded = decode_entry(raw, policy.serializer)
            except CorruptEntryError:
                return None
            if decoded is not None:
                if len(memo) >= _DECODED_MAX:
                    memo.clear()
                memo[raw] = decoded
            return decoded
        try:
            return decode_entry(raw, policy.serializer)
        except CorruptEntryError:
            return None  # foreign or damaged: a miss, overwritten by the next write

    def _needs_refresh(self, entry: Entry, policy: CachePolicy) -> bool:
        """Stale (logical expiry passed) or, with XFetch, chosen for early refresh."""
        now = self.now_ms()
        if policy.stale_ttl and entry.is_stale(now):
            return True
        if policy.early_refresh:
            delta_ms = max(entry.load_us / 1000, 1.0)
            return should_refresh_early(now, entry.expiry_ms, delta_ms, policy.beta, self.rng)
        return False

    def _is_fresh(self, entry: Entry | None, policy: CachePolicy) -> bool:
        return entry is not None and not (policy.stale_ttl and entry.is_stale(self.now_ms()))

    def _should_store(self, value: Any, policy: CachePolicy) -> bool:
        if value is None and not policy.cache_none:
            return False
        return policy.condition is None or bool(policy.condition(value))

    def _write_plan(
        self, key: str, value: Any, load_us: int, policy: CachePolicy
    ) -> tuple[bytes, int]:
        """The bytes to store and the physical TTL in milliseconds."""
        base = policy.null_ttl if value is None else policy.ttl
        ttl_ms = jittered_ttl_ms(base, policy.jitter, self.rng)
        data = encode_entry(
            value,
            serializer=policy.serializer,
            expiry_ms=self.now_ms() + ttl_ms,
            load_us=load_us,
            compress_over=policy.compress_over,
        )
        return data, ttl_ms + round(policy.stale_ttl * 1000)

    def _pinned_plan(self, value: Any, policy: CachePolicy) -> tuple[bytes, int]:
        """For a write-behind entry: the bytes, whose logical expiry never comes (the entry
        is fresh until it is gone), and the TTL (ms) it gets once its change is committed."""
        base = policy.null_ttl if value is None else policy.ttl
        ttl_ms = jittered_ttl_ms(base, policy.jitter, self.rng)
        data = encode_entry(
            value,
            serializer=policy.serializer,
            expiry_ms=PINNED_EXPIRY_MS,
            load_us=0,
            compress_over=policy.compress_over,
        )
        return data, ttl_ms

    def _queue_write(
        self, pipe: Any, key: str, data: bytes, px: int, *, tags: Sequence[str], policy: CachePolicy
    ) -> None:
        pipe.set(key, data, px=px)
        for tag in tags:
            tkey = tag_key(policy.namespace, tag)
            pipe.sadd(tkey, key)
            pipe.pexpire(tkey, px, nx=True)
            pipe.pexpire(tkey, px, gt=True)
