"""Write-through without a server: backoff bounds, the repair log, option checks, the flows.

The flows are generators that yield the I/O they need; here they are stepped by hand with
scripted outcomes, so the retry/record/heal rules are checked without any client.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions

from smartcache.cache import CachePolicy
from smartcache.cache._repair_log import (
    RepairRecord,
    append_repair_log,
    backoff_delay,
    parse_repair_log,
    read_repair_log,
    rewrite_repair_log,
)
from smartcache.cache._store import StoreItem
from smartcache.cache._write_through import WriteThrough, _Call, _Leases, _Redis, _Sleep
from smartcache.cache._write_through_decorator import write_through
from smartcache.exceptions import (
    CacheInconsistencyError,
    ConfigurationError,
    InvalidArgumentError,
    SmartCacheError,
)

DOWN = redis.exceptions.ConnectionError("Connection refused")


class MaxRandom:
    """An rng whose ``uniform`` always returns the upper bound."""

    def random(self) -> float:
        return 0.999999

    def uniform(self, a: float, b: float) -> float:
        return b


class ListStore:
    """A store that only records what it was asked to write."""

    def __init__(self) -> None:
        self.items: list[StoreItem] = []

    def write_many(self, items: Sequence[StoreItem]) -> None:
        self.items.extend(items)

    def delete_many(self, items: Sequence[StoreItem]) -> None:
        self.items.extend(items)


class SyncClient:
    """Stands in for a sync client in flows that are stepped by hand (never called)."""

    def execute_command(self, *args: Any) -> Any:
        raise AssertionError("not called")


# -- backoff ------------------------------------------------------------------------------
def test_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    rng = random.Random(7)
    for attempt in range(12):
        ceiling = min(1.0, 0.05 * 2**attempt)
        for _ in range(200):
            assert 0.0 <= backoff_delay(attempt, base=0.05, cap=1.0, rng=rng) <= ceiling
    top = MaxRandom()
    assert [backoff_delay(a, base=0.05, cap=1.0, rng=top) for a in range(6)] == [
        0.05,
        0.1,
        0.2,
        0.4,
        0.8,
        1.0,
    ]
    assert backoff_delay(10_000, base=0.05, cap=2.0, rng=top) == 2.0  # no overflow
    assert backoff_delay(3, base=0.0, cap=1.0, rng=top) == 0.0
    with pytest.raises(ValueError):
        backoff_delay(-1, base=0.05, cap=1.0, rng=top)


# -- repair log ---------------------------------------------------------------------------
def test_parse_skips_blank_torn_and_foreign_lines() -> None:
    good = RepairRecord("user:1", "a1", 12.5)
    text = "\n".join(
        [
            good.line().strip(),
            "",
            '{"key": "user:2", "id": "b2", "at": 1}',
            '{"key": "user:3"}',  # written by hand: identified by its text
            '{"key": 4, "id": "x"}',  # not a str key
            "[1, 2]",
            '{"key": "user:5", "id": "c',  # torn by a crash mid-write
        ]
    )
    records = parse_repair_log(text)
    assert [r.key for r in records] == ["user:1", "user:2", "user:3"]
    assert records[0] == good
    assert records[1] == RepairRecord("user:2", "b2", 1.0)
    assert records[2].id == '{"key": "user:3"}'


def test_record_lines_round_trip_any_key() -> None:
    record = RepairRecord('k:ü:"quoted"\n:\udc80', "id1", 3.0)
    line = record.line()
    assert line.endswith("\n") and line.count("\n") == 1
    assert parse_repair_log(line) == [record]


def test_append_read_and_rewrite(tmp_path: Path) -> None:
    path = tmp_path / "repairs.jsonl"
    assert read_repair_log(path) == []
    a, b, c = RepairRecord("a", "1"), RepairRecord("b", "2"), RepairRecord("a", "3")
    append_repair_log(path, [a, b])
    append_repair_log(path, [c])
    assert read_repair_log(path) == [a, b, c]
    assert all(json.loads(line)["key"] for line in path.read_text().splitlines())

    # What we read is [a, b, c]; another process appends d before we rewrite: d stays.
    d = RepairRecord("d", "4")
    append_repair_log(path, [d])
    assert rewrite_repair_log(path, {"1", "2"}) == [c, d]
    assert read_repair_log(path) == [c, d]
    assert rewrite_repair_log(path, {"3", "4"}) == []
    assert path.read_text() == ""
    assert not list(tmp_path.glob(".*tmp"))  # the temporary file was renamed into place


def test_append_after_a_torn_line_keeps_the_new_record_whole(tmp_path: Path) -> None:
    path = tmp_path / "repairs.jsonl"
    path.write_text(RepairRecord("a", "1").line() + '{"key": "b", "i')  # crash mid-line
    append_repair_log(path, [RepairRecord("c", "3")])
    assert [r.key for r in read_repair_log(path)] == ["a", "c"]
    assert [r.key for r in rewrite_repair_log(path, set())] == ["a", "c"]  # torn line dropped
    assert path.read_text().count("\n") == 2


# -- options ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        {"mode": "update"},
        {"on_cache_error": "ignore"},
        {"retry_attempts": -1},
        {"retry_base_delay": 2.0, "retry_max_delay": 1.0},
    ],
)
def test_bad_options_are_refused(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        WriteThrough(SyncClient(), ListStore(), **options)


def test_repair_log_directory_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="directory"):
        WriteThrough(SyncClient(), ListStore(), repair_log=tmp_path / "missing" / "log.jsonl")


def test_store_must_have_the_protocol_methods() -> None:
    with pytest.raises(InvalidArgumentError, match="write_many"):
        WriteThrough(SyncClient(), object())  # type: ignore[arg-type]


def test_async_methods_refuse_a_sync_client_before_writing() -> None:
    store = ListStore()
    wt = WriteThrough(SyncClient(), store)
    coro = wt.awrite("k", 1)
    with pytest.raises(InvalidArgumentError, match=r"WriteThrough\.awrite\(\) needs an async"):
        coro.send(None)
    assert store.items == []


def test_decorator_options_are_checked_at_decoration() -> None:
    with pytest.raises(TypeError, match="unknown options"):
        write_through("user:{user_id}", client=SyncClient(), colour="blue")
    with pytest.raises(ValueError, match="unknown arguments"):

        @write_through("user:{uid}", client=SyncClient())
        def update(user_id: int) -> None: ...

    # on_cache_error is the write-through option here, ttl a policy field.
    @write_through("user:{user_id}", on_cache_error="raise", ttl=9, namespace="app")
    def save(user_id: int) -> None: ...

    assert save.policy.ttl == 9 and save.policy.on_cache_error == "load"
    assert save.key_for(5) == "app:user:5"
    assert save.stats()["writes"] == 0  # no client needed until the first call


def test_cache_inconsistency_error() -> None:
    err = CacheInconsistencyError([f"k{i}" for i in range(7)], attempts=4)
    assert isinstance(err, SmartCacheError)
    assert err.keys == tuple(f"k{i}" for i in range(7)) and err.attempts == 4
    assert "database is written" in str(err) and "repair()" in str(err)
    assert "(+2 more)" in str(err)
    assert repr(InvalidArgumentError("x"))  # redis-py's __repr__ needs error_type


# -- flows stepped by hand ----------------------------------------------------------------
def step(flow: Any, outcomes: list[Any]) -> list[Any]:
    """Run ``flow``, answering each yielded op with the next outcome (thrown if an error).

    Sleeps are skipped; a database call without a scripted error is really made.
    """
    ops = []
    reply: Any = None
    error: BaseException | None = None
    while True:
        try:
            op = flow.send(reply) if error is None else flow.throw(error)
        except StopIteration:
            return ops
        ops.append(op)
        outcome = outcomes.pop(0) if outcomes and not isinstance(op, _Sleep) else None
        reply, error = (None, outcome) if isinstance(outcome, BaseException) else (outcome, None)
        if isinstance(op, _Call) and error is None:
            reply = op.func(*op.args, **op.kwargs)  # the (list) store really runs


def test_set_mode_retries_with_del_then_records(tmp_path: Path) -> None:
    log = tmp_path / "repairs.jsonl"
    store = ListStore()
    wt = WriteThrough(
        SyncClient(),
        store,
        mode="set",
        policy=CachePolicy(ttl=10),
        retry_attempts=2,
        retry_max_delay=0.5,
        repair_log=log,
        rng=MaxRandom(),
    )
    ops = step(wt._write_flow({"k": {"v": 1}}), [[0], None, DOWN, DOWN, DOWN])
    assert isinstance(ops[0], _Leases) and ops[0].items[0][0] == "{k}:wt-lease"
    assert isinstance(ops[1], _Call)
    lease, _token, alone, key, _data, px = ops[2].leased[0]  # set through the lease
    assert (lease, alone, key) == ("{k}:wt-lease", True, "k") and 10_000 <= px <= 10_001
    assert ops[3:] == [_Sleep(0.05), _Redis(("k",)), _Sleep(0.1), _Redis(("k",))]
    assert store.items == [StoreItem("k", {"v": 1})]
    assert wt.pending_repairs() == ["k"] and [r.key for r in read_repair_log(log)] == ["k"]
    assert wt.stats()["cache_errors"] == 1 and wt.stats()["writes"] == 1


def test_a_store_error_never_reaches_the_cache() -> None:
    wt = WriteThrough(SyncClient(), ListStore())
    boom = RuntimeError("db down")
    with pytest.raises(RuntimeError) as err:
        step(wt._write_flow({"k": 1}), [boom])
    assert err.value is boom
    assert wt.stats()["store_errors"] == 1 and wt.pending_repairs() == []


def test_raise_mode_raises_after_recording() -> None:
    wt = WriteThrough(SyncClient(), ListStore(), on_cache_error="raise", retry_attempts=0)
    with pytest.raises(CacheInconsistencyError) as err:
        step(wt._delete_flow(["a", "b"]), [None, DOWN])
    assert err.value.keys == ("a", "b") and err.value.__cause__ is DOWN
    assert wt.pending_repairs() == ["a", "b"] and wt.stats()["deletes"] == 2


def test_an_interrupted_cache_step_is_recorded() -> None:
    wt = WriteThrough(SyncClient(), ListStore())
    with pytest.raises(KeyboardInterrupt):
        step(wt._write_flow({"k": 1}), [None, KeyboardInterrupt()])
    assert wt.pending_repairs() == ["k"]


def test_heal_runs_before_a_write_at_most_once_per_max_delay() -> None:
    now = [100.0]
    wt = WriteThrough(
        SyncClient(), ListStore(), retry_attempts=0, retry_max_delay=1.0, clock=lambda: now[0]
    )
    step(wt._write_flow({"a": 1}), [None, DOWN])
    assert wt.pending_repairs() == ["a"]

    ops = step(wt._write_flow({"b": 1}), [DOWN, None, None])  # heal fails, the write goes on
    assert ops[0] == _Redis(("a",)) and isinstance(ops[1], _Call)
    now[0] += 0.5
    ops = step(wt._write_flow({"c": 1}), [None, None])  # too soon: no heal
    assert isinstance(ops[0], _Call)
    now[0] += 1.0
    ops = step(wt._write_flow({"d": 1}), [1, None, None])
    assert ops[0] == _Redis(("a",))
    assert wt.pending_repairs() == [] and wt.stats()["repaired"] == 1


def test_a_successful_write_heals_its_own_key() -> None:
    wt = WriteThrough(SyncClient(), ListStore(), retry_attempts=0, clock=lambda: 0.0)
    step(wt._write_flow({"k": 1}), [None, DOWN])
    wt._last_heal = 0.0  # no heal now: the write's own DEL does it
    ops = step(wt._write_flow({"k": 2}), [None, 1])
    assert ops[1] == _Redis(("k",)) and wt.pending_repairs() == []


def test_repair_keeps_what_still_fails_and_reads_the_log(tmp_path: Path) -> None:
    log = tmp_path / "repairs.jsonl"
    append_repair_log(log, [RepairRecord("x", "1"), RepairRecord("y", "2")])
    wt = WriteThrough(SyncClient(), ListStore(), retry_attempts=1, repair_log=log)
    assert wt.pending_repairs() == ["x", "y"]
    append_repair_log(log, [RepairRecord("z", "3")])  # another process, after we started
    flow = wt._repair_flow()
    ops = step(flow, [DOWN, DOWN])
    assert ops[0] == _Redis(("x", "y", "z")) and len(ops) == 3
    assert wt.pending_repairs() == ["x", "y", "z"] and len(read_repair_log(log)) == 3

    flow = wt._repair_flow()
    ops = step(flow, [3])
    assert wt.pending_repairs() == [] and read_repair_log(log) == []
    assert wt.stats()["repaired"] == 3
