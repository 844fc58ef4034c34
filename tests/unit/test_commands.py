"""Unit tests for smartcache.core.commands: key extraction, policies, merging, splitting.

The recorded fixtures in ``data/`` are the raw ``COMMAND`` replies of Valkey 9.1 (RESP2 and
RESP3) and Redis 7.0.15, plus what each server's ``COMMAND GETKEYS`` answered for a list of
sample commands; they were fetched once with hiredis from servers started for that purpose.
JSON encoding: bytes are latin-1 strings, maps are ``{"map": [k, v, ...]}``.
"""

from __future__ import annotations

import ast
import dataclasses
import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from smartcache.core import _command_static
from smartcache.core.commands import (
    CommandSpec,
    CommandTable,
    KeySpec,
    RequestPolicy,
    ResponsePolicy,
    SplitPlan,
    merge_replies,
    normalize_command,
    split_multi_key,
)
from smartcache.core.slots import key_slot
from smartcache.exceptions import CrossSlotError

pytestmark = pytest.mark.dropin

DATA = Path(__file__).parent / "data"
RP = RequestPolicy
SP = ResponsePolicy


def _decode(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("latin-1")
    if isinstance(value, list):
        return [_decode(item) for item in value]
    if isinstance(value, dict):
        items = [_decode(item) for item in value["map"]]
        return dict(zip(items[::2], items[1::2], strict=True))
    return value


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(
        gzip.decompress((DATA / f"command_{name}.json.gz").read_bytes())
    )
    doc["command"] = _decode(doc["command"])
    return doc


RECORDED = {name: _load(name) for name in ("valkey9", "valkey9_resp3", "redis7")}
TABLES = {name: CommandTable.from_command_reply(doc["command"]) for name, doc in RECORDED.items()}
TABLES["static"] = CommandTable.fallback()


@pytest.fixture(params=sorted(TABLES))
def table(request: pytest.FixtureRequest) -> CommandTable:
    return TABLES[request.param]


def test_fixtures_are_what_they_claim() -> None:
    assert "valkey_version:9.1" in RECORDED["valkey9"]["server"]
    assert RECORDED["redis7"]["server"] == "redis_version:7.0.15"
    assert isinstance(RECORDED["valkey9_resp3"]["command"][0][8][0], dict)  # RESP3 maps
    assert TABLES["valkey9"].source == "COMMAND"
    assert TABLES["static"].source == "static"


# --- keys(): against the servers' own COMMAND GETKEYS --------------------------------------

# Valkey's native GEORADIUS rule keeps only the last of STORE/STOREDIST; the key specs (and
# Redis 7.0) name both. Both must share a slot anyway, so returning both is the safer routing.
GETKEYS_DIVERGENCE = {("GEORADIUS", "g", "0", "0", "10", "km", "STORE", "d1", "STOREDIST", "d2")}


def _getkeys_cases() -> list[Any]:
    cases = []
    for server in ("valkey9", "redis7"):
        for args, keys, error in RECORDED[server]["getkeys"]:
            if error and "Invalid command" in error:
                continue  # the command does not exist on that server
            for table_name in (server, "static"):
                cases.append(pytest.param(table_name, tuple(args), keys or [], id=" ".join(args)))
    return cases


@pytest.mark.parametrize(("table_name", "args", "expected"), _getkeys_cases())
def test_keys_match_server_getkeys(
    table_name: str, args: tuple[str, ...], expected: list[str]
) -> None:
    got = TABLES[table_name].keys(args)
    if args in GETKEYS_DIVERGENCE and got != tuple(expected):
        assert set(expected) < set(got)
        assert got == ("g", "d1", "d2")
    else:
        assert got == tuple(expected)


def test_recorded_getkeys_cover_the_odd_commands() -> None:
    names = {args[0] for args, _, _ in RECORDED["valkey9"]["getkeys"]}
    for name in [
        "SORT",
        "MIGRATE",
        "XREAD",
        "XREADGROUP",
        "GEORADIUS",
        "EVAL",
        "FCALL",
        "ZUNIONSTORE",
        "BITOP",
        "MSET",
    ]:
        assert name in names


# --- keys(): hand-written expectations on every table --------------------------------------

KEY_CASES: list[tuple[tuple[Any, ...], tuple[Any, ...]]] = [
    (("GET", "k"), ("k",)),
    ((b"get", b"k"), (b"k",)),
    (("gEt", "k"), ("k",)),
    (("GET",), ()),
    (("MGET", "a", "b", "c"), ("a", "b", "c")),
    (("MSET", "a", "1", "b", "2"), ("a", "b")),
    (("DEL", "a", "b"), ("a", "b")),
    (("LCS", "a", "b"), ("a", "b")),
    (("ZUNIONSTORE", "d", 2, "a", "b", "WEIGHTS", 1, 2), ("d", "a", "b")),
    ((b"ZINTERSTORE", b"d", b"3", b"a", b"b", b"c"), (b"d", b"a", b"b", b"c")),
    (("ZUNION", "2", "a", "b", "WITHSCORES"), ("a", "b")),
    (("ZINTER", 1, "a"), ("a",)),
    (("ZDIFF", "2", "a", "b"), ("a", "b")),
    (("ZINTERCARD", "2", "a", "b", "LIMIT", "1"), ("a", "b")),
    (("ZUNIONSTORE", "d", "x", "a"), ("d",)),  # bad numkeys: only the destination
    (("ZUNIONSTORE", "d", "5", "a"), ("d",)),  # numkeys past the end
    (("XREAD", "COUNT", "2", "STREAMS", "s1", "s2", "0", "0"), ("s1", "s2")),
    (("xread", "block", 0, "streams", "s1", "$"), ("s1",)),
    (("XREAD", "STREAMS", "STREAMS", "0"), ("STREAMS",)),
    (("XREADGROUP", "GROUP", "STREAMS", "c", "STREAMS", "s1", ">"), ("s1",)),
    (("XREAD", "COUNT", "1"), ()),
    (("GEORADIUS", "g", 0, 0, 10, "km", "STORE", "d"), ("g", "d")),
    (("GEORADIUS", "g", 0, 0, 10, "km", "storedist", "d"), ("g", "d")),
    (("GEORADIUSBYMEMBER", "g", "m", 10, "km", "STORE", "d"), ("g", "d")),
    (("GEORADIUSBYMEMBER", "g", "STORE", 10, "km"), ("g",)),
    (("BITOP", "XOR", "d", "a", "b"), ("d", "a", "b")),
    (("PFCOUNT", "a", "b"), ("a", "b")),
    (("EVAL", "return 1", 2, "a", "b", "x"), ("a", "b")),
    (("EVAL", "return 1", 0, "x"), ()),
    (("EVALSHA", "abc", b"1", "a", "x"), ("a",)),
    (("EVAL_RO", "s", "1", "a"), ("a",)),
    (("FCALL", "f", 2, "a", "b", "x"), ("a", "b")),
    (("FCALL_RO", "f", 1, "a"), ("a",)),
    (("SORT", "k"), ("k",)),
    (("SORT", "k", "BY", "w_*", "GET", "#", "STORE", "d"), ("k", "d")),
    (("sort", "k", "limit", 0, 1, "store", "d"), ("k", "d")),
    (("SORT", "k", "GET", "STORE", "STORE", "d"), ("k", "d")),
    (("SORT", "k", "BY", "STORE", "d"), ("k",)),  # "STORE" is the BY pattern here
    (("SORT", "k", "STORE", "d1", "STORE", "d2"), ("k", "d2")),
    (("SORT_RO", "k", "BY", "x"), ("k",)),
    (("MIGRATE", "h", 6379, "k", 0, 5000), ("k",)),
    (("MIGRATE", "h", 6379, "KEYS", 0, 5000), ("KEYS",)),
    (("MIGRATE", "h", 6379, "", 0, 5000, "COPY", "KEYS", "a", "b"), ("a", "b")),
    (("MIGRATE", "h", 6379, b"", 0, 5000, "AUTH", "KEYS", "KEYS", "a"), ("a",)),
    (("MIGRATE", "h", 6379, "", 0, 5000, "AUTH2", "KEYS", "KEYS", "KEYS", "a"), ("a",)),
    (("MIGRATE", "h", 6379, "k", 0, 5000, "KEYS", "a"), ()),  # refused by the server too
    (("OBJECT", "ENCODING", "k"), ("k",)),
    ((b"object", b"freq", b"k"), (b"k",)),
    (("OBJECT", "HELP"), ()),
    (("MEMORY", "USAGE", "k", "SAMPLES", 5), ("k",)),
    (("MEMORY USAGE", "k"), ("k",)),
    (("XINFO", "STREAM", "s", "FULL"), ("s",)),
    (("XGROUP", "CREATE", "s", "g", "$"), ("s",)),
    (("LMPOP", 2, "a", "b", "LEFT"), ("a", "b")),
    (("BLMPOP", 0, 2, "a", "b", "LEFT"), ("a", "b")),
    (("BLPOP", "a", "b", 0), ("a", "b")),
    (("SPUBLISH", "ch", "msg"), ("ch",)),
    (("SSUBSCRIBE", "a", "b"), ("a", "b")),
    (("PING",), ()),
    (("DBSIZE",), ()),
    (("KEYS", "*"), ()),
    (("SCRIPT", "LOAD", "return 1"), ()),
    (("NOSUCHCOMMAND", "k"), ()),
    ((), ()),
]


@pytest.mark.parametrize(("args", "expected"), KEY_CASES, ids=lambda v: repr(v)[:60])
def test_keys(table: CommandTable, args: tuple[Any, ...], expected: tuple[Any, ...]) -> None:
    assert table.keys(args) == expected


def test_keys_returns_the_callers_objects(table: CommandTable) -> None:
    key, other = bytearray(b"k"), "x"
    assert table.keys(("GET", key))[0] is key
    got = table.keys(["MSET", key, "1", other, "2"])  # a list works too
    assert got == (key, other)
    assert got[0] is key
    assert got[1] is other


@pytest.mark.parametrize("numkeys", [2, "2", b"2", bytearray(b"2"), memoryview(b"2")])
def test_numkeys_of_any_bytes_like_type(table: CommandTable, numkeys: Any) -> None:
    # redis-py packs every bytes-like argument as its bytes: the server reads the number
    assert table.keys(("EVAL", "return 1", numkeys, "a", "b", "arg")) == ("a", "b")
    assert table.keys(("ZUNION", numkeys, "a", "b")) == ("a", "b")


def test_tables_agree_on_sample_keys() -> None:
    samples = [tuple(args) for args, _, _ in RECORDED["valkey9"]["getkeys"]]
    samples += [args for args, _ in KEY_CASES]
    for args in samples:
        results = {name: table.keys(args) for name, table in TABLES.items()}
        assert len(set(results.values())) == 1, (args, results)


def test_resp3_and_resp2_tables_are_equal() -> None:
    resp2, resp3 = TABLES["valkey9"], TABLES["valkey9_resp3"]
    assert len(resp2) == len(resp3) > 390
    for spec in resp2:
        assert resp3.get(spec.name) == spec


# --- policies and flags -------------------------------------------------------------------

POLICY_CASES = [
    (("GET", "k"), RP.KEYED, SP.DEFAULT),
    (("MGET", "a"), RP.MULTI_SHARD, SP.DEFAULT),
    (("MSET", "a", "1"), RP.MULTI_SHARD, SP.ALL_SUCCEEDED),
    (("DEL", "a"), RP.MULTI_SHARD, SP.AGG_SUM),
    (("EXISTS", "a"), RP.MULTI_SHARD, SP.AGG_SUM),
    (("UNLINK", "a"), RP.MULTI_SHARD, SP.AGG_SUM),
    (("TOUCH", "a"), RP.MULTI_SHARD, SP.AGG_SUM),
    (("MSETNX", "a", "1"), RP.KEYED, SP.DEFAULT),  # never split, on Redis 7.0 too
    (("DBSIZE",), RP.ALL_SHARDS, SP.AGG_SUM),
    (("KEYS", "*"), RP.ALL_SHARDS, SP.DEFAULT),
    (("FLUSHALL",), RP.ALL_SHARDS, SP.ALL_SUCCEEDED),
    (("FLUSHDB",), RP.ALL_SHARDS, SP.ALL_SUCCEEDED),
    (("PING",), RP.ALL_SHARDS, SP.ALL_SUCCEEDED),
    (("WAIT", 1, 0), RP.ALL_SHARDS, SP.AGG_MIN),
    (("SCRIPT", "EXISTS", "sha"), RP.ALL_SHARDS, SP.AGG_LOGICAL_AND),
    (("SCRIPT", "LOAD", "return 1"), RP.ALL_NODES, SP.ALL_SUCCEEDED),
    (("SCRIPT", "FLUSH"), RP.ALL_NODES, SP.ALL_SUCCEEDED),
    (("SCRIPT", "KILL"), RP.ALL_SHARDS, SP.ONE_SUCCEEDED),
    (("FUNCTION", "LOAD", "code"), RP.ALL_SHARDS, SP.ALL_SUCCEEDED),
    (("FUNCTION", "KILL"), RP.ALL_SHARDS, SP.ONE_SUCCEEDED),
    (("INFO",), RP.ALL_SHARDS, SP.SPECIAL),
    (("CONFIG", "SET", "x", "y"), RP.ALL_NODES, SP.ALL_SUCCEEDED),
    (("CONFIG", "GET", "x"), RP.DEFAULT_KEYLESS, SP.DEFAULT),
    (("SCAN", 0), RP.SPECIAL, None),  # Redis 7.0 has no response tip for SCAN
    (("RANDOMKEY",), RP.ALL_SHARDS, None),
    (("TIME",), RP.DEFAULT_KEYLESS, SP.DEFAULT),
    # routed by the channel's slot, as redis-py's RedisCluster routes it
    (("PUBLISH", "ch", "m"), RP.KEYED, SP.DEFAULT),
    # subscriptions are per node: ask every node and add up
    (("PUBSUB", "NUMSUB", "ch"), RP.ALL_NODES, SP.SUM_PER_NAME),
    (("PUBSUB", "NUMPAT"), RP.ALL_NODES, SP.AGG_SUM),
    (("PUBSUB", "CHANNELS"), RP.ALL_NODES, SP.UNION),
    (("PUBSUB", "SHARDCHANNELS"), RP.ALL_SHARDS, SP.UNION),
    (("PUBSUB", "SHARDNUMSUB", "ch"), RP.ALL_SHARDS, SP.SUM_PER_NAME),
    (("SPUBLISH", "ch", "m"), RP.KEYED, SP.DEFAULT),
    (("EVAL", "s", 0), RP.KEYED, SP.DEFAULT),
    (("OBJECT", "ENCODING", "k"), RP.KEYED, SP.DEFAULT),
    (("NOSUCHCOMMAND",), RP.DEFAULT_KEYLESS, SP.DEFAULT),
]


@pytest.mark.parametrize(("args", "request_policy", "response_policy"), POLICY_CASES)
def test_policies(
    table: CommandTable, args: tuple[Any, ...], request_policy: RP, response_policy: SP | None
) -> None:
    assert table.request_policy(args) is request_policy
    if response_policy is not None:
        assert table.response_policy(args) is response_policy


def test_valkey_specific_policies() -> None:
    for name in ("valkey9", "static"):
        assert TABLES[name].response_policy(("SCAN", 0)) is SP.SPECIAL
        assert TABLES[name].response_policy(("RANDOMKEY",)) is SP.SPECIAL
    assert TABLES["redis7"].response_policy(("SCAN", 0)) is SP.DEFAULT


def test_static_table_matches_valkey9_everywhere() -> None:
    loaded, static = TABLES["valkey9"], TABLES["static"]
    checked = 0
    for spec in loaded:
        if spec.name in _SKIPPED_IN_STATIC:
            continue
        mine = static.get(spec.name)
        assert mine is not None, spec.name
        assert (mine.request_policy, mine.response_policy) == (
            spec.request_policy,
            spec.response_policy,
        ), spec.name
        assert (mine.arity, mine.readonly, mine.write, mine.blocking, mine.movablekeys) == (
            spec.arity,
            spec.readonly,
            spec.write,
            spec.blocking,
            spec.movablekeys,
        ), spec.name
        assert mine.key_specs == tuple(
            dataclasses.replace(k, flags=k.flags & _EXTRACTION_FLAGS) for k in spec.key_specs
        ), spec.name
        checked += 1
    assert checked > 350


_SKIPPED_IN_STATIC = {"debug", "pfdebug", "pfselftest", "psync", "sync", "replconf"}
_SKIPPED_IN_STATIC |= {"restore-asking", "lolwut"}
_EXTRACTION_FLAGS = frozenset({"not_key", "incomplete", "variable_flags"})


def test_redis7_policy_differences_are_the_known_ones() -> None:
    redis7, static = TABLES["redis7"], TABLES["static"]
    differ = set()
    for spec in redis7:
        mine = static.get(spec.name)
        if mine is None:
            assert spec.name in _SKIPPED_IN_STATIC
        elif (spec.request_policy, spec.response_policy) != (
            mine.request_policy,
            mine.response_policy,
        ):
            differ.add(spec.name)
    assert differ == {
        "acl|deluser", "acl|save", "acl|setuser", "client|setname", "config|resetstat",
        "config|rewrite", "latency|reset", "randomkey", "scan",
    }  # fmt: skip


READONLY = [
    (("GET", "k"), True),
    (("SET", "k", "v"), False),
    (("SORT", "k"), False),
    (("SORT_RO", "k"), True),
    (("EVAL_RO", "s", 0), True),
    (("EVAL", "s", 0), False),
    (("XINFO", "STREAM", "s"), True),
    (("OBJECT", "ENCODING", "k"), True),
    (("MEMORY", "USAGE", "k"), True),
    (("GEORADIUS", "g", 0, 0, 1, "m"), False),
    (("GEORADIUS_RO", "g", 0, 0, 1, "m"), True),
    (("NOSUCHCOMMAND",), False),
]


@pytest.mark.parametrize(("args", "expected"), READONLY)
def test_is_readonly(table: CommandTable, args: tuple[Any, ...], expected: bool) -> None:
    assert table.is_readonly(args) is expected


BLOCKING = [
    (("BLPOP", "a", 0), True),
    (("BRPOPLPUSH", "a", "b", 0), True),
    (("BLMOVE", "a", "b", "LEFT", "LEFT", 0), True),
    (("BZMPOP", 0, 1, "a", "MIN"), True),
    (("XREAD", "STREAMS", "s", "0"), False),
    (("XREAD", "COUNT", 1, "STREAMS", "BLOCK", "0"), False),  # a stream named BLOCK
    ((b"xread", b"block", b"0", b"streams", b"s", b"$"), True),
    (("XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"), False),
    (("XREADGROUP", "GROUP", "g", "c", "BLOCK", 10, "STREAMS", "s", ">"), True),
    (("WAIT", 1, 0), True),
    (("GET", "k"), False),
    (("NOSUCHCOMMAND",), False),
]


@pytest.mark.parametrize(("args", "expected"), BLOCKING)
def test_is_blocking(table: CommandTable, args: tuple[Any, ...], expected: bool) -> None:
    assert table.is_blocking(args) is expected


IDEMPOTENT = [
    (("GET", "k"), True),
    (("SET", "k", "v"), True),
    (("SET", "k", "v", "GET"), True),
    (("SET", "k", "v", "XX", "EX", 10), True),
    (("SET", "k", "v", "NX", "PX", 100), False),
    (("SET", "k", "v", "IFEQ", "old"), False),
    (("SETNX", "k", "v"), False),
    (("GETSET", "k", "v"), True),
    (("GETDEL", "k"), False),
    (("GETEX", "k", "EX", 1), True),
    (("DEL", "a", "b"), True),
    (("UNLINK", "a"), True),
    (("EXPIRE", "k", 10), True),
    (("HSET", "h", "f", "v"), True),
    (("HSETNX", "h", "f", "v"), False),
    (("SADD", "s", "m"), True),
    (("ZADD", "z", 1, "m"), True),
    (("ZADD", "z", "NX", "CH", 1, "m"), True),
    (("ZADD", "z", "XX", "INCR", 1, "m"), False),
    (("ZADD", "z", 1, "INCR"), True),  # a member named INCR
    (("ZINCRBY", "z", 1, "m"), False),
    (("INCR", "k"), False),
    (("INCRBYFLOAT", "k", 1.5), False),
    (("DECRBY", "k", 2), False),
    (("HINCRBY", "h", "f", 1), False),
    (("APPEND", "k", "v"), False),
    (("LPUSH", "l", "v"), False),
    (("RPUSHX", "l", "v"), False),
    (("LPOP", "l"), False),
    (("LMOVE", "a", "b", "LEFT", "RIGHT"), False),
    (("BLPOP", "l", 0), False),
    (("SPOP", "s"), False),
    (("LTRIM", "l", 0, 99), True),
    (("LTRIM", "l", -100, -1), True),
    (("LTRIM", "l", 1, -1), False),
    (("LREM", "l", 0, "v"), True),
    (("LREM", "l", 1, "v"), False),
    (("XADD", "s", "*", "f", "v"), False),
    (("XADD", "s", "1-1", "f", "v"), True),
    (("XADD", "s", "MAXLEN", "~", 100, "*", "f", "v"), False),
    (("XADD", "s", "NOMKSTREAM", "MINID", "=", 5, "LIMIT", 10, "5-1", "f", "v"), True),
    (("XADD", "s", "1-*", "f", "v"), False),
    (("XACK", "s", "g", "1-1"), True),
    (("XCLAIM", "s", "g", "c", 0, "1-1"), False),
    (("XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"), False),
    (("XREAD", "STREAMS", "s", "0"), True),
    (("XGROUP", "CREATE", "s", "g", "$"), True),
    (("PFADD", "h", "a"), True),
    (("SETRANGE", "k", 0, "v"), True),
    (("BITFIELD", "k", "SET", "u8", 0, 1), True),
    (("BITFIELD", "k", "INCRBY", "u8", 0, 1), False),
    (("ZUNIONSTORE", "d", 2, "a", "b"), True),
    (("ZUNIONSTORE", "d", 2, "d", "a"), False),
    (("BITOP", "XOR", "d", b"d", "a"), False),
    (("BITOP", "XOR", "d", "a", "b"), True),
    (("SUNIONSTORE", "d", "d", "a"), True),
    (("EVAL", "s", 0), False),
    (("EVALSHA", "sha", 0), False),
    (("FCALL", "f", 0), False),
    (("EVAL_RO", "s", 0), True),
    (("FCALL_RO", "f", 0), True),
    (("PUBLISH", "ch", "m"), False),
    (("SPUBLISH", "ch", "m"), False),
    (("RENAME", "a", "b"), False),
    (("MSET", "a", 1), True),
    (("MSETNX", "a", 1), False),
    (("DELIFEQ", "k", "v"), False),
    (("RESTORE", "k", 0, "payload"), False),
    (("RESTORE", "k", 0, "payload", "REPLACE"), True),
    (("FUNCTION", "LOAD", "code"), False),
    (("FUNCTION", "LOAD", "REPLACE", "code"), True),
    (("SCRIPT", "LOAD", "return 1"), True),
    (("PING",), True),
    (("FLUSHALL",), True),
    (("MULTI",), False),
    (("EXEC",), False),
    (("CONFIG", "GET", "x"), True),
    (("CLIENT", "KILL", "ID", 1), False),
    (("OBJECT", "HELP"), True),
    (("NOSUCHCOMMAND",), False),
]


@pytest.mark.parametrize(("args", "expected"), IDEMPOTENT)
def test_is_idempotent(table: CommandTable, args: tuple[Any, ...], expected: bool) -> None:
    assert table.is_idempotent(args) is expected


def test_wait_blocks_even_without_the_flag() -> None:
    assert "blocking" not in TABLES["redis7"].get("wait").flags  # type: ignore[union-attr]
    assert TABLES["redis7"].is_blocking(("WAIT", 1, 0))


# --- lookup ---------------------------------------------------------------------------------


def test_lookup(table: CommandTable) -> None:
    get = table.lookup(("GET", "k"))
    assert get is not None
    assert get.name == "get"
    assert get.arity == 2
    for spelling in ("get", "Get", b"GET", b"gEt", bytearray(b"get"), memoryview(b"GeT")):
        assert table.lookup((spelling, "k")) is get
    assert table.lookup(("OBJECT", "encoding", "k")).name == "object|encoding"  # type: ignore[union-attr]
    assert table.lookup((b"OBJECT", b"NOPE")).name == "object"  # type: ignore[union-attr]
    assert table.lookup(("OBJECT",)).name == "object"  # type: ignore[union-attr]
    assert table.lookup(("OBJECT", ["unhashable"])).name == "object"  # type: ignore[union-attr]
    assert table.lookup(("CONFIG GET", "x")).name == "config|get"  # type: ignore[union-attr]
    assert table.lookup(("object|encoding", "k")) is None
    assert table.lookup(("nosuch",)) is None
    assert table.lookup((42,)) is None
    assert table.lookup(([],)) is None
    assert table.lookup(()) is None
    assert "get" in table
    assert "GET" in table
    assert "nosuch" not in table
    assert table.get("OBJECT|ENCODING") is table.lookup(("object", "encoding", "k"))


def test_memo_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from smartcache.core import commands

    monkeypatch.setattr(commands, "_MEMO_LIMIT", 0)
    table = CommandTable(CommandTable.fallback())
    assert table.lookup(("gEt", "k")) is table.lookup(("GeT", "k")) is not None
    assert "gEt" not in table._memo
    assert table.keys(("hGeT", "h", "f")) == ("h",)


def test_normalize_command() -> None:
    args = ("GET", "k")
    assert normalize_command(args) is args
    assert normalize_command(["GET", "k"]) == ("GET", "k")
    assert normalize_command(("CONFIG GET", "x")) == ("CONFIG", "GET", "x")
    assert normalize_command((b"MEMORY USAGE", b"k")) == (b"MEMORY", b"USAGE", b"k")
    assert normalize_command(()) == ()


def test_command_spec_is_frozen_and_hashable(table: CommandTable) -> None:
    spec = table.lookup(("GET", "k"))
    assert spec is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.name = "set"  # type: ignore[misc]
    assert {spec: 1}[spec] == 1
    assert spec.single_key_index == 1
    assert spec.keys(("GET", "k")) == ("k",)
    mget = table.lookup(("MGET",))
    assert mget is not None
    assert mget.single_key_index == 0


def test_custom_table_with_orphan_subcommand() -> None:
    sub = CommandSpec(
        "thing|get", 3, frozenset(["readonly"]), (KeySpec(index=2),), RP.KEYED, SP.DEFAULT
    )
    table = CommandTable([sub])
    assert table.keys(("THING", "GET", "k")) == ("k",)
    assert table.lookup(("THING",)).request_policy is RP.DEFAULT_KEYLESS  # type: ignore[union-attr]
    assert table.is_readonly(("thing", "get", "k"))


# --- building tables from replies -----------------------------------------------------------


def test_redis6_style_reply_uses_static_knowledge() -> None:
    reply = [
        [b"get", 2, [b"readonly", b"fast"], 1, 1, 1, [b"@read"]],
        [b"mget", -2, [b"readonly", b"fast"], 1, -1, 1, [b"@read"]],
        [b"bitop", -4, [b"write"], 2, -1, 1],
        [b"zunionstore", -4, [b"write", b"movablekeys"], 0, 0, 0],
        [b"mymodule.cmd", -2, [b"write"], 1, 3, 2],
    ]
    table = CommandTable.from_command_reply(reply)
    assert table.request_policy(("MGET", "a", "b")) is RP.MULTI_SHARD
    assert table.keys(("MGET", "a", "b")) == ("a", "b")
    assert table.keys(("BITOP", "AND", "d", "a", "b")) == ("d", "a", "b")
    assert table.keys(("ZUNIONSTORE", "d", 2, "a", "b")) == ("d", "a", "b")
    assert table.keys(("MYMODULE.CMD", "a", "x", "b", "y", "c")) == ("a", "b")
    assert table.request_policy(("MYMODULE.CMD", "a")) is RP.KEYED
    assert table.request_policy(("DBSIZE",)) is RP.ALL_SHARDS  # from the static table


def test_unknown_spec_types_select_nothing() -> None:
    spec = [
        b"flags", [b"RO"],
        b"begin_search", [b"type", b"future", b"spec", []],
        b"find_keys", [b"type", b"range", b"spec", [b"lastkey", 0, b"keystep", 1, b"limit", 0]],
    ]  # fmt: skip
    other = [
        b"flags", [],
        b"begin_search", [b"type", b"index", b"spec", [b"index", 2]],
        b"find_keys", [b"type", b"future", b"spec", []],
    ]  # fmt: skip
    reply = [[b"x.cmd", -2, [], 1, 1, 1, [], [b"request_policy:brand_new"], [spec, other], []]]
    table = CommandTable.from_command_reply(reply)
    assert table.keys(("X.CMD", "a", "b")) == ()
    assert table.request_policy(("X.CMD", "a")) is RP.SPECIAL


@pytest.mark.parametrize(
    "reply",
    [None, b"OK", [[b"get"]], [[b"get", b"two", [], 1, 1, 1]], [[b"get", 2, 5, 1, 1, 1]]],
)
def test_malformed_reply_raises_value_error(reply: object) -> None:
    with pytest.raises(ValueError, match="not a COMMAND reply"):
        CommandTable.from_command_reply(reply)


def test_static_table_parser_rejects_bad_spec() -> None:
    with pytest.raises(ValueError, match="bad key spec"):
        _command_static.key_spec("@x")
    spec = _command_static.key_spec("KEYS@-2:-1!incomplete")
    assert spec == KeySpec(
        begin="keyword", index=0, keyword="KEYS", startfrom=-2, lastkey=-1,
        flags=frozenset({"incomplete"}),
    )  # fmt: skip


# --- the key-spec algorithms in isolation ---------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "args", "expected"),
    [
        (KeySpec(index=1), ("C", "a"), [1]),
        (KeySpec(index=3), ("C", "a"), []),
        (KeySpec(index=1, lastkey=2), ("C", "a", "b", "c", "d"), [1, 2, 3]),
        (KeySpec(index=1, lastkey=2), ("C", "a", "b"), []),  # last out of bounds
        (KeySpec(index=1, lastkey=-2), ("C", "a", "b", "c"), [1, 2]),
        (KeySpec(index=1, lastkey=-1, keystep=2), ("C", "a", 1, "b", 2), [1, 3]),
        (KeySpec(begin="keyword", keyword="K", startfrom=1, lastkey=-1, limit=2),
         ("C", "x", "K", "a", "b", 1, 2), [3, 4]),
        (KeySpec(begin="keyword", keyword="K", startfrom=1), ("C", "x", "K"), []),
        (KeySpec(begin="keyword", keyword="K", startfrom=-1), ("C", "K", "a", "K", "b"), [4]),
        (KeySpec(begin="keyword", keyword="K", startfrom=-3), ("C", "K", "a", "K", "b"), [2]),
        (KeySpec(begin="keyword", keyword="K", startfrom=0), ("C", "K", "a"), []),
        (KeySpec(begin="keyword", keyword="K", startfrom=9), ("C", "K", "a"), []),
        (KeySpec(index=1, find="keynum"), ("C", "2", "a", "b", "x"), [2, 3]),
        (KeySpec(index=1, find="keynum", keystep=2), ("C", 2, "a", 1, "b", 2), [2, 4]),
        (KeySpec(index=1, find="keynum"), ("C", "-1", "a"), []),
        (KeySpec(index=1, find="keynum"), ("C", "0"), []),
        (KeySpec(index=1, find="keynum"), ("C", 1.5, "a"), []),
        (KeySpec(index=3, find="keynum"), ("C", "1"), []),
        (KeySpec(index=1, find="keynum", keynumidx=1, firstkey=2), ("C", "x", "1", "a"), [3]),
        (KeySpec(begin="unknown"), ("C", "a"), []),
    ],
)  # fmt: skip
def test_key_spec_positions(spec: KeySpec, args: tuple[Any, ...], expected: list[int]) -> None:
    assert list(spec.positions(args)) == expected


