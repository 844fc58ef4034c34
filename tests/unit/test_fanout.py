"""A command sent to several nodes: one merged reply, or one reply per node where the caller
named the nodes (as RedisCluster answers); no server."""

from __future__ import annotations

from typing import Any

import pytest
import redis.exceptions as rx
from redis.cluster import RedisCluster

from smartcache import key_slot
from smartcache._cluster_compat import merged_by
from smartcache._redis_surface import NEVER_DECODE, _with_cluster_callback
from smartcache.core.commands import CommandTable, ResponsePolicy
from smartcache.core.fanout import (
    FinishedByCallback,
    NodeReplies,
    answers_by_node,
    default_node_reply,
    fan_out_reply,
    parse_each,
    result_callback,
    unfinished,
)
from smartcache.core.routing import ToNodes, route, target_names

TABLE = CommandTable.fallback()
MERGED = merged_by(RedisCluster)
NODES = ("127.0.0.1:7000", "127.0.0.1:7001", "127.0.0.1:7002")


def routed(*args: Any, target: Any) -> ToNodes:
    where = route(TABLE, args, key_slot, lambda: 42, target, merged=MERGED)
    assert isinstance(where, ToNodes)
    return where


def test_redis_cluster_merges_what_its_result_callbacks_name() -> None:
    # probed from the installed redis-py, never a list of our own
    assert {"DBSIZE", "PING", "CONFIG SET", "KEYS", "SCRIPT LOAD"} <= MERGED
    assert "CLUSTER MYID" not in MERGED and "INFO" not in MERGED


@pytest.mark.parametrize(
    ("args", "by_node"),
    [
        (("CLUSTER", "MYID"), True),
        (("CLUSTER", "LINKS"), True),
        (("INFO",), True),
        (("FLUSHALL",), True),
        (("DBSIZE",), False),
        (("PING",), False),
        (("CONFIG", "SET", "x", "1"), False),
        (("NOSUCHCOMMAND",), True),
    ],
)
def test_nodes_the_caller_named_answer_by_node_unless_redis_cluster_merges(
    args: tuple[Any, ...], by_node: bool
) -> None:
    assert routed(*args, target="primaries").by_node is by_node
    assert answers_by_node(TABLE.lookup(args), args, MERGED) is by_node


def test_broadcasts_the_caller_did_not_target_stay_merged() -> None:
    for args in (("FLUSHALL",), ("DBSIZE",), ("SLOWLOG", "LEN"), ("SLOWLOG", "GET")):
        where = route(TABLE, args, key_slot, lambda: 42, merged=MERGED)
        assert isinstance(where, ToNodes) and not where.by_node


def test_target_nodes_as_a_dict_of_nodes() -> None:
    class Node:
        def __init__(self, name: str) -> None:
            self.name = name

    nodes = {name: Node(name) for name in NODES[:2]}
    assert target_names(nodes).addresses == NODES[:2]


def test_by_node_replies_keep_their_node() -> None:
    reply = fan_out_reply(
        "CLUSTER", ResponsePolicy.DEFAULT, NODES, [b"a", b"b", b"c"], by_node=True
    )
    assert type(reply) is NodeReplies
    assert reply == dict(zip(NODES, [b"a", b"b", b"c"], strict=True))


def test_one_node_answers_its_reply_either_way() -> None:
    for by_node in (True, False):
        assert fan_out_reply("X", ResponsePolicy.DEFAULT, NODES[:1], [[1]], by_node=by_node) == [1]


def test_by_node_raises_the_first_error_as_redis_cluster_does() -> None:
    error = rx.ResponseError("ERR nope")
    with pytest.raises(rx.ResponseError, match="nope"):
        fan_out_reply("X", ResponsePolicy.DEFAULT, NODES, [b"a", error, b"c"], by_node=True)


def test_merged_replies_follow_the_response_policy() -> None:
    assert fan_out_reply("DBSIZE", ResponsePolicy.AGG_SUM, NODES, [1, 2, 3], by_node=False) == 6
    assert fan_out_reply("KEYS", ResponsePolicy.DEFAULT, NODES, [[1], [2], []], by_node=False) == [
        1,
        2,
    ]
    # SPECIAL (INFO...): the first node's reply; RANDOMKEY: a key of a non-empty node
    assert (
        fan_out_reply("INFO", ResponsePolicy.SPECIAL, NODES, ["a", "b", "c"], by_node=False) == "a"
    )
    assert (
        fan_out_reply("RANDOMKEY", ResponsePolicy.SPECIAL, NODES, [None, "k", None], by_node=False)
        == "k"
    )


