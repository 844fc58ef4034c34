from __future__ import annotations

import re

import pytest
import redis.exceptions as rx

from smartcache import ConfigurationError, CrossSlotError, key_slot
from smartcache.core.commands import CommandTable
from smartcache.core.pipeline import plan_command
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
    eval_spec = TABLE.lookup(("EVAL", "return 1", 0))
    assert r("EVAL", "return 1", 0) == ToSlot(eval_spec, 42, default_node=True)  # no key
    assert r("PING", target="all") == ToNodes(TABLE.lookup(("PING",)), group="all")


@pytest.mark.parametrize("name", ["DEL", "EXISTS", "TOUCH", "UNLINK"])
def test_independent_keys_are_split_by_slot(name: str) -> None:
    # as redis-py's RedisCluster.delete/exists/touch/unlink: the replies add up
    where = r(name, "a", "b", "c")
    assert isinstance(where, Split) and len(where.plan.parts) == 3


@pytest.mark.parametrize(
    ("args", "remedy"),
    [
        (("MGET", "a", "b", "c"), "mget_nonatomic()"),
        (("MSET", "a", 1, "b", 2), "mset_nonatomic()"),
        (("MSETNX", "a", 1, "b", 2), "hash tag"),
        (("SDIFF", "a", "b"), "hash tag"),
    ],
)
def test_atomic_commands_across_slots_are_refused(args: tuple[object, ...], remedy: str) -> None:
    keys = TABLE.keys(args)
    with pytest.raises(CrossSlotError, match=re.escape(remedy)) as err:
        r(*args)
    assert err.value.command == args[0]
    assert err.value.slots == tuple(sorted({key_slot(k) for k in keys}))  # type: ignore[arg-type]
    # what redis-py's RedisCluster raises (and its users catch), and what the server says
    assert isinstance(err.value, rx.RedisClusterException)
    assert isinstance(err.value, rx.ClusterCrossSlotError)
    tagged = tuple(f"{{x}}{a}" if a in keys else a for a in args[1:])
    assert isinstance(r(args[0], *tagged), ToSlot)


def test_nonatomic_splits_mget_and_mset_only() -> None:
    where = route(TABLE, ("MGET", "a", "b", "c"), key_slot, lambda: 42, nonatomic=True)
    assert isinstance(where, Split) and len(where.plan.parts) == 3
    where = route(TABLE, ("MSET", "a", 1, "b", 2), key_slot, lambda: 42, nonatomic=True)
    assert isinstance(where, Split) and len(where.plan.parts) == 2
    with pytest.raises(CrossSlotError):
        route(TABLE, ("MSETNX", "a", 1, "b", 2), key_slot, lambda: 42, nonatomic=True)


def test_pipelines_follow_the_same_rule() -> None:
    planned = plan_command(TABLE, ("DEL", "a", "b"), key_slot)
    assert planned.split is not None and len(planned.ops) == 2
    for args in (("MGET", "a", "b"), ("MSET", "a", 1, "b", 2), ("MSETNX", "a", 1, "b", 2)):
        with pytest.raises(CrossSlotError):
            plan_command(TABLE, args, key_slot)
    assert plan_command(TABLE, ("MSET", "{x}a", 1, "{x}b", 2), key_slot).split is None


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


def test_commands_naming_a_slot_go_to_its_node() -> None:
    # RedisCluster's SLOT_ID commands: the slot is an argument, not a key
    for sub in ("COUNTKEYSINSLOT", "GETKEYSINSLOT", "DELSLOTS", "SETSLOT"):
        where = r("CLUSTER", sub, 4242, "x")
        assert isinstance(where, ToSlot) and where.slot == 4242
    assert r("CLUSTER", "COUNTKEYSINSLOT", b"17").slot == 17  # type: ignore[attr-defined]
    assert r("CLUSTER", "INFO").slot == 42  # type: ignore[attr-defined]  # any node
    assert r("CLUSTER", "COUNTKEYSINSLOT", 99999).slot == 42  # type: ignore[attr-defined]