# --- merge_replies --------------------------------------------------------------------------


class Boom(Exception):
    pass


def test_merge_pubsub_answers_of_every_node() -> None:
    per_node = [[b"a", 1, b"b", 0], [b"a", 2, b"b", 1], [b"a", 0, b"b", 0]]
    assert merge_replies(SP.SUM_PER_NAME, per_node, "PUBSUB") == [b"a", 3, b"b", 1]
    resp3 = [{b"a": 1}, {b"a": 2}]
    assert merge_replies(SP.SUM_PER_NAME, resp3, "PUBSUB") == {b"a": 3}
    channels = [[b"x", b"y"], [], [b"y", b"z"]]
    assert merge_replies(SP.UNION, channels, "PUBSUB") == [b"x", b"y", b"z"]


def test_merge_aggregates() -> None:
    assert merge_replies(SP.AGG_SUM, [3, 4, 5], "DBSIZE") == 12
    assert merge_replies(SP.AGG_MIN, [3, 1, 5], "WAIT") == 1
    assert merge_replies(SP.AGG_MAX, [3, 1, 5], "X") == 5
    assert merge_replies(SP.AGG_LOGICAL_AND, [1, 1, 0], "X") == 0
    assert merge_replies(SP.AGG_LOGICAL_AND, [1, 1], "X") == 1
    assert merge_replies(SP.AGG_LOGICAL_OR, [0, 1, 0], "X") == 1
    assert merge_replies(SP.AGG_LOGICAL_OR, [0, 0], "X") == 0
    exists = [[1, 1, 0], [1, 0, 0], [1, 1, 1]]
    assert merge_replies(SP.AGG_LOGICAL_AND, exists, "SCRIPT EXISTS") == [1, 0, 0]
    assert merge_replies(SP.AGG_LOGICAL_OR, exists, "SCRIPT EXISTS") == [1, 1, 1]
    assert merge_replies(SP.AGG_SUM, [[1, 2], (3, 4)], "X") == [4, 6]
    with pytest.raises(ValueError, match="SCRIPT EXISTS"):
        merge_replies(SP.AGG_LOGICAL_AND, [[1, 1], [1]], "SCRIPT EXISTS")
    with pytest.raises(ValueError, match="differ in shape"):
        merge_replies(SP.AGG_SUM, [[1], 1], "X")