def test_replies_and_nodes_must_pair() -> None:
    with pytest.raises(ValueError, match="2 replies for 3 nodes"):
        fan_out_reply("X", ResponsePolicy.DEFAULT, NODES, [1, 2], by_node=True)


def test_parse_each_parses_every_node_and_returns_a_plain_dict() -> None:
    by_node = NodeReplies({NODES[0]: b"1", NODES[1]: b"2"})
    parsed = parse_each(by_node, lambda reply, **options: int(reply) + options["add"], {"add": 1})
    assert parsed == {NODES[0]: 2, NODES[1]: 3} and type(parsed) is dict
    assert type(parse_each(by_node, None, {})) is dict
    assert parse_each(b"1", int, {}) == 1
    assert parse_each(b"1", None, {}) == b"1"


class _DecodingClient:
    """What a client with decode_responses=True answers: str, unless NEVER_DECODE."""

    def __init__(self) -> None:
        self.options: list[dict[str, Any]] = []

    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.options.append(options)
        reply = "f" * 40
        if options.get("target_nodes") == "primaries":
            return {node: reply.encode() for node in NODES}  # undecoded, by node
        return reply.encode() if NEVER_DECODE in options else reply


def test_cluster_myshardid_gives_a_decoding_parser_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    # redis-py releases whose parser decodes the reply itself (8.1: resp.decode("utf-8"))
    # broke on a reply the client had already decoded
    callbacks = dict(RedisCluster.CLUSTER_COMMANDS_RESPONSE_CALLBACKS)
    callbacks["CLUSTER MYSHARDID"] = lambda resp, **options: resp.decode("utf-8")
    monkeypatch.setattr(RedisCluster, "CLUSTER_COMMANDS_RESPONSE_CALLBACKS", callbacks)
    method = _with_cluster_callback("CLUSTER MYSHARDID", "cluster_myshardid")
    client = _DecodingClient()
    assert method(client) == "f" * 40
    assert client.options[0][NEVER_DECODE] == []
    assert method(client, target_nodes="primaries") == dict.fromkeys(NODES, "f" * 40)


def test_default_node_reply_is_finished_by_redis_clusters_result_callback() -> None:
    results = dict(RedisCluster.RESULT_CALLBACKS)
    finish = result_callback(None, ("CLIENT UNBLOCK", 5), results)
    unblock = default_node_reply(0, "h:1", finish)
    assert isinstance(unblock, FinishedByCallback) and unfinished(unblock) == 0
    # parsed by redis.Redis's callback (int -> bool), then finished as RedisCluster does
    finished = parse_each(unblock, bool, {})
    assert finished == results["CLIENT UNBLOCK"]("CLIENT UNBLOCK", {"h:1": False})
    assert type(finished) is type(results["CLIENT UNBLOCK"]("CLIENT UNBLOCK", {"h:1": False}))
    assert result_callback(None, ("LASTSAVE",), results) is None
    assert default_node_reply(7, "h:1", None) == 7
    assert result_callback(None, ("SCAN", 0), results) is None  # smartcache's int cursor
    assert unfinished(7) == 7


def test_a_broadcast_redis_cluster_finishes_is_finished_so() -> None:
    results = dict(RedisCluster.RESULT_CALLBACKS)
    finish = result_callback(None, ("CONFIG REWRITE",), results)
    reply = fan_out_reply(
        "CONFIG",
        ResponsePolicy.ALL_SUCCEEDED,
        ["a:1", "b:2"],
        [b"OK", b"OK"],
        by_node=False,
        finish=finish,
    )
    assert parse_each(reply, None, {}) is True
    with pytest.raises(rx.ResponseError):
        fan_out_reply(
            "CONFIG",
            ResponsePolicy.ALL_SUCCEEDED,
            ["a:1", "b:2"],
            [b"OK", rx.ResponseError("no")],
            by_node=False,
            finish=finish,
        )
