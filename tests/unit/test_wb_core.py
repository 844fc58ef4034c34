"""The I/O-free write-behind core: layout, coalescing, and flush rounds driven by hand."""

from __future__ import annotations

import json
from collections.abc import Generator
from typing import Any

import pytest

from smartcache.cache._store import StoreItem, stream_version
from smartcache.cache._wb_core import (
    ACK_SCRIPT,
    DEAD_SCRIPT,
    FlushOptions,
    FlushState,
    QueueLayout,
    RedisBatch,
    RoundResult,
    StoreCall,
    StorePing,
    coalesce,
    flush_round,
)
from smartcache.core.slots import SLOT_COUNT, key_slot
from smartcache.exceptions import InvalidArgumentError


def test_partition_tags_spread_evenly_over_the_slot_space() -> None:
    layout = QueueLayout("orders", partitions=16)
    slots = [key_slot(layout.stream(p)) for p in range(16)]
    assert [s * 16 // SLOT_COUNT for s in slots] == list(range(16))
    # the same tags in every process (no hash() salt)
    assert QueueLayout("orders", partitions=16).tags == layout.tags


def test_a_key_its_stream_dead_letters_and_attempts_share_one_slot() -> None:
    layout = QueueLayout(partitions=8)
    for i in range(200):
        key = f"user:{i}"
        p = layout.partition_of(key)
        slot = key_slot(layout.cache_key(key))
        assert slot == key_slot(layout.stream(p)) == key_slot(layout.dead(p))
        assert slot == key_slot(layout.attempts(p))
    assert layout.partition_of("user:1") == QueueLayout(partitions=8).partition_of("user:1")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "a{b"}, "no braces"),
        ({"namespace": ""}, "namespace"),
        ({"partitions": 0}, "partitions=0"),
        ({"partitions": 5000}, "partitions=5000"),
    ],
)
def test_layout_refuses_bad_input(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        QueueLayout(**kwargs)


def test_options_refuse_bad_input_and_derive_the_claim_interval() -> None:
    with pytest.raises(InvalidArgumentError):
        FlushOptions(batch_size=0)
    with pytest.raises(InvalidArgumentError):
        FlushOptions(claim_idle=0)
    assert FlushOptions(claim_idle=1).claim_every == 0.5
    assert FlushOptions(claim_idle=60).claim_every == 5.0
    assert FlushOptions(claim_interval=2).claim_every == 2


def test_stream_versions_sort_in_stream_order() -> None:
    ids = ["1700000000000-0", "1700000000000-2", "1700000000000-10", "1700000000001-0"]
    versions = [stream_version(i) for i in ids]
    assert versions == sorted(versions)
    assert stream_version(b"5-1") == stream_version("5-1")


def _f(key: str, value: Any = None, op: str = "s") -> dict[str, Any]:
    fields: dict[str, Any] = {"op": op.encode(), "k": key.encode()}
    if op == "s":
        fields["v"] = json.dumps(value).encode()
        fields["px"] = b"5000"
    return fields


def test_coalesce_keeps_the_last_change_per_key_by_stream_order() -> None:
    changes = coalesce(
        [
            (0, "5-0", _f("a", 2)),
            (0, "1-0", _f("a", 1)),
            (1, "2-0", _f("b", 1)),
            (0, "7-0", _f("a", op="d")),
            (1, "3-0", _f("b", 2)),
        ]
    )
    by_key = {c.key: c for c in changes}
    assert by_key["a"].entry_id == "7-0" and by_key["a"].op == "d"
    assert by_key["a"].superseded == ["1-0", "5-0"]
    assert by_key["b"].entry_id == "3-0" and by_key["b"].superseded == ["2-0"]


def test_coalesce_keeps_equal_ids_of_different_partitions_apart() -> None:
    # IDs are per stream: two partitions can both hold "9-0"
    changes = coalesce([(0, "9-0", _f("a", 1)), (1, "9-0", _f("b", 1)), (0, "9-0", _f("a", 1))])
    assert sorted(c.key for c in changes) == ["a", "b"]


def test_coalesce_flags_malformed_entries() -> None:
    (change,) = coalesce([(0, "1-0", {"op": b"x", "k": b"a"})])
    assert change.error is not None and "malformed" in change.error


class Script:
    """Drives a flush round, answering each effect from a handler; records the effects."""

    def __init__(self, handler: Any) -> None:
        self.handler = handler
        self.effects: list[Any] = []

    def run(self, gen: Generator[Any, Any, RoundResult]) -> RoundResult:
        reply: Any = None
        try:
            effect = next(gen)
            while True:
                self.effects.append(effect)
                reply = self.handler(effect)
                effect = gen.send(reply)
        except StopIteration as stop:
            result: RoundResult = stop.value
            return result


def _reads(entries_by_partition: dict[int, list[tuple[str, dict[str, Any]]]], layout: QueueLayout):  # type: ignore[no-untyped-def]
    def answer(command: tuple[Any, ...]) -> Any:
        name = command[0]
        if name == "XGROUP":
            return True
        if name == "XAUTOCLAIM":
            return ["0-0", [], []]
        if name == "XREADGROUP":
            stream, start = command[-2], command[-1]
            p = next(i for i in range(layout.partitions) if layout.stream(i) == stream)
            entries = entries_by_partition.get(p, []) if start == ">" else []
            return [[stream, entries]] if entries else []
        if name == "EVAL":
            return 1
        if name == "HINCRBY":
            return answer.attempts  # type: ignore[attr-defined]
        raise AssertionError(command)

    answer.attempts = 1  # type: ignore[attr-defined]
    return answer


def _round(layout: QueueLayout, options: FlushOptions, state: FlushState) -> Any:
    return flush_round(layout, options, state, json.loads, now_ms=1_000_000.0)


def test_a_round_writes_the_coalesced_batch_then_acknowledges_it() -> None:
    layout = QueueLayout(partitions=2)
    entries = {0: [("1-0", _f("a", 1)), ("2-0", _f("a", 2))], 1: [("1-0", _f("b", 9))]}
    answer = _reads(entries, layout)
    stored: list[StoreCall] = []

    def handler(effect: Any) -> Any:
        if isinstance(effect, RedisBatch):
            return [answer(c) for c in effect.commands]
        if isinstance(effect, StoreCall):
            stored.append(effect)
            return None
        raise AssertionError(effect)

    script = Script(handler)
    result = script.run(_round(layout, FlushOptions(), FlushState()))
    (call,) = stored
    assert call.op == "write"
    assert sorted((i.key, i.value) for i in call.items) == [("a", 2), ("b", 9)]
    assert {i.key: i.version for i in call.items}["a"] == stream_version("2-0")
    acks = [c for c in script.effects[-1].commands if c[1] == ACK_SCRIPT]

    def acked(command: tuple[Any, ...]) -> tuple[tuple[Any, ...], tuple[Any, ...], Any]:
        """(each change's (cache key, id, unpin action), superseded ids, top id)."""
        nkeys = int(command[2])
        cache_keys = command[6 : 3 + nkeys]
        args = command[3 + nkeys :]
        m = int(args[1])
        ids, actions = args[3 : 3 + m], args[3 + m : 3 + 2 * m]
        return tuple(zip(cache_keys, ids, actions, strict=True)), tuple(args[3 + 2 * m :]), args[2]

    a, b = sorted((acked(c) for c in acks), key=lambda x: x[0][0][1])
    # each key's last change is acknowledged and ends its pin; the superseded one rides along
    assert a == (((layout.cache_key_in(1, "b"), "1-0", b"5000"),), (), "1-0")
    assert b == (((layout.cache_key_in(0, "a"), "2-0", b"5000"),), ("1-0",), "2-0")
    assert result.applied == 2 and result.acked == 3 and not result.stalled


def test_an_outage_counts_no_attempt_and_acknowledges_nothing() -> None:
    layout = QueueLayout(partitions=1)
    answer = _reads({0: [("1-0", _f("a", 1)), ("2-0", _f("b", 2))]}, layout)
    commands: list[tuple[Any, ...]] = []

    def handler(effect: Any) -> Any:
        if isinstance(effect, RedisBatch):
            commands.extend(effect.commands)
            return [answer(c) for c in effect.commands]
        if isinstance(effect, StoreCall):
            return ConnectionError("database down")
        assert isinstance(effect, StorePing)
        return False  # the store does not answer

    state = FlushState()
    result = Script(handler).run(_round(layout, FlushOptions(), state))
    assert result.stalled and result.failed == 2 and result.dead == 0
    assert not [c for c in commands if c[0] in ("HINCRBY", "EVAL")]
    assert state.own_pending == {0}  # next round re-reads its own pending entries


def test_a_rejected_entry_counts_attempts_and_goes_to_dead_letters_at_the_limit() -> None:
    layout = QueueLayout(partitions=1)
    answer = _reads({0: [("1-0", _f("bad", 1)), ("2-0", _f("good", 2))]}, layout)
    answer.attempts = 3  # type: ignore[attr-defined]
    commands: list[tuple[Any, ...]] = []

    def handler(effect: Any) -> Any:
        if isinstance(effect, RedisBatch):
            commands.extend(effect.commands)
            return [answer(c) for c in effect.commands]
        if isinstance(effect, StoreCall):
            if any(i.key == "bad" for i in effect.items):
                return ValueError("rejected")
            return None
        raise AssertionError("the store proved itself up: no ping needed")

    result = Script(handler).run(_round(layout, FlushOptions(max_attempts=3), FlushState()))
    assert ("HINCRBY", layout.attempts(0), "1-0", 1) in commands
    (dead,) = [c for c in commands if c[1] == DEAD_SCRIPT]
    assert dead[9:12] == ("1-0", "bad", "s") and "rejected" in dead[13]
    assert result.applied == 1 and result.dead == 1 and result.failed == 0


def test_a_lone_failing_entry_counts_only_while_the_store_answers_ping() -> None:
    layout = QueueLayout(partitions=1)
    for ping, counted in ((True, True), (False, False), (None, False)):
        answer = _reads({0: [("1-0", _f("bad", 1))]}, layout)
        commands: list[tuple[Any, ...]] = []

        def handler(
            effect: Any, ping: Any = ping, commands: Any = commands, answer: Any = answer
        ) -> Any:
            if isinstance(effect, RedisBatch):
                commands.extend(effect.commands)
                return [answer(c) for c in effect.commands]
            if isinstance(effect, StoreCall):
                return ValueError("rejected")
            return ping

        Script(handler).run(_round(layout, FlushOptions(), FlushState()))
        assert any(c[0] == "HINCRBY" for c in commands) is counted, ping


def test_undecodable_values_go_straight_to_dead_letters() -> None:
    layout = QueueLayout(partitions=1)
    answer = _reads({0: [("1-0", {"op": b"s", "k": b"a", "v": b"{not json"})]}, layout)
    commands: list[tuple[Any, ...]] = []

    def handler(effect: Any) -> Any:
        if isinstance(effect, RedisBatch):
            commands.extend(effect.commands)
            return [answer(c) for c in effect.commands]
        raise AssertionError(effect)  # the store is never asked

    result = Script(handler).run(_round(layout, FlushOptions(), FlushState()))
    assert result.dead == 1
    assert any(c[1] == DEAD_SCRIPT and "cannot decode" in c[13] for c in commands)


def test_a_redis_error_ends_the_round_and_nogroup_recreates_groups() -> None:
    layout = QueueLayout(partitions=1)
    state = FlushState(groups_ready=True)

    def handler(effect: Any) -> Any:
        return [ConnectionError("NOGROUP No such consumer group")] * len(effect.commands)

    result = Script(handler).run(_round(layout, FlushOptions(), state))
    assert result.redis_error is not None and result.stalled
    assert state.groups_ready is False


def test_store_items_are_plain_values() -> None:
    item = StoreItem("k", {"a": 1}, "v")
    assert (item.key, item.value, item.version) == ("k", {"a": 1}, "v")


def test_a_partly_failed_read_remembers_what_it_was_given() -> None:
    layout = QueueLayout(partitions=2)
    answer = _reads({0: [("1-0", _f("a", 1))]}, layout)

    def handler(effect: Any) -> Any:
        replies = []
        for command in effect.commands:
            if command[0] == "XREADGROUP" and command[-2] == layout.stream(1):
                replies.append(ConnectionError("node down"))
            else:
                replies.append(answer(command))
        return replies

    state = FlushState(groups_ready=True)
    result = Script(handler).run(_round(layout, FlushOptions(), state))
    assert result.redis_error is not None and result.read == 0
    assert state.own_pending == {0}  # partition 0's entry is re-read from the PEL next round


@pytest.mark.parametrize(
    "entry_id", ["1700000000000-3", "0-0", "5-18446744073709551615", "123", b"17-2", "0005-07"]
)
def test_stream_versions_are_the_ids_zero_padded(entry_id: Any) -> None:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    assert stream_version(entry_id) == f"{int(ms):015d}-{int(seq or 0):020d}"


def test_coalesce_takes_entries_in_any_order_and_counts_a_repeated_one_once() -> None:
    entries = [(0, "7-0", _f("a", 3)), (0, "5-0", _f("a", 2)), (0, "7-0", _f("a", 3))]
    entries += [(0, "9-0", _f("a", op="d")), (0, "5-0", _f("a", 2)), (0, "1-0", _f("a", 1))]
    (change,) = coalesce(entries)
    assert change.entry_id == "9-0" and change.op == "d" and change.unpin == "d"
    assert sorted(change.superseded) == ["1-0", "5-0", "7-0"]


def test_coalesce_orders_a_replayed_dead_letter_by_its_original_version() -> None:
    replayed = {**_f("a", 1), "ver": stream_version("3-0").encode()}
    (change,) = coalesce([(0, "5-0", _f("a", 2)), (0, "8-0", replayed)])
    assert change.entry_id == "5-0" and change.superseded == ["8-0"]
    (change,) = coalesce([(0, "2-0", _f("a", 2)), (0, "8-0", replayed)])
    assert change.entry_id == "8-0" and change.version == stream_version("3-0")


def test_coalesce_reads_decoded_field_names_and_keeps_malformed_entries_apart() -> None:
    decoded = {"op": "s", "k": "a", "v": "1", "px": "900"}  # a decode_responses client
    (change,) = coalesce([(0, "1-0", decoded)])
    assert (change.key, change.raw_value, change.unpin) == ("a", b"1", "900")
    bad = coalesce([(0, "1-0", {b"op": b"s"}), (1, "1-0", {b"op": b"s"})])
    assert [c.partition for c in bad] == [0, 1] and all(c.error for c in bad)


def test_written_items_carry_the_queued_bytes_when_the_serializer_is_a_built_in_one() -> None:
    layout = QueueLayout(partitions=1)
    for serializer in ("json", None):
        answer = _reads({0: [("1-0", _f("a", {"n": 1})), ("2-0", _f("b", op="d"))]}, layout)
        stored: list[StoreCall] = []

        def handler(effect: Any, answer: Any = answer, stored: Any = stored) -> Any:
            if isinstance(effect, StoreCall):
                stored.append(effect)
                return None
            return [answer(c) for c in effect.commands]

        Script(handler).run(
            flush_round(
                layout, FlushOptions(), FlushState(), json.loads, 1e6, serializer=serializer
            )
        )
        write, delete = stored
        (item,) = write.items
        assert item.value == {"n": 1} and item.serializer == serializer
        assert item.encoded == (b'{"n": 1}' if serializer else None)
        assert delete.items[0].encoded is None and delete.items[0].serializer is None


@pytest.mark.parametrize("evidence", ["a later item", "ping"])
def test_failures_while_the_store_was_down_count_nothing_when_it_comes_back(
    evidence: str,
) -> None:
    # the database comes back in the middle of a round: items that failed before it did are
    # tried again once it proved itself up, not counted (max_attempts=1 would dead-letter
    # them at once)
    layout = QueueLayout(partitions=1)
    answer = _reads({0: [("1-0", _f("a", 1)), ("2-0", _f("b", 2))]}, layout)
    commands: list[tuple[Any, ...]] = []
    calls: list[tuple[str, ...]] = []
    down = [True]

    def handler(effect: Any) -> Any:
        if isinstance(effect, RedisBatch):
            commands.extend(effect.commands)
            return [answer(c) for c in effect.commands]
        if isinstance(effect, StorePing):
            down[0] = False  # back just before the ping
            return True
        calls.append(tuple(i.key for i in effect.items))
        if evidence == "a later item" and calls == [("a", "b"), ("a",)]:
            down[0] = False  # back after the first single call failed
            return ConnectionError("database unreachable")
        return ConnectionError("database unreachable") if down[0] else None

    result = Script(handler).run(_round(layout, FlushOptions(max_attempts=1), FlushState()))
    assert result.applied == 2 and result.dead == 0 and result.failed == 0
    assert not [c for c in commands if c[0] == "HINCRBY" or c[1] == DEAD_SCRIPT]
    assert calls.count(("a",)) == 2  # its early failure was tried again once the store was up