def test_merge_errors_by_policy() -> None:
    first, second = Boom("first"), Boom("second")
    assert merge_replies(SP.ONE_SUCCEEDED, [first, b"OK", second], "SCRIPT KILL") == b"OK"
    with pytest.raises(Boom, match="first"):
        merge_replies(SP.ONE_SUCCEEDED, [first, second], "SCRIPT KILL")
    assert merge_replies(SP.ALL_SUCCEEDED, [b"OK", b"OK"], "FLUSHALL") == b"OK"
    for policy in (SP.ALL_SUCCEEDED, SP.AGG_SUM, SP.DEFAULT, SP.SPECIAL, SP.AGG_LOGICAL_AND):
        with pytest.raises(Boom, match="first"):
            merge_replies(policy, [1, first, second], "X")
    with pytest.raises(ValueError, match="no replies"):
        merge_replies(SP.DEFAULT, [], "KEYS")


def test_merge_default_and_special() -> None:
    assert merge_replies(SP.DEFAULT, [[b"a"], [], (b"b", b"c")], "KEYS") == [b"a", b"b", b"c"]
    assert merge_replies(SP.DEFAULT, [{b"a": 1}, {b"b": 2}], "X") == {b"a": 1, b"b": 2}
    assert merge_replies(SP.DEFAULT, [{1}, {2}], "X") == {1, 2}
    assert merge_replies(SP.DEFAULT, [b"x", b"y"], "RANDOMKEY") == b"x"
    assert merge_replies(SP.DEFAULT, [None, [b"k"]], "X") is None
    replies = [b"# Server", b"# Server"]
    merged = merge_replies(SP.SPECIAL, replies, "INFO")
    assert merged == replies
    assert merged is not replies


