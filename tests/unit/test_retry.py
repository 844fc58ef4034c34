from __future__ import annotations

import pytest
import redis.exceptions as rx
from tenacity import stop_after_attempt, stop_after_delay, wait_fixed

from smartcache.core.retry import (
    Action,
    RetryPolicy,
    decide,
    is_credentials_refusal,
    is_network_failure,
)

POLICY = RetryPolicy(stop=stop_after_attempt(3) | stop_after_delay(5), wait=wait_fixed(0.1))


def d(error: BaseException, **kw: object):  # type: ignore[no-untyped-def]
    args = {"attempt": 1, "redirects": 0, "elapsed": 0.0, "idempotent": True, "sent": True}
    args.update(kw)
    return decide(POLICY, error, **args)  # type: ignore[arg-type]


def test_moved_and_ask() -> None:
    moved = d(rx.MovedError("3999 127.0.0.1:6381"))
    assert (moved.action, moved.target, moved.slot, moved.refresh) == (
        Action.MOVED,
        "127.0.0.1:6381",
        3999,
        True,
    )
    ask = d(rx.AskError("12 10.0.0.1:7000"))
    assert (ask.action, ask.target, ask.slot, ask.refresh) == (
        Action.ASK,
        "10.0.0.1:7000",
        12,
        False,
    )


def test_redirect_budget() -> None:
    assert d(rx.MovedError("1 h:1"), redirects=16).action is Action.RAISE
    assert d(rx.MovedError("1 h:1"), elapsed=6.0).action is Action.RAISE


@pytest.mark.parametrize(
    "error",
    [
        rx.TryAgainError("x"),
        rx.ClusterDownError("x"),
        rx.BusyLoadingError("x"),
        rx.MasterDownError("x"),
        rx.ReadOnlyError("x"),
    ],
)
def test_backoff_errors_retry_with_refresh(error: BaseException) -> None:
    dec = d(error)
    assert dec.action is Action.RETRY and dec.refresh and dec.delay == pytest.approx(0.1)
    assert d(error, attempt=3).action is Action.RAISE  # attempts exhausted
    assert d(error, elapsed=5.5).action is Action.RAISE  # deadline passed


def test_connection_errors_and_idempotency() -> None:
    err = rx.ConnectionError("reset")
    assert d(err, sent=False, idempotent=False).action is Action.RETRY
    assert d(err, sent=True, idempotent=True).action is Action.RETRY
    ambiguous = d(err, sent=True, idempotent=False)
    assert ambiguous.action is Action.RAISE and ambiguous.ambiguous
    opt_in = RetryPolicy(stop=stop_after_attempt(3), wait=wait_fixed(0), retry_non_idempotent=True)
    assert (
        decide(opt_in, err, attempt=1, redirects=0, elapsed=0, idempotent=False, sent=True).action
        is Action.RETRY
    )
    assert d(rx.TimeoutError("t"), sent=True, idempotent=False).ambiguous


def test_other_errors_raise() -> None:
    assert d(rx.ResponseError("WRONGTYPE")).action is Action.RAISE
    assert d(ValueError("x")).action is Action.RAISE


def test_default_policy_is_bounded_with_jitter() -> None:
    p = RetryPolicy()
    delays = {p.backoff(3, 0.1) for _ in range(50)}
    assert len(delays) > 1 and all(0.2 <= x <= 0.3 for x in delays)
    assert (
        p.should_stop(16, 0.0)
        and not p.should_stop(15, 0.0)
        and p.should_stop(1, 10.5)
        and not p.should_stop(1, 0.0)
    )


def test_awaiting_topology_polls_until_the_deadline() -> None:
    from smartcache.core.retry import AwaitingTopology

    policy = RetryPolicy(stop=stop_after_attempt(2) | stop_after_delay(5), topology_poll=0.2)
    dec = decide(
        policy,
        AwaitingTopology(),
        attempt=50,
        redirects=0,
        elapsed=1.0,
        idempotent=False,
        sent=False,
    )
    assert dec.action is Action.RETRY and dec.delay == 0.2 and dec.refresh
    late = decide(
        policy, AwaitingTopology(), attempt=0, redirects=0, elapsed=5.1, idempotent=True, sent=False
    )
    assert late.action is Action.RAISE


