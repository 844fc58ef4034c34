"""Node choice (primary or replica), and proof that the fast path makes the general path's.

The clients' single-key fast paths send a command to ``SlotRouting.pool_for(slot, flag)``
with the flag from :func:`fast_path_entry`; the general path sends it where
:func:`keyed_flow`'s ``Attempt.replica`` says, through the same ``pool_for``. So the two
agree exactly when the flags agree, for every command and every ``read_from``.
"""

from __future__ import annotations

import random
from typing import Any

import pytest

from smartcache._slot_routing import SlotRouting
from smartcache.core.commands import CommandTable
from smartcache.core.flow import Attempt, keyed_flow
from smartcache.core.node_choice import READ_FROM, choose_node, default_node, reads_from_replica
from smartcache.core.retry import RetryPolicy
from smartcache.core.routing import fast_path_entry
from smartcache.core.slotmap import Shard, SlotMap
from smartcache.core.slots import SLOT_COUNT
from smartcache.wire import ConnectionSettings

TABLE = CommandTable.fallback()


def _first_attempt(args: tuple[Any, ...], read_from: str) -> Attempt:
    flow = keyed_flow(
        args,
        TABLE.lookup(args),
        7,
        policy=RetryPolicy(),
        read_from=read_from,
        clock=lambda: 0.0,
    )
    effect = next(flow)
    while not isinstance(effect, Attempt):
        effect = flow.send(False)  # RefreshIfPending -> None, IsSuspect -> False
    return effect


@pytest.mark.parametrize(
    ("read_from", "command", "replica"),
    [
        ("primary", "GET", False),
        ("replica", "GET", True),
        ("replica_preferred", "GET", True),
        ("replica", "HGETALL", True),
        ("replica", "SET", False),
        ("replica", "INCR", False),
        ("replica_preferred", "GETEX", False),  # may write (EX): a write command
        ("replica", "NOSUCHCOMMAND", False),
    ],
)
def test_reads_from_replica(read_from: str, command: str, replica: bool) -> None:
    assert reads_from_replica(read_from, TABLE.lookup((command, "k"))) is replica


def test_choose_node() -> None:
    assert choose_node("p", ["r1", "r2"], lambda nodes: nodes[-1]) == "r2"
    assert choose_node("p", [], random.choice) == "p"  # a shard without replicas
    assert choose_node(None, [], random.choice) is None  # an unserved slot


@pytest.mark.parametrize("read_from", sorted(READ_FROM))
def test_fast_path_flag_is_the_general_paths_choice(read_from: str) -> None:
    checked = 0
    for command in TABLE:
        if "|" in command.name:
            continue  # subcommands (OBJECT|ENCODING) are reached through their container
        args = (command.name.upper(), "k", "v", "1", "2", "3")
        spec = TABLE.lookup(args)
        entry = fast_path_entry(spec, args[0], read_from)
        if entry is None:
            continue
        checked += 1
        assert entry[1] is _first_attempt(args, read_from).replica, command.name
    assert checked > 50  # GET, HGET, LRANGE, SET, INCR, ...: the table really was walked


def _routing() -> SlotRouting[str]:
    settings = ConnectionSettings.from_redis_kwargs()
    # Pools are just their addresses here; replica pools are told apart by their settings.
    routing: SlotRouting[str] = SlotRouting(
        settings,
        [("10.0.0.1", 7000)],
        pool_factory=lambda s: ("R " if s.readonly else "") + s.address,
        discard=lambda pool: None,
    )
    shards = [Shard("10.0.0.1:7000", ("10.0.0.2:7000", "10.0.0.3:7000")), Shard("10.0.0.4:7000")]
    routing.install(SlotMap.from_ranges([(0, 99, shards[0]), (100, SLOT_COUNT - 1, shards[1])]), ())
    return routing


def test_pool_for_follows_the_choice() -> None:
    routing = _routing()
    assert routing.pool_for(5, False) == "10.0.0.1:7000"
    assert {routing.pool_for(5, True) for _ in range(200)} == {
        "R 10.0.0.2:7000",
        "R 10.0.0.3:7000",
    }
    assert routing.pool_for(500, True) == "10.0.0.4:7000"  # no replica: its primary


def test_default_node_is_kept_while_it_serves_slots() -> None:
    assert default_node(None, ["a:1", "b:2"]) == "a:1"
    assert default_node("b:2", ["a:1", "b:2"]) == "b:2"
    assert default_node("gone:3", ["a:1", "b:2"]) == "a:1"  # failed over or removed
    assert default_node("a:1", []) is None