# --- split_multi_key ------------------------------------------------------------------------

STATIC = CommandTable.fallback()


def _spec(name: str) -> CommandSpec:
    spec = STATIC.get(name)
    assert spec is not None
    return spec


def test_split_mget_reorders() -> None:
    args = ("MGET", "{a}1", "{b}1", "{a}2", "{c}1", "{b}2")
    plan = split_multi_key(args, _spec("mget"), key_slot)
    assert isinstance(plan, SplitPlan)
    assert [part[0] for part in plan.parts] == [key_slot("a"), key_slot("b"), key_slot("c")]
    assert plan.parts[0][1:] == (("MGET", "{a}1", "{a}2"), (0, 2))
    assert plan.parts[1][1:] == (("MGET", "{b}1", "{b}2"), (1, 4))
    assert plan.parts[2][1:] == (("MGET", "{c}1"), (3,))
    merged = plan.merge([[b"a1", b"a2"], [b"b1", None], [b"c1"]])
    assert merged == [b"a1", b"b1", b"a2", b"c1", None]
    with pytest.raises(ValueError, match="does not match"):
        plan.merge([[b"a1"], [b"b1", None], [b"c1"]])
    with pytest.raises(ValueError, match="2 replies for 3 parts"):
        plan.merge([[b"a1", b"a2"], [b"b1", None]])
    with pytest.raises(Boom):
        plan.merge([[b"a1", b"a2"], Boom(), [b"c1"]])


