from __future__ import annotations

from typing import Any

import pytest

from smartcache import NoReachableNodeError
from smartcache._slot_routing import SlotRouting
from smartcache.core.refresh import REPROBE_TIMEOUT, AskTopology, Probe, candidates, refresh_flow
from smartcache.core.slotmap import Shard, SlotMap
from smartcache.wire import ConnectionSettings

A, B, C, R = "a:1", "b:1", "c:1", "r:1"
FRESH = SlotMap.from_ranges([(0, 8191, Shard(A, (R,))), (8192, 16383, Shard(B))])
STALE = SlotMap.from_ranges([(0, 16383, Shard(C))])


def no_shuffle(items: list[str]) -> None:
    pass


def drive(flow: Any, answers: dict[str, Any], probes: dict[str, bool]) -> tuple[Any, list[Any]]:
    asked: list[Any] = []
    reply: Any = None
    try:
        while True:
            step = flow.send(reply)
            asked.append(step)
            reply = answers[step.address] if isinstance(step, AskTopology) else probes[step.address]
    except StopIteration as done:
        return done.value, asked


def test_candidates_order_suspects_last() -> None:
    assert candidates(FRESH, ["s:1", A], set(), no_shuffle) == [A, B, R, "s:1"]
    assert candidates(FRESH, [], {A}, no_shuffle) == [B, R, A]
    assert candidates(None, ["s:1"], set(), no_shuffle) == ["s:1"]


def test_majority_view_wins_and_errors_are_skipped() -> None:
    flow = refresh_flow(FRESH, [C], set(), no_shuffle)
    (new_map, cleared), asked = drive(
        flow, {A: STALE, B: FRESH, R: OSError("refused"), C: FRESH}, {}
    )
    assert new_map is FRESH and cleared == set()
    assert [s.address for s in asked] == [A, B, R, C]  # stops after three views


def test_suspects_cleared_when_failed_over_or_answering() -> None:
    flow = refresh_flow(FRESH, [], {C, B, A}, no_shuffle)
    (_, cleared), asked = drive(flow, {R: FRESH, A: FRESH, B: FRESH, C: FRESH}, {A: True, B: False})
    assert cleared == {C, A}  # C serves no slots any more; A answers; B still silent
    assert Probe(C) not in asked


def test_nobody_answers() -> None:
    flow = refresh_flow(None, ["x:1", "y:1"], set(), no_shuffle)
    with pytest.raises(NoReachableNodeError) as err:
        drive(flow, {"x:1": OSError("refused"), "y:1": TimeoutError("slow")}, {})
    assert err.value.addresses == ("x:1", "y:1")
    assert "refused" in str(err.value) and "slow" in str(err.value)


def test_periodic_refresh_is_due_when_the_map_is_older_than_the_interval() -> None:
    from smartcache.core.refresh import periodic_refresh_due

    assert not periodic_refresh_due(last_refresh=100.0, now=120.0, interval=30.0)
    assert periodic_refresh_due(last_refresh=100.0, now=130.0, interval=30.0)
    assert not periodic_refresh_due(last_refresh=0.0, now=1e9, interval=None)  # off


def test_a_suspect_that_left_a_probe_unanswered_is_probed_quickly() -> None:
    flow = refresh_flow(FRESH, [], {A, B}, no_shuffle, unanswered={B})
    (_, cleared), asked = drive(flow, {R: FRESH, A: FRESH, B: FRESH, C: FRESH}, {A: False, B: True})
    assert cleared == {B}  # B recovered: it answers the quick probe
    assert Probe(A, quick=False) in asked  # first probe of A: the full timeout
    assert Probe(B, quick=True) in asked


def test_the_routing_state_probes_an_unanswered_suspect_quickly() -> None:
    settings = ConnectionSettings.from_redis_kwargs(socket_timeout=5.0)
    routing: SlotRouting[str] = SlotRouting(
        settings, [("10.0.0.1", 7000)], pool_factory=lambda s: s.address, discard=lambda p: None
    )
    routing.install(FRESH, ())
    routing.mark_suspect(A)
    first = next(s for s in _steps(routing) if isinstance(s, Probe))
    assert first == Probe(A, quick=False)
    assert routing.probe_settings(A, first.quick).socket_timeout == 1.0  # PROBE_TIMEOUT
    routing.probed(A, answered=False)
    again = next(s for s in _steps(routing) if isinstance(s, Probe))
    assert again == Probe(A, quick=True)
    assert routing.probe_settings(A, again.quick).socket_timeout == REPROBE_TIMEOUT
    routing.install(FRESH, {A})  # cleared: a later suspicion starts with a full probe
    routing.mark_suspect(A)
    assert next(s for s in _steps(routing) if isinstance(s, Probe)) == Probe(A, quick=False)


def _steps(routing: Any) -> list[Any]:
    """The steps of ``routing``'s refresh flow, every node answering FRESH and no probe."""
    flow, steps, answer = routing.refresh_steps(), [], None
    try:
        while True:
            step = flow.send(answer)
            steps.append(step)
            answer = FRESH if isinstance(step, AskTopology) else False
    except StopIteration:
        return steps
