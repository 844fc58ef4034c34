"""The Sentinel watcher's decisions (core.sentinel_watch), shared by both watchers."""

from __future__ import annotations

import pytest

from smartcache.core.sentinel import WATCHED_CHANNELS, SentinelEvent
from smartcache.core.sentinel_watch import BACKOFF_CAP, BACKOFF_FIRST, WatchPlan, read_message

A = ("10.0.0.1", 26379)
B = ("10.0.0.2", 26379)
C = ("10.0.0.3", 26379)


def test_first_check_is_due_at_once_unless_the_primary_is_known() -> None:
    assert WatchPlan(5.0, 100.0, primary_known=False).check_due(100.0)
    plan = WatchPlan(5.0, 100.0, primary_known=True)
    assert not plan.check_due(104.9)
    assert plan.check_due(105.0)
    plan.checked(106.0)
    assert not plan.check_due(110.9)
    assert plan.check_due(111.0)


def test_subscribe_to_every_sentinel_not_busy_nor_backing_off() -> None:
    plan = WatchPlan(5.0, 0.0, primary_known=True)
    assert plan.to_subscribe([A, B, C], busy={B}, now=1.0) == [A, C]
    plan.failed(C, 1.0, was_subscribed=False)
    assert plan.to_subscribe([A, B, C], busy=set(), now=1.0) == [A, B]
    assert plan.to_subscribe([A, B, C], busy=set(), now=1.0 + BACKOFF_FIRST) == [A, B, C]


def test_backoff_doubles_on_failed_connects_and_starts_over_after_a_break() -> None:
    plan = WatchPlan(60.0, 0.0, primary_known=True)
    delays = [plan.failed(A, 0.0, was_subscribed=False) for _ in range(8)]
    assert delays[:3] == [BACKOFF_FIRST, 2 * BACKOFF_FIRST, 4 * BACKOFF_FIRST]
    assert delays[-1] == BACKOFF_CAP
    assert plan.failed(A, 0.0, was_subscribed=True) == BACKOFF_FIRST


def test_backoff_never_exceeds_the_check_interval_nor_overflows() -> None:
    plan = WatchPlan(0.5, 0.0, primary_known=True)
    for _ in range(5000):  # a sentinel down for hours: no OverflowError
        delay = plan.failed(A, 0.0, was_subscribed=False)
    assert delay == 0.5
    tiny = WatchPlan(0.01, 0.0, primary_known=True)
    assert tiny.failed(A, 0.0, was_subscribed=True) == 0.01


def test_resubscribing_after_a_failure_makes_the_check_due() -> None:
    plan = WatchPlan(5.0, 0.0, primary_known=True)
    assert not plan.subscribed(A)  # first subscription: nothing was missed
    assert not plan.check_due(1.0)
    plan.failed(A, 1.0, was_subscribed=True)
    assert plan.subscribed(A)
    assert plan.check_due(1.0)
    assert not plan.subscribed(A)


def test_wait_until_the_next_duty() -> None:
    plan = WatchPlan(5.0, 0.0, primary_known=True)
    assert plan.wait(set(), 1.0) == 4.0
    plan.failed(A, 1.0, was_subscribed=True)
    assert plan.wait(set(), 1.0) == pytest.approx(BACKOFF_FIRST)
    assert plan.wait({A}, 1.0) == 4.0  # under way already: not a duty
    assert plan.wait(set(), 9.0) == 0.0


def test_read_message() -> None:
    event = read_message([b"message", b"+odown", b"master mymaster 10.0.0.9 6379 #quorum 2/2"], "s")
    assert isinstance(event, SentinelEvent)
    assert event.channel == "+odown"
    assert event.source == "s"
    assert read_message([b"subscribe", b"+odown", len(WATCHED_CHANNELS)], "s") == "subscribed"
    assert read_message([b"subscribe", b"+odown", 1], "s") is None
    assert read_message(b"PONG", "s") is None
    assert read_message([b"message", b"+switch-master", b"mymaster 10.0.0.1"], "s") is None
