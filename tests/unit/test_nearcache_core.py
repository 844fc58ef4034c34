"""The near cache's I/O-free rules: settings, store, placeholders, expiry, messages."""

from __future__ import annotations

import pytest

from smartcache.core.nearcache import (
    CACHEABLE,
    FLUSH,
    INVALIDATE,
    OTHER,
    PONG,
    NearCache,
    NearStore,
    cacheable_commands,
    classify_message,
    expiry,
    thaw,
    tracking_commands,
)
from smartcache.exceptions import ConfigurationError

OWNER, CHANNEL, GEN = object(), object(), object()


def put(
    store: NearStore, key: bytes, value: object, *, now: float = 0.0, ttl: float = 60.0
) -> bool:
    token = store.begin(key)
    return store.put(("GET", key), key, token, value, now + ttl, OWNER, -1, CHANNEL, GEN)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_entries": 0}, "max_entries"),
        ({"max_bytes": -1}, "max_bytes"),
        ({"ttl": 0}, "ttl"),
        ({"ttl": True}, "ttl"),
        ({"mode": "bcast"}, "mode must be one of"),
        ({"prefixes": "user:"}, "sequence of prefixes"),
        ({"prefixes": ("",)}, "non-empty"),
        ({"health_check_interval": 0}, "health_check_interval"),
        ({"commands": {"SET"}}, "cannot be cached"),
    ],
)
def test_bad_settings_name_the_fix(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        NearCache(**kwargs)


def test_settings_normalise() -> None:
    config = NearCache(prefixes=["user:", b"s:"], commands={"get", "hgetall"})
    assert config.prefix_bytes == (b"user:", b"s:")
    assert config.commands == frozenset({"GET", "HGETALL"})
    assert config.key_allowed(b"user:1") and not config.key_allowed(b"order:1")
    assert NearCache().key_allowed(b"anything")


def test_cacheable_commands_follow_the_server() -> None:
    table = {"GET": True, "HGETALL": True, "JSON.GET": None, "TYPE": False}
    chosen = cacheable_commands(table.get)
    assert chosen == {"GET", "HGETALL"}
    assert "TTL" not in CACHEABLE and "PTTL" not in CACHEABLE and "SRANDMEMBER" not in CACHEABLE


def test_tracking_commands_per_mode() -> None:
    assert tracking_commands(NearCache(), 7)[-1] == (
        "CLIENT", "TRACKING", "ON", "REDIRECT", 7, "OPTIN"
    )  # fmt: skip
    assert tracking_commands(NearCache(mode="default"), 7)[-1][-1] == 7
    bcast = tracking_commands(NearCache(mode="broadcast", prefixes=("a:",)), 7)[-1]
    assert bcast[-3:] == ("BCAST", "PREFIX", b"a:")
    assert tracking_commands(NearCache(), 7)[0] == ("CLIENT", "TRACKING", "OFF")


def test_classify_message() -> None:
    assert classify_message([b"message", b"__redis__:invalidate", [b"k"]]) == (INVALIDATE, [b"k"])
    assert classify_message([b"message", b"__redis__:invalidate", None]) == (FLUSH, None)
    assert classify_message([b"invalidate", [b"a", b"b"]]) == (INVALIDATE, [b"a", b"b"])
    assert classify_message([b"invalidate", None]) == (FLUSH, None)
    assert classify_message([b"pong", b""])[0] == PONG
    assert classify_message(b"PONG")[0] == PONG
    assert classify_message([b"subscribe", b"__redis__:invalidate", 1])[0] == OTHER


def test_expiry_is_capped_by_pttl_and_ttl() -> None:
    assert expiry(10.0, 60.0, -1) == 70.0
    assert expiry(10.0, 60.0, 2500) == 12.5
    assert expiry(10.0, None, -1) == float("inf")
    assert expiry(10.0, 60.0, -2) == 70.0  # a missing key: its creation invalidates
    assert expiry(10.0, 60.0, 0) is None
    assert expiry(10.0, 60.0, ValueError("x")) is None


def test_invalidation_drops_every_entry_of_the_key() -> None:
    store = NearStore(NearCache())
    put(store, b"k", b"v")
    token = store.begin(b"k")
    store.put(("STRLEN", b"k"), b"k", token, 1, 60.0, OWNER, -1, CHANNEL, GEN)
    put(store, b"other", b"x")
    assert len(store) == 3
    assert store.invalidate([b"k", b"unknown"]) == 2
    assert len(store) == 1 and store.get(("GET", b"k"), 0.0) is None
    assert store.stats.invalidations == 2


def test_invalidation_in_flight_wins_over_the_reply() -> None:
    store = NearStore(NearCache())
    token = store.begin(b"k")  # the read is on the wire
    store.invalidate([b"k"])  # the server says k changed before the reply came
    assert not store.put(("GET", b"k"), b"k", token, b"old", 60.0, OWNER, -1, CHANNEL, GEN)
    assert len(store) == 0 and store.stats.races == 1


def test_a_later_read_takes_the_placeholder() -> None:
    store = NearStore(NearCache())
    first = store.begin(b"k")
    second = store.begin(b"k")
    assert not store.put(("GET", b"k"), b"k", first, b"a", 60.0, OWNER, -1, CHANNEL, GEN)
    assert store.put(("GET", b"k"), b"k", second, b"b", 60.0, OWNER, -1, CHANNEL, GEN)


def test_lru_eviction_by_count_and_bytes() -> None:
    store = NearStore(NearCache(max_entries=3))
    for i in range(3):
        put(store, b"k%d" % i, b"v")
    assert store.get(("GET", b"k0"), 0.0) is not None  # k0 is now the most recent
    put(store, b"k3", b"v")
    assert store.get(("GET", b"k1"), 0.0) is None and store.get(("GET", b"k0"), 0.0) is not None
    assert store.stats.evictions == 1
    small = NearStore(NearCache(max_bytes=2000))
    for i in range(20):
        put(small, b"k%d" % i, b"x" * 200)
    assert 0 < small.bytes <= 2000 and small.stats.evictions > 0
    assert not put(small, b"huge", b"x" * 5000)  # larger than the whole budget


def test_expired_entries_are_not_served() -> None:
    store = NearStore(NearCache())
    put(store, b"k", b"v", now=0.0, ttl=1.0)
    assert store.get(("GET", b"k"), 0.5) is not None
    assert store.get(("GET", b"k"), 1.0) is None
    assert store.stats.expirations == 1 and store.bytes == 0


def test_drop_where_counts_flushes_and_clears_placeholders() -> None:
    store = NearStore(NearCache())
    put(store, b"a", b"1")
    token = store.begin(b"b")
    assert store.drop_where("channel_lost", lambda e: e.channel is CHANNEL) == 1
    assert store.stats.flushes == {"channel_lost": 1}
    assert not store.put(("GET", b"b"), b"b", token, b"2", 60.0, OWNER, -1, CHANNEL, GEN)


def test_thaw_copies_containers() -> None:
    kept = {b"a": [b"1", {b"x"}]}
    copy = thaw(kept)
    copy[b"a"][0] = b"changed"
    copy[b"a"][1].add(b"y")
    assert kept == {b"a": [b"1", {b"x"}]}
    value = b"bytes"
    assert thaw(value) is value