def test_split_mset_keeps_values_with_keys() -> None:
    args = ("MSET", "{a}1", "v1", "{b}1", "v2", "{a}2", "v3")
    plan = split_multi_key(args, _spec("mset"), key_slot)
    assert [part[1] for part in plan.parts] == [
        ("MSET", "{a}1", "v1", "{a}2", "v3"),
        ("MSET", "{b}1", "v2"),
    ]
    assert plan.merge([b"OK", b"OK"]) == b"OK"
    with pytest.raises(ValueError, match="wrong number of arguments for MSET"):
        split_multi_key(("MSET", "a", "1", "b"), _spec("mset"), key_slot)


@pytest.mark.parametrize("name", ["del", "exists", "unlink", "touch"])
def test_split_counting_commands_sum(name: str) -> None:
    args = (name.upper(), "{a}1", "{b}1", "{a}2")
    plan = split_multi_key(args, _spec(name), key_slot)
    assert len(plan.parts) == 2
    assert plan.merge([2, 1]) == 3


def test_split_single_slot_keeps_args() -> None:
    args = ("MGET", "{u}1", "{u}2")
    plan = split_multi_key(args, _spec("mget"), key_slot)
    assert plan.parts == ((key_slot("u"), args, (0, 1)),)
    assert plan.merge([[b"1", b"2"]]) == [b"1", b"2"]