def test_readonly_is_retried_only_where_a_retry_can_reach_another_node() -> None:
    # Cluster / Sentinel: the map or the primary may change; retrying is worth it.
    assert d(rx.ReadOnlyError("x")).action is Action.RETRY
    # One fixed server (a client given a replica's address): the same replica would
    # refuse again, so the error goes to the caller at once, not after the whole budget.
    assert d(rx.ReadOnlyError("x"), reroutable=False).action is Action.RAISE
    # Errors a single server recovers from by itself are still retried there.
    assert d(rx.BusyLoadingError("x"), reroutable=False).action is Action.RETRY
    assert d(rx.MasterDownError("x"), reroutable=False).action is Action.RETRY


@pytest.mark.parametrize(
    "error",
    [
        rx.AuthenticationError("invalid username-password pair or user is disabled."),
        rx.AuthenticationError("Authentication required."),
        rx.AuthorizationError("NOPERM"),
    ],
)
def test_credentials_refusals_raise_at_once(error: rx.RedisError) -> None:
    # redis-py files them under ConnectionError, but they are the server's answer
    assert isinstance(error, rx.ConnectionError)
    for sent in (True, False):
        decision = d(error, sent=sent)
        assert (decision.action, decision.ambiguous) == (Action.RAISE, False)
    assert not is_network_failure(error) and is_credentials_refusal(error)
    assert is_network_failure(rx.ConnectionError("reset")) and is_network_failure(OSError())


# -- the one rule for "may this be sent again" -------------------------------------------------
def test_may_resend_and_request_written() -> None:
    from smartcache.core.retry import may_resend, request_written

    plain, opted = RetryPolicy(), RetryPolicy(retry_non_idempotent=True)
    assert may_resend(plain, idempotent=False, sent=False)
    assert may_resend(plain, idempotent=True, sent=True)
    assert not may_resend(plain, idempotent=False, sent=True)
    assert may_resend(opted, idempotent=False, sent=True)
    unknown = rx.ConnectionError("lost")
    assert request_written(unknown)  # unknown counts as written
    unknown.request_sent = False  # type: ignore[attr-defined]
    assert not request_written(unknown)


@pytest.mark.parametrize("retry_non_idempotent", [False, True])
@pytest.mark.parametrize("sent", [False, True])
@pytest.mark.parametrize("command", [("INCR", "k"), ("GET", "k"), ("SET", "k", "v")])
def test_a_pipeline_loss_decides_as_a_single_command(
    command: tuple[str, ...], sent: bool, retry_non_idempotent: bool
) -> None:
    """A pipeline's lost commands are re-run or reported exactly where a single command
    would be retried or raised as ambiguous: both ask ``may_resend``."""
    from smartcache.core.commands import CommandTable
    from smartcache.core.pipeline import after_loss
    from smartcache.exceptions import AmbiguousCommandError

    policy = RetryPolicy(retry_non_idempotent=retry_non_idempotent)
    table = CommandTable.fallback()
    (verdict,) = after_loss(policy, table, [command], sent=sent)
    single = decide(
        policy,
        rx.ConnectionError("lost"),
        attempt=1,
        redirects=0,
        elapsed=0.0,
        idempotent=table.is_idempotent(command),
        sent=sent,
    )
    assert (verdict is None) == (single.action is Action.RETRY)
    assert isinstance(verdict, AmbiguousCommandError) == single.ambiguous


def test_failed_attempt_says_whether_the_request_may_have_run() -> None:
    from smartcache.core.flow import failed_attempt
    from smartcache.exceptions import SmartConnectionError

    refused = failed_attempt(rx.ResponseError("WRONGTYPE"), "h:1")
    assert refused.sent is True and refused.address == "h:1"  # the server answered it
    unsent = failed_attempt(SmartConnectionError("down", request_sent=False), "h:1")
    assert unsent.sent is False
    assert failed_attempt(rx.TimeoutError("t"), None).sent is True  # unknown: maybe ran
