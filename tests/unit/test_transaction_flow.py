"""transaction_flow: a cluster MULTI/EXEC through MOVED, ASK and TRYAGAIN, without a server."""

from __future__ import annotations

from typing import Any

import redis.exceptions as rx
from tenacity import stop_after_attempt, stop_after_delay, wait_fixed

from smartcache.core.flow import ApplyMoved, Attempt, Outcome, RequestRefresh, Sleep
from smartcache.core.pipeline import transaction_flow, transaction_refusal
from smartcache.core.retry import RetryPolicy
from smartcache.wire import parse_error

POLICY = RetryPolicy(stop=stop_after_attempt(3) | stop_after_delay(10), wait=wait_fixed(0.5))
ABORT = parse_error("EXECABORT Transaction discarded because of previous errors.")
DONE = [b"OK", b"QUEUED", b"QUEUED", [True, b"1"]]


def aborted(refusal: str) -> list[Any]:
    return [b"OK", parse_error(refusal), b"QUEUED", ABORT]


def run(replies: list[tuple[list[Any], str]]) -> tuple[list[Any], list[Any]]:
    """Drive the flow, answering each Attempt with the next (replies, address)."""
    flow = transaction_flow(7, policy=POLICY, clock=lambda: 0.0)
    log: list[Any] = []
    result: Any = None
    try:
        while True:
            effect = flow.send(result)
            log.append(effect)
            result = None
            if isinstance(effect, Attempt):
                reply, address = replies.pop(0)
                result = Outcome(reply=reply, sent=True, address=address)
    except StopIteration as done:
        return done.value, log


def attempts(log: list[Any]) -> list[Attempt]:
    return [e for e in log if isinstance(e, Attempt)]


def test_success_first_time() -> None:
    final, log = run([(DONE, "a:1")])
    assert final == DONE and attempts(log) == [Attempt(7)]


def test_moved_updates_the_slot_and_sends_again() -> None:
    final, log = run([(aborted("MOVED 7 :7001"), "10.0.0.1:7000"), (DONE, "10.0.0.1:7001")])
    assert final == DONE
    assert ApplyMoved(7, "10.0.0.1:7001") in log  # the empty host is the node that answered
    assert attempts(log) == [Attempt(7), Attempt(7)]


def test_ask_sends_again_after_asking_the_named_node() -> None:
    final, log = run([(aborted("ASK 7 10.0.0.3:7002"), "a:1"), (DONE, "10.0.0.3:7002")])
    assert final == DONE
    assert attempts(log) == [Attempt(7), Attempt(7, asking="10.0.0.3:7002")]
    assert not any(isinstance(e, ApplyMoved) for e in log)


def test_tryagain_backs_off_then_gives_the_last_replies_back() -> None:
    refused = aborted("TRYAGAIN Multiple keys request during rehashing of slot")
    final, log = run([(refused, "a:1")] * 3)
    assert final is refused  # finish_transaction raises the TRYAGAIN to the caller
    assert [e for e in log if isinstance(e, Sleep)] == [Sleep(0.5)] * 2
    assert RequestRefresh() in log


def test_a_transaction_that_ran_is_never_sent_again() -> None:
    ran = [b"OK", b"QUEUED", [parse_error("WRONGTYPE Operation against a key")]]
    final, log = run([(ran, "a:1")])
    assert final is ran and len(attempts(log)) == 1
    syntax = [b"OK", parse_error("ERR wrong number of arguments"), ABORT]
    final, log = run([(syntax, "a:1")])
    assert final is syntax and len(attempts(log)) == 1


def test_transaction_refusal() -> None:
    assert transaction_refusal(DONE) is None
    assert isinstance(transaction_refusal(aborted("MOVED 7 a:2")), rx.MovedError)
    exec_moved = [b"OK", b"QUEUED", parse_error("MOVED 7 a:2")]  # EXEC itself redirected
    assert isinstance(transaction_refusal(exec_moved), rx.MovedError)
    assert transaction_refusal([b"OK", b"QUEUED", None]) is None  # WATCH: EXEC returned nil