def test_split_refusals() -> None:
    with pytest.raises(ValueError, match="not a multi-shard"):
        split_multi_key(("GET", "k"), _spec("get"), key_slot)
    with pytest.raises(ValueError, match="not a multi-shard"):
        split_multi_key(("MSETNX", "a", "1"), TABLES["redis7"].get("msetnx"), key_slot)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="wrong number"):
        split_multi_key(("MGET",), _spec("mget"), key_slot)


def test_split_msetex_only_within_one_slot() -> None:
    msetex = _spec("msetex")
    plan = split_multi_key(("MSETEX", 2, "{a}1", "v", "{a}2", "v", "EX", 10), msetex, key_slot)
    assert plan.parts == (
        (key_slot("a"), ("MSETEX", 2, "{a}1", "v", "{a}2", "v", "EX", 10), (0, 1)),
    )
    with pytest.raises(CrossSlotError) as info:
        split_multi_key(("MSETEX", 2, "{a}1", "v", "{b}2", "v"), msetex, key_slot)
    assert info.value.command == "MSETEX"
    assert info.value.slots == tuple(sorted({key_slot("a"), key_slot("b")}))


# --- the core stays I/O-free ----------------------------------------------------------------

_FORBIDDEN = {"socket", "ssl", "asyncio", "threading", "time", "select", "selectors"}


@pytest.mark.parametrize(
    "module", ["commands", "_keyspec", "_command_static", "_command_reply", "_idempotency"]
)
def test_command_modules_import_no_io(module: str) -> None:
    path = Path(__file__).parents[2] / "smartcache" / "core" / f"{module}.py"
    tree = ast.parse(path.read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & _FORBIDDEN
    assert "from __future__ import annotations" in path.read_text()


@pytest.mark.parametrize(
    ("name", "replicates"),
    [
        ("set", True),
        ("xadd", True),
        ("eval", True),  # a script may write: wait_replicas= must WAIT after it
        ("evalsha", True),
        ("fcall", True),
        ("eval_ro", False),
        ("evalsha_ro", False),
        ("get", False),
        ("publish", False),  # may_replicate, but pub/sub: no WAIT
    ],
)
def test_replicates_marks_what_wait_replicas_waits_after(
    table: CommandTable, name: str, replicates: bool
) -> None:
    spec = table.get(name)
    assert spec is not None and spec.replicates is replicates
