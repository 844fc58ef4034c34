"""The Sentinel flows, driven by scripted fake shells: discovery, replicas, events, commands."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import pytest
import redis.exceptions as rx
from tenacity import stop_after_attempt, stop_after_delay, wait_fixed

from smartcache import (
    AmbiguousCommandError,
    ConfigurationError,
    DurabilityError,
    NoReachableNodeError,
)
from smartcache.core.commands import CommandTable
from smartcache.core.flow import Outcome, Sleep
from smartcache.core.retry import RetryPolicy
from smartcache.core.sentinel import FailoverState, SentinelAnswer, parse_event
from smartcache.core.sentinel_command import (
    Rediscover,
    SendCommand,
    WaitWritable,
    check_wait,
    sentinel_command_flow,
)
from smartcache.core.sentinel_flow import (
    FIRST_PAUSE,
    MAX_PAUSE,
    AskSentinel,
    ConfirmRole,
    Discovery,
    LearnSentinels,
    ListReplicas,
    Pause,
    check_config,
    describe_error,
    discovery_flow,
    judge_role,
    react,
    replicas_flow,
    sentinel_queries,
    subscribed_all,
)

S1, S2, S3 = ("10.0.1.1", 26379), ("10.0.1.2", 26379), ("10.0.1.3", 26379)
P, R = ("10.0.0.1", 6379), ("10.0.0.2", 6380)
ROLE_PRIMARY = [b"master", 10, []]
ROLE_REPLICA = [b"slave", P[0].encode(), P[1], b"connected", 10]


def drive(flow: Generator[Any, Any, Any], answer: Callable[[Any], Any]) -> tuple[Any, list[Any]]:
    """Run ``flow`` to its end, answering each effect with ``answer(effect)``."""
    log: list[Any] = []
    result: Any = None
    try:
        while True:
            effect = flow.send(result)
            log.append(effect)
            result = answer(effect)
    except StopIteration as done:
        return done.value, log


class Sentinels:
    """A fake discovery shell: scripted sentinel answers, node roles, and a clock."""

    def __init__(
        self,
        answers: dict[Any, Any],
        roles: dict[Any, Any] | None = None,
        installed: Any = None,
    ) -> None:
        self.answers = answers
        self.roles = roles or {P: ROLE_PRIMARY}
        self.installed = installed
        self.now = 0.0
        self.learned: list[tuple[str, int]] = []

    def __call__(self, effect: Any) -> Any:
        match effect:
            case AskSentinel(address=address, commands=commands):
                assert commands == sentinel_queries("mymaster")
                return self.answers.get(address, rx.ConnectionError("refused"))
            case ConfirmRole(address=address):
                return judge_role(self.roles.get(address, rx.ConnectionError("refused")))
            case LearnSentinels(addresses=addresses):
                self.learned.extend(addresses)
                return None
            case Pause(seconds=seconds):
                self.now += seconds
                return self.installed
        raise AssertionError(effect)

    def run(self, sentinels: list[Any], timeout: float = 5.0) -> tuple[Discovery, list[Any]]:
        flow = discovery_flow(sentinels, "mymaster", clock=lambda: self.now, timeout=timeout)
        return drive(flow, self)


# -- discovery -------------------------------------------------------------------------------


def test_first_sentinel_names_a_confirmed_primary() -> None:
    shell = Sentinels({S1: SentinelAnswer(P)})
    found, log = shell.run([S1, S2])
    assert found == Discovery(P, S1)
    assert [type(e) for e in log] == [AskSentinel, ConfirmRole]


def test_a_failing_sentinel_is_skipped_and_peers_are_learned() -> None:
    shell = Sentinels({S2: SentinelAnswer(None, "no", (S1, S3)), S3: SentinelAnswer(P)})
    found, log = shell.run([S1, S2])
    assert found == Discovery(P, S3)
    assert shell.learned == [S3]  # S1 was known already
    assert [e.address for e in log if isinstance(e, AskSentinel)] == [S1, S2, S3]


def test_a_refused_primary_is_judged_once_per_round() -> None:
    shell = Sentinels(
        {S1: SentinelAnswer(R), S2: SentinelAnswer(R), S3: SentinelAnswer(P)},
        roles={R: ROLE_REPLICA, P: ROLE_PRIMARY},
    )
    found, log = shell.run([S1, S2, S3])
    assert found == Discovery(P, S3)
    assert [e.address for e in log if isinstance(e, ConfirmRole)] == [R, P]


def test_nobody_answers_raises_at_once_listing_every_address() -> None:
    shell = Sentinels({})
    with pytest.raises(NoReachableNodeError) as info:
        shell.run([S1, S2])
    assert list(info.value.addresses) == ["10.0.1.1:26379", "10.0.1.2:26379"]
    assert "ConnectionError: refused" in str(info.value)
    assert shell.now == 0.0  # no waiting when no sentinel answers


def test_an_unconfirmable_primary_is_retried_with_backoff_until_the_deadline() -> None:
    shell = Sentinels({S1: SentinelAnswer(R)}, roles={R: ROLE_REPLICA})
    pauses: list[float] = []
    original = shell.__call__

    def answer(effect: Any) -> Any:
        if isinstance(effect, Pause):
            pauses.append(effect.seconds)
        return original(effect)

    flow = discovery_flow([S1], "mymaster", clock=lambda: shell.now, timeout=2.0)
    with pytest.raises(NoReachableNodeError, match="ROLE says it is a replica of 10.0.0.1:6379"):
        drive(flow, answer)
    assert pauses[:5] == [FIRST_PAUSE, 0.1, 0.2, 0.4, MAX_PAUSE]
    assert pauses[-1] == 0.0 and shell.now == pytest.approx(2.0)


def test_a_switch_installed_meanwhile_ends_the_discovery() -> None:
    shell = Sentinels({S1: SentinelAnswer(R)}, roles={R: ROLE_REPLICA}, installed=P)
    found, _ = shell.run([S1], timeout=0.0)  # even a single round looks for it
    assert found == Discovery(P, None)


def test_unknown_service_and_down_primary_reasons() -> None:
    shell = Sentinels({S1: SentinelAnswer(None, "does not monitor a service named 'x'")})
    with pytest.raises(NoReachableNodeError, match="does not monitor"):
        shell.run([S1], timeout=0.0)


def test_wrong_credentials_raise_at_once() -> None:
    shell = Sentinels({S1: SentinelAnswer(P)}, roles={P: rx.AuthenticationError("WRONGPASS")})
    with pytest.raises(rx.AuthenticationError):
        shell.run([S1, S2])


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (ROLE_PRIMARY, None),
        (ROLE_REPLICA, "ROLE says it is a replica of 10.0.0.1:6379"),
        ([b"sentinel", [b"mymaster"]], "ROLE says it is a sentinel"),
        (rx.TimeoutError("slow"), "TimeoutError: slow"),
        (b"nonsense", "not a ROLE reply: b'nonsense'"),
    ],
)
def test_judge_role(reply: Any, expected: str | None) -> None:
    assert judge_role(reply) == expected


def test_check_config() -> None:
    assert check_config([("h", "1"), ("h", 1), ("g", 2)], "svc", t=1.0) == [("h", 1), ("g", 2)]  # type: ignore[list-item]
    with pytest.raises(ConfigurationError, match="one word"):
        check_config([S1], "my master")
    with pytest.raises(ConfigurationError, match="empty"):
        check_config([], "svc")
    with pytest.raises(ConfigurationError, match="check_interval must be positive"):
        check_config([S1], "svc", check_interval=0)
    assert describe_error(ValueError("x")) == "ValueError: x"


# -- replicas --------------------------------------------------------------------------------


def replica_entry(address: tuple[str, int], flags: str = "slave") -> list[bytes]:
    fields = {
        "ip": address[0],
        "port": str(address[1]),
        "flags": flags,
        "master-link-status": "ok",
        "role-reported": "slave",
    }
    return [x.encode() for kv in fields.items() for x in kv]


def test_replicas_from_the_first_sentinel_that_answers() -> None:
    other = ("10.0.0.3", 6381)
    reply = [replica_entry(R), replica_entry(other, "slave,s_down"), replica_entry(P)]
    answers: dict[Any, Any] = {S1: rx.ConnectionError("refused"), S2: reply}
    flow = replicas_flow([S1, S2, S3], "mymaster", P)
    found, log = drive(flow, lambda e: answers[e.address])
    assert found == (R,)  # the s_down one and the primary itself are left out
    assert log == [
        ListReplicas(S1, ("SENTINEL", "REPLICAS", "mymaster")),
        ListReplicas(S2, ("SENTINEL", "REPLICAS", "mymaster")),
    ]
    with pytest.raises(NoReachableNodeError, match="no sentinel listed the replicas"):
        drive(replicas_flow([S1], "mymaster", P), lambda e: answers[e.address])


# -- events ----------------------------------------------------------------------------------


def test_react_follows_a_switch_once_and_learns_sentinels() -> None:
    state = FailoverState("mymaster", primary=P)
    switch = parse_event("+switch-master", f"mymaster {P[0]} {P[1]} {R[0]} {R[1]}", "s1")
    assert switch is not None
    first = react(state, switch)
    assert first.follow == R and not first.failover.writable
    again = react(first.failover, switch)
    assert again.follow is None and again.failover is first.failover

    peer = parse_event("+sentinel", f"sentinel abc {S2[0]} {S2[1]} @ mymaster {P[0]} {P[1]}")
    assert peer is not None
    assert react(state, peer).learn == S2
    sdown = parse_event("+sdown", f"slave {R[0]}:{R[1]} {R[0]} {R[1]} @ mymaster {P[0]} {P[1]}")
    assert sdown is not None
    assert react(state, sdown).replicas_stale
    other = parse_event("+odown", f"master other {P[0]} {P[1]} #quorum 2/2")
    assert other is not None
    assert react(state, other).failover is state


def test_subscribed_all() -> None:
    from smartcache.core.sentinel import WATCHED_CHANNELS

    assert subscribed_all([b"subscribe", b"+odown", len(WATCHED_CHANNELS)])
    assert subscribed_all(["subscribe", "+odown", len(WATCHED_CHANNELS)])
    assert not subscribed_all([b"subscribe", b"+odown", 1])
    assert not subscribed_all(b"PONG")


# -- the command flow --------------------------------------------------------------------------

TABLE = CommandTable.fallback()
POLICY = RetryPolicy(stop=stop_after_attempt(4) | stop_after_delay(10), wait=wait_fixed(0.5))


class Shell:
    """A fake executor shell: scripted outcomes, a writable schedule and a clock."""

    def __init__(
        self, outcomes: list[Outcome], writable: list[bool] | None = None, switched: bool = False
    ) -> None:
        self.outcomes = outcomes
        self.writable = writable or []
        self.switched = switched
        self.now = 0.0

    def __call__(self, effect: Any) -> Any:
        match effect:
            case SendCommand():
                return self.outcomes.pop(0)
            case WaitWritable():
                return self.writable.pop(0) if self.writable else True
            case Sleep(seconds=seconds):
                self.now += seconds
            case Rediscover():
                return self.switched
        return None

    def run(self, args: tuple[Any, ...], **kwargs: Any) -> tuple[Any, list[Any]]:
        kwargs.setdefault("policy", POLICY)
        kwargs.setdefault("read_from", "primary")
        flow = sentinel_command_flow(args, TABLE.lookup(args), clock=lambda: self.now, **kwargs)
        return drive(flow, self)


def ok(reply: Any = b"OK") -> Outcome:
    return Outcome(reply=reply)


def failed(error: BaseException, sent: bool = True, address: str | None = "primary") -> Outcome:
    return Outcome(error=error, sent=sent, address=address)


def test_a_read_goes_straight_to_the_primary() -> None:
    reply, log = Shell([ok(b"v")]).run(("GET", "k"))
    assert reply == b"v"
    assert log == [SendCommand()]


def test_writes_wait_while_a_failover_is_reported() -> None:
    shell = Shell([ok()], writable=[False, True])
    reply, log = shell.run(("SET", "k", "v"), hold_timeout=3.0)
    assert reply == b"OK"
    assert [type(e) for e in log] == [WaitWritable, Sleep, WaitWritable, SendCommand]
    assert log[0] == WaitWritable(3.0)
    assert not any(isinstance(e, Rediscover) for e in log)  # nothing failed on the primary


def test_readonly_rediscovers_then_retries() -> None:
    shell = Shell([failed(rx.ReadOnlyError("READONLY")), ok(5)])
    reply, log = shell.run(("INCR", "n"))
    assert reply == 5
    kinds = [type(e) for e in log]
    assert kinds == [WaitWritable, SendCommand, Rediscover, Sleep, WaitWritable, SendCommand]


def test_a_confirmed_new_primary_gets_the_retry_without_backoff() -> None:
    shell = Shell([failed(rx.ReadOnlyError("READONLY")), ok(5)], switched=True)
    reply, log = shell.run(("INCR", "n"))
    assert reply == 5
    kinds = [type(e) for e in log]
    assert kinds == [WaitWritable, SendCommand, Rediscover, WaitWritable, SendCommand]


def test_lost_connection_after_sending_a_non_idempotent_command_is_ambiguous() -> None:
    shell = Shell([failed(rx.ConnectionError("lost"), sent=True)])
    with pytest.raises(AmbiguousCommandError):
        shell.run(("INCR", "n"))
    shell = Shell([failed(rx.ConnectionError("refused"), sent=False), ok(1)])
    assert shell.run(("INCR", "n"))[0] == 1


def test_a_plain_error_reply_is_raised_at_once() -> None:
    shell = Shell([failed(rx.ResponseError("WRONGTYPE Operation"))])
    with pytest.raises(rx.ResponseError, match="WRONGTYPE"):
        shell.run(("LPUSH", "k", "v"))


def test_the_budget_ends_with_the_last_error() -> None:
    shell = Shell([failed(rx.ConnectionError("refused"), sent=False) for _ in range(4)])
    with pytest.raises(rx.ConnectionError, match="refused"):
        shell.run(("GET", "k"))
    assert shell.now == pytest.approx(1.5)  # three backoffs of 0.5 s


def test_replica_preferred_falls_back_to_the_primary_at_once() -> None:
    shell = Shell([failed(rx.ConnectionError("down"), address="replica"), ok(b"v")])
    reply, log = shell.run(("GET", "k"), read_from="replica_preferred")
    assert reply == b"v"
    assert log == [SendCommand(replica=True), SendCommand(replica=False)]

    shell = Shell([failed(rx.BusyLoadingError("LOADING"), address="replica"), ok(b"v")])
    reply, log = shell.run(("GET", "k"), read_from="replica")
    assert [type(e) for e in log] == [SendCommand, Sleep, SendCommand]
    assert log[-1] == SendCommand(replica=True)


def test_wait_replicas_follows_writes_only() -> None:
    shell = Shell([ok((b"OK", 2)), ok(b"v")])
    reply, log = shell.run(("SET", "k", "v"), wait_replicas=2, wait_timeout_ms=100)
    assert reply == b"OK"
    assert log[-1] == SendCommand(wait_replicas=2, wait_timeout_ms=100)
    reply, log = shell.run(("GET", "k"), wait_replicas=2, wait_timeout_ms=100)
    assert reply == b"v" and log == [SendCommand()]

    with pytest.raises(DurabilityError, match="reached only 1 of 2") as err:
        Shell([ok((b"OK", 1))]).run(("SET", "k", "v"), wait_replicas=2)
    assert (err.value.replicas, err.value.wanted) == (1, 2)
    with pytest.raises(DurabilityError, match="WAIT failed"):
        check_wait(("SET", "k"), rx.ResponseError("ERR"), 1, 100)


def test_a_fast_path_failure_is_handed_over() -> None:
    first = failed(rx.ConnectionError("lost"), sent=False)
    shell = Shell([ok(b"v")])
    flow = sentinel_command_flow(
        ("GET", "k"),
        TABLE.lookup(("GET", "k")),
        policy=POLICY,
        read_from="primary",
        clock=lambda: shell.now,
        first=first,
    )
    reply, log = drive(flow, shell)
    assert reply == b"v"
    assert [type(e) for e in log] == [Rediscover, Sleep, SendCommand]
    assert log[0].error is first.error


def test_blocking_commands_say_so() -> None:
    _, log = Shell([ok(None)]).run(("BLPOP", "q", 1))
    assert log[-1].blocking
