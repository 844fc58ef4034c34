"""Redirects as data, and where they point: one resolution for every shell."""

from __future__ import annotations

import pytest
import redis.exceptions as rx

from smartcache.core.redirect import Redirect, resolve_redirect
from smartcache.core.retry import Action, RetryPolicy, decide
from smartcache.wire import parse_error


@pytest.mark.parametrize(
    ("reply", "answered_by", "expected"),
    [
        ("MOVED 3999 :6381", "10.0.0.1:6379", Redirect("MOVED", 3999, "10.0.0.1", 6381)),
        ("MOVED 3999 ?:6381", "10.0.0.1:6379", Redirect("MOVED", 3999, "10.0.0.1", 6381)),
        ("ASK 12 :7002", "node-a.example:7000", Redirect("ASK", 12, "node-a.example", 7002)),
        ("MOVED 1 :7001", "[::1]:7000", Redirect("MOVED", 1, "::1", 7001)),
        ("MOVED 1 :7001", "::1:7000", Redirect("MOVED", 1, "::1", 7001)),
        # A named host is kept, whoever answered.
        ("MOVED 3999 10.0.0.9:6381", "10.0.0.1:6379", Redirect("MOVED", 3999, "10.0.0.9", 6381)),
        # Nobody to take the host from: left empty, never invented.
        ("MOVED 3999 :6381", None, Redirect("MOVED", 3999, "", 6381)),
    ],
)
def test_resolve_redirect(reply: str, answered_by: str | None, expected: Redirect) -> None:
    assert resolve_redirect(parse_error(reply), answered_by) == expected


def test_resolve_redirect_of_other_errors() -> None:
    assert resolve_redirect(parse_error("TRYAGAIN later"), "a:1") is None
    assert resolve_redirect(ValueError("x"), "a:1") is None


def test_redirect_address() -> None:
    assert Redirect("MOVED", 5, "10.0.0.1", 6381).address == "10.0.0.1:6381"


def test_decide_sends_an_empty_host_redirect_to_the_host_that_answered() -> None:
    for error in (rx.MovedError("3999 :6381"), parse_error("MOVED 3999 :6381")):
        decision = decide(
            RetryPolicy(),
            error,
            attempt=0,
            redirects=1,
            elapsed=0.0,
            idempotent=True,
            sent=True,
            answered_by="127.0.0.7:6379",
        )
        assert (decision.action, decision.target, decision.slot) == (
            Action.MOVED,
            "127.0.0.7:6381",
            3999,
        )
