from __future__ import annotations

import pytest

import smartcache.cache
from smartcache.cache import CachePolicy, CacheStats


def test_cache_all_is_pinned_and_sorted() -> None:
    assert smartcache.cache.__all__ == [
        "AsyncCachedFunction",
        "AsyncFlusher",
        "AsyncRedisLike",
        "AsyncSQLAlchemyStore",
        "AsyncStore",
        "AsyncWriteBehind",
        "AsyncWriteThroughFunction",
        "BloomGuard",
        "Cache",
        "CachePolicy",
        "CacheStats",
        "CachedFunction",
        "Entry",
        "FlushOptions",
        "Flusher",
        "QueueLayout",
        "RedisLike",
        "SQLAlchemyStore",
        "SQLiteStore",
        "Store",
        "StoreItem",
        "WriteBehind",
        "WriteThrough",
        "WriteThroughFunction",
        "ainvalidate_tag",
        "cached",
        "configure",
        "invalidate_tag",
        "write_through",
    ]
    for name in smartcache.cache.__all__:
        assert hasattr(smartcache.cache, name)


def test_policy_validation_and_options() -> None:
    with pytest.raises(ValueError):
        CachePolicy(on_cache_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        CachePolicy(ttl=0)
    with pytest.raises(ValueError):
        CachePolicy(beta=0)
    policy = CachePolicy()
    assert policy.with_options() is policy
    changed = policy.with_options(ttl=5, serializer="pickle")
    assert changed.ttl == 5 and changed.serializer.name == "pickle"


def test_stats_snapshot() -> None:
    stats = CacheStats()
    stats.incr("hits")
    stats.incr("lock_waits", 2)
    snap = stats.snapshot()
    assert snap["hits"] == 1 and snap["lock_waits"] == 2 and snap["misses"] == 0


def test_cached_requires_a_client() -> None:
    smartcache.cache.configure(client=None)

    @smartcache.cache.cached()
    def f(x: int) -> int:
        return x

    assert f.key_for(1).startswith("sc:")
    with pytest.raises(LookupError, match="configure"):
        f(1)


def test_bad_templates_fail_at_decoration() -> None:
    with pytest.raises(ValueError, match="unknown arguments"):

        @smartcache.cache.cached(client=object(), tags=["user:{nope}"])
        def g(x: int) -> int:
            return x
