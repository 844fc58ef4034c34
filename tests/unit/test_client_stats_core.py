"""The counters behind ``client.stats()`` and the topology log, without a server."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import redis.exceptions as rx

from smartcache._slot_routing import SlotRouting
from smartcache.core.retry import Action, AwaitingTopology, Decision
from smartcache.core.slotmap import Shard, SlotMap
from smartcache.core.stats import Counters, retry_reason
from smartcache.wire import ConnectionSettings


@pytest.mark.parametrize(
    ("error", "label"),
    [
        (rx.TryAgainError("TRYAGAIN"), "TRYAGAIN"),
        (rx.ClusterDownError("CLUSTERDOWN"), "CLUSTERDOWN"),
        (rx.BusyLoadingError("LOADING"), "LOADING"),
        (rx.ReadOnlyError("READONLY"), "READONLY"),
        (rx.TimeoutError("t"), "timeout"),
        (rx.ConnectionError("c"), "connection"),
        (ConnectionResetError(), "connection"),
        (AwaitingTopology(), "node_suspected"),
        (rx.ResponseError("MASTERDOWN Link with MASTER is down"), "MASTERDOWN"),
        (rx.ResponseError("ODD thing"), "ResponseError"),
    ],
)
def test_retry_reasons(error: BaseException, label: str) -> None:
    assert retry_reason(error) == label


def test_decisions_are_counted_by_kind() -> None:
    c = Counters()
    c.decided(Decision(Action.MOVED, target="a:1", slot=3), rx.ResponseError("MOVED"))
    c.decided(Decision(Action.ASK, target="a:1"), rx.ResponseError("ASK"))
    c.decided(Decision(Action.RETRY, delay=0.1), rx.TryAgainError("TRYAGAIN"))
    c.decided(Decision(Action.RETRY, delay=0.1), rx.TryAgainError("TRYAGAIN"))
    c.decided(Decision(Action.RAISE, ambiguous=True), rx.TimeoutError("t"))
    c.decided(Decision(Action.RAISE), rx.ResponseError("WRONGTYPE"))  # not counted
    s = c.snapshot()
    assert (s.moved, s.ask, s.retries, s.ambiguous) == (1, 1, {"TRYAGAIN": 2}, 1)
    s.retries["TRYAGAIN"] = 99  # a copy
    assert c.snapshot().retries == {"TRYAGAIN": 2}


def _routing() -> SlotRouting[Any]:
    return SlotRouting(
        ConnectionSettings(),
        [("127.0.0.1", 7000)],
        pool_factory=lambda settings: object(),
        discard=lambda pool: None,
    )


def _map(*primaries: str) -> SlotMap:
    step = 16384 // len(primaries)
    ranges = []
    for i, p in enumerate(primaries):
        hi = 16383 if i == len(primaries) - 1 else (i + 1) * step - 1
        ranges.append((i * step, hi, Shard(p)))
    return SlotMap.from_ranges(ranges)


def test_refreshes_are_counted_by_cause_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="smartcache.topology")
    r = _routing()
    r.install(_map("a:1", "b:1"), ())
    r.install(_map("a:1", "b:1"), ())  # periodic, nothing changed: DEBUG
    r.request_refresh("moved")
    r.install(_map("a:1", "c:1"), ())  # b left, c came
    s = r.counters.snapshot()
    assert s.refreshes == {"startup": 1, "periodic": 1, "moved": 1}
    assert (s.nodes_added, s.nodes_removed) == (1, 1)
    lines = [(rec.levelno, rec.getMessage()) for rec in caplog.records]
    assert lines == [
        (logging.INFO, "smartcache cluster.refresh cause=startup primaries=2 nodes=2"),
        (logging.DEBUG, "smartcache cluster.refresh cause=periodic primaries=2 nodes=2"),
        (logging.INFO, "smartcache cluster.refresh cause=moved primaries=2 nodes=2"),
        (logging.INFO, "smartcache cluster.node_added address=c:1"),
        (logging.INFO, "smartcache cluster.node_removed address=b:1"),
    ]
    assert caplog.records[3].smartcache == {"event": "cluster.node_added", "address": "c:1"}  # type: ignore[attr-defined]
