from __future__ import annotations

import pytest

from smartcache.core.slotmap import Shard, SlotMap, choose_view, parse_address

A, B, C, R1 = "10.0.0.1:7000", "10.0.0.2:7001", "10.0.0.3:7002", "10.0.0.4:7003"


def three_shards() -> SlotMap:
    return SlotMap.from_ranges(
        [(0, 5460, Shard(A, (R1,))), (5461, 10922, Shard(B)), (10923, 16383, Shard(C))]
    )


def test_lookup_and_coverage() -> None:
    m = three_shards()
    assert m.primary_for_slot(0) == A and m.primary_for_slot(5461) == B
    assert m.shard_for_slot(16383) == Shard(C)
    assert m.covered == 16384
    assert m.primaries == (A, B, C)
    assert m.nodes == (A, B, C, R1)
    assert m.slots_of(B)[:2] == [5461, 5462] and len(m.slots_of(B)) == 5462


def test_first_slot_of() -> None:
    m = three_shards()
    assert [m.first_slot_of(p) for p in (A, B, C)] == [0, 5461, 10923]
    assert m.first_slot_of(R1) is None and m.first_slot_of("10.9.9.9:1") is None
    assert m.with_moved(0, B).first_slot_of(A) == 1


def test_uncovered_slots() -> None:
    m = SlotMap.from_ranges([(0, 99, Shard(A))])
    assert m.primary_for_slot(100) is None and m.shard_for_slot(100) is None
    assert m.covered == 100


def test_moved_returns_new_map_and_keeps_old() -> None:
    m = three_shards()
    m2 = m.with_moved(5, B)
    assert m.primary_for_slot(5) == A and m2.primary_for_slot(5) == B
    assert m2.primary_for_slot(6) == A
    assert m.with_moved(5, A) is m


def test_moved_to_promoted_replica_and_unknown_node() -> None:
    m = three_shards().with_moved(7, R1)
    assert m.primary_for_slot(7) == R1
    assert m.shard_for_slot(7) == Shard(R1)
    m3 = m.with_moved(8, "10.9.9.9:1")
    assert m3.primary_for_slot(8) == "10.9.9.9:1"


def test_from_cluster_shards_resp2_and_resp3() -> None:
    resp2 = [
        [
            b"slots",
            [0, 8191],
            b"nodes",
            [
                [
                    b"id",
                    b"x",
                    b"port",
                    7000,
                    b"ip",
                    b"127.0.0.1",
                    b"endpoint",
                    b"127.0.0.1",
                    b"role",
                    b"master",
                    b"health",
                    b"online",
                ],
                [
                    b"id",
                    b"y",
                    b"port",
                    7003,
                    b"ip",
                    b"127.0.0.1",
                    b"endpoint",
                    b"127.0.0.1",
                    b"role",
                    b"replica",
                    b"health",
                    b"online",
                ],
                [
                    b"id",
                    b"z",
                    b"port",
                    7004,
                    b"ip",
                    b"127.0.0.1",
                    b"endpoint",
                    b"127.0.0.1",
                    b"role",
                    b"replica",
                    b"health",
                    b"fail",
                ],
            ],
        ],
        [
            b"slots",
            [8192, 9000, 9001, 16383],
            b"nodes",
            [
                [b"port", 7001, b"ip", b"", b"endpoint", b"", b"role", b"master"],
            ],
        ],
        [b"slots", [], b"nodes", [[b"port", 7005, b"endpoint", b"h", b"role", b"master"]]],
    ]
    m = SlotMap.from_cluster_shards(resp2, "127.0.0.9")
    assert m.shard_for_slot(0) == Shard("127.0.0.1:7000", ("127.0.0.1:7003",))
    assert m.primary_for_slot(16383) == "127.0.0.9:7001"
    assert m.covered == 16384 and len(m.shards) == 2
    resp3 = [{"slots": [0, 16383], "nodes": [{"port": 1, "endpoint": "h", "role": "master"}]}]
    assert SlotMap.from_cluster_shards(resp3, "x").primary_for_slot(3) == "h:1"


def test_from_cluster_slots() -> None:
    reply = [
        [0, 100, [b"127.0.0.1", 7000, b"id1"], [b"127.0.0.1", 7003, b"id2"]],
        [101, 16383, [b"", 7001, b"id3"]],
    ]
    m = SlotMap.from_cluster_slots(reply, "10.1.1.1")
    assert m.shard_for_slot(50) == Shard("127.0.0.1:7000", ("127.0.0.1:7003",))
    assert m.primary_for_slot(101) == "10.1.1.1:7001"


def test_choose_view_prefers_majority_over_lone_stale_view() -> None:
    fresh = three_shards().with_moved(1, B)
    stale = three_shards()
    assert choose_view([stale, fresh, fresh]) is fresh
    assert choose_view([fresh, stale, stale]) is stale
    partial = SlotMap.from_ranges([(0, 10, Shard(A))])
    assert choose_view([partial, stale]) is stale  # tie: more coverage wins
    with pytest.raises(ValueError):
        choose_view([])


def test_bad_ranges() -> None:
    with pytest.raises(ValueError):
        SlotMap.from_ranges([(10, 16384, Shard(A))])


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:7000", ("127.0.0.1", 7000)),
        ("::1:7000", ("::1", 7000)),
        ("[::1]:7000", ("::1", 7000)),
        ("redis-0.svc:6379", ("redis-0.svc", 6379)),
    ],
)
def test_parse_address(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected
