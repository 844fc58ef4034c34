"""Reshard and rebalance plans (pure): who gives which slots to whom."""

from __future__ import annotations

import pytest

from smartcache.exceptions import ConfigurationError
from smartcache.ops._plan import Move, plan_rebalance, plan_reshard

EVEN = {"a": list(range(5461)), "b": list(range(5461, 10923)), "c": list(range(10923, 16384))}


def apply(owners: dict[str, list[int]], moves: list[Move]) -> dict[str, set[int]]:
    out = {n: set(s) for n, s in owners.items()}
    for m in moves:
        assert m.slot in out[m.source], m
        out[m.source].remove(m.slot)
        out[m.target].add(m.slot)
    return out


def test_reshard_takes_lowest_slots_in_proportion() -> None:
    moves = plan_reshard(EVEN, ["a"], "c", 100)
    assert [m.slot for m in moves] == list(range(100))
    assert {(m.source, m.target) for m in moves} == {("a", "c")}
    two = plan_reshard(EVEN, ["a", "b"], "c", 1001)
    assert len(two) == 1001 and len({m.slot for m in two}) == 1001
    per = {s: sum(1 for m in two if m.source == s) for s in "ab"}
    assert abs(per["a"] - per["b"]) <= 1


@pytest.mark.parametrize(
    ("sources", "target", "count", "message"),
    [
        (["a"], "c", 0, "positive"),
        (["a"], "x", 5, "not a primary"),
        (["c"], "c", 5, "no source"),
        (["a"], "c", 6000, "cannot move 6000"),
    ],
)
def test_reshard_refuses_what_cannot_be(
    sources: list[str], target: str, count: int, message: str
) -> None:
    with pytest.raises(ConfigurationError, match=message):
        plan_reshard(EVEN, sources, target, count)


def test_rebalance_by_slots_evens_out_and_leaves_balanced_alone() -> None:
    assert plan_rebalance(EVEN) == []
    skewed = {
        "a": list(range(12000)),
        "b": list(range(12000, 16000)),
        "c": list(range(16000, 16384)),
    }
    after = apply(skewed, plan_rebalance(skewed))
    sizes = sorted(len(s) for s in after.values())
    assert sizes[-1] - sizes[0] <= 2 and sum(sizes) == 16384


def test_rebalance_with_a_zero_weight_empties_a_node() -> None:
    after = apply(EVEN, plan_rebalance(EVEN, node_weights={"c": 0}))
    assert after["c"] == set() and abs(len(after["a"]) - len(after["b"])) <= 2


def test_rebalance_by_memory_moves_heavy_slots_off_the_heavy_node() -> None:
    weights = {s: (100.0 if s < 5461 else 1.0) for s in range(16384)}  # a's slots are heavy
    moves = plan_rebalance(EVEN, weights=weights, threshold=0.1)
    assert moves and all(m.source == "a" for m in moves)
    after = apply(EVEN, moves)
    load = {n: sum(weights[s] for s in slots) for n, slots in after.items()}
    assert max(load.values()) / min(load.values()) < 1.05
