from __future__ import annotations

import pytest

from smartcache import ConfigurationError, CrossSlotError, key_slot
from smartcache.core.commands import CommandTable
from smartcache.core.routing import Split, ToNodes, ToSlot, fast_key_index, route, target_names

TABLE = CommandTable.fallback()


def r(*args: object, target: object = None) -> object:
    return route(TABLE, tuple(args), key_slot, lambda: 42, target)


def test_keyed_commands_go_to_their_slot() -> None:
    assert r("GET", "k") == ToSlot(TABLE.lookup(("GET", "k")), key_slot("k"))
    where = r("EVAL", "return 1", 2, "{t}a", "{t}b")
    assert isinstance(where, ToSlot) and where.slot == key_slot("t")


def test_keyless_commands_follow_their_policy() -> None:
    assert isinstance(r("DBSIZE"), ToNodes) and r("DBSIZE").group == "primaries"  # type: ignore[attr-defined]
    assert r("EVAL", "return 1", 0) == ToSlot(TABLE.lookup(("EVAL", "return 1", 0)), 42)
    assert r("PING", target="all") == ToNodes(TABLE.lookup(("PING",)), group="all")


def test_multi_key_commands_split_or_refuse() -> None:
    where = r("MGET", "a", "b", "c")
    assert isinstance(where, Split) and len(where.plan.parts) == 3
    with pytest.raises(CrossSlotError) as err:
        r("MSETNX", "a", 1, "b", 2)
    assert err.value.command == "MSETNX"
    assert isinstance(r("MSETNX", "{x}a", 1, "{x}b", 2), ToSlot)


def test_target_nodes() -> None:
    class Node:
        name = "10.0.0.1:7000"

    assert target_names([Node(), "10.0.0.2:7000"]).addresses == ("10.0.0.1:7000", "10.0.0.2:7000")
    assert target_names("PRIMARIES").group == "primaries"
    with pytest.raises(ConfigurationError, match="target_nodes"):
        target_names("nearest")


def test_fast_key_index() -> None:
    assert fast_key_index(TABLE.lookup(("GET", "k")), "GET") == 1
    assert fast_key_index(TABLE.lookup(("GET", "k")), b"GET") == 0  # only str spellings
    assert fast_key_index(TABLE.lookup(("MGET", "a")), "MGET") == 0
    assert fast_key_index(None, "NOPE") == 0
