"""keyed_flow, driven by a scripted fake shell: every rule without a server."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.exceptions as rx
from tenacity import stop_after_attempt, stop_after_delay, wait_fixed

from smartcache import AmbiguousCommandError, ClusterUnavailableError
from smartcache.core.commands import CommandTable
from smartcache.core.flow import (
    ApplyMoved,
    Attempt,
    IsSuspect,
    MarkSuspect,
    Outcome,
    RefreshIfPending,
    RequestRefresh,
    Sleep,
    keyed_flow,
)
from smartcache.core.retry import RetryPolicy

TABLE = CommandTable.fallback()
POLICY = RetryPolicy(stop=stop_after_attempt(4) | stop_after_delay(10), wait=wait_fixed(0.5))


class Shell:
    """Answers effects from a script of outcomes and records what the flow asked for."""

    def __init__(self, outcomes: list[Outcome], suspect: Callable[[int], bool] = lambda s: False):
        self.outcomes = outcomes
        self.suspect = suspect
        self.log: list[Any] = []
        self.now = 0.0

    def clock(self) -> float:
        return self.now

    def run(
        self,
        args: tuple[Any, ...],
        read_from: str = "primary",
        first: Outcome | None = None,
        policy: RetryPolicy = POLICY,
        reroutable: bool = True,
    ) -> Any:
        flow = keyed_flow(
            args,
            TABLE.lookup(args),
            7,
            policy=policy,
            read_from=read_from,
            clock=self.clock,
            first=first,
            reroutable=reroutable,
        )
        result: Any = None
        try:
            while True:
                effect = flow.send(result)
                self.log.append(effect)
                result = None
                if isinstance(effect, Attempt):
                    result = self.outcomes.pop(0)
                elif isinstance(effect, IsSuspect):
                    result = self.suspect(self.now)
                elif isinstance(effect, Sleep):
                    self.now += effect.seconds
        except StopIteration as done:
            return done.value

    def attempts(self) -> list[Attempt]:
        return [e for e in self.log if isinstance(e, Attempt)]


def test_success_first_time() -> None:
    shell = Shell([Outcome(reply=b"v")])
    assert shell.run(("GET", "k")) == b"v"
    assert shell.log == [RefreshIfPending(), IsSuspect(7), Attempt(7)]


def test_moved_then_success() -> None:
    shell = Shell(
        [
            Outcome(error=rx.MovedError("7 10.0.0.2:7001"), sent=True, address="10.0.0.1:7000"),
            Outcome(reply=b"v"),
        ]
    )
    assert shell.run(("GET", "k")) == b"v"
    assert ApplyMoved(7, "10.0.0.2:7001") in shell.log
    assert not any(isinstance(e, Sleep) for e in shell.log)


def test_moved_to_same_host_shorthand() -> None:
    shell = Shell(
        [
            Outcome(error=rx.MovedError("7 :7001"), sent=True, address="10.0.0.1:7000"),
            Outcome(reply=b"v"),
        ]
    )
    shell.run(("GET", "k"))
    assert ApplyMoved(7, "10.0.0.1:7001") in shell.log


def test_moved_to_the_unknown_endpoint() -> None:
    shell = Shell(
        [
            Outcome(error=rx.MovedError("7 ?:7001"), sent=True, address="10.0.0.1:7000"),
            Outcome(reply=b"v"),
        ]
    )
    shell.run(("GET", "k"))
    assert ApplyMoved(7, "10.0.0.1:7001") in shell.log


def test_readonly_from_a_fixed_server_raises_at_once() -> None:
    refused = rx.ReadOnlyError("You can't write against a read only replica.")
    shell = Shell([Outcome(error=refused, sent=True, address="a:1")])
    with pytest.raises(rx.ReadOnlyError):
        shell.run(("SET", "k", "v"), reroutable=False)
    assert len(shell.attempts()) == 1 and not any(isinstance(e, Sleep) for e in shell.log)
    # In a cluster the map may change: READONLY is retried after a refresh.
    cluster = Shell([Outcome(error=refused, sent=True, address="a:1"), Outcome(reply=True)])
    assert cluster.run(("SET", "k", "v")) is True
    assert RequestRefresh() in cluster.log


def test_ask_goes_once_to_target_without_touching_map() -> None:
    shell = Shell(
        [
            Outcome(error=rx.AskError("7 10.0.0.3:7002"), sent=True, address="10.0.0.1:7000"),
            Outcome(reply=b"v"),
        ]
    )
    assert shell.run(("GET", "k")) == b"v"
    assert shell.attempts() == [Attempt(7), Attempt(7, asking="10.0.0.3:7002")]
    assert not any(isinstance(e, ApplyMoved) for e in shell.log)


def test_tryagain_backs_off_then_gives_up_with_cluster_error() -> None:
    err = rx.TryAgainError("TRYAGAIN")
    shell = Shell([Outcome(error=err, sent=True, address="a:1") for _ in range(4)])
    with pytest.raises(ClusterUnavailableError) as raised:
        shell.run(("GET", "k"))
    assert raised.value.attempts == 4 and raised.value.command == "GET"
    assert [e for e in shell.log if isinstance(e, Sleep)] == [Sleep(0.5)] * 3
    assert RequestRefresh() in shell.log


def test_lost_connection_idempotent_retries_and_marks_suspect() -> None:
    lost = rx.ConnectionError("reset")
    shell = Shell([Outcome(error=lost, sent=True, address="a:1"), Outcome(reply=1)])
    assert shell.run(("SET", "k", "v")) == 1
    assert MarkSuspect("a:1") in shell.log


def test_lost_connection_non_idempotent_is_ambiguous() -> None:
    lost = rx.ConnectionError("reset")
    shell = Shell([Outcome(error=lost, sent=True, address="a:1")])
    with pytest.raises(AmbiguousCommandError) as raised:
        shell.run(("INCR", "k"))
    assert raised.value.command == "INCR"
    refused = Shell([Outcome(error=lost, sent=False, address="a:1"), Outcome(reply=3)])
    assert refused.run(("INCR", "k")) == 3  # never written: safe to send again


def test_suspect_node_waits_for_topology_then_raises_the_real_error() -> None:
    timeout = rx.TimeoutError("timed out")
    policy = RetryPolicy(
        stop=stop_after_attempt(4) | stop_after_delay(2), wait=wait_fixed(0.5), topology_poll=0.25
    )
    shell = Shell([], suspect=lambda now: True)
    first = Outcome(error=timeout, sent=True, address="a:1")
    with pytest.raises(rx.TimeoutError):
        shell.run(("GET", "k"), first=first, policy=policy)
    polls = [e for e in shell.log if isinstance(e, Sleep)]
    assert shell.attempts() == []  # never sent again to the suspect node
    assert len(polls) > 3 and all(p.seconds == 0.25 for p in polls[1:])
    # Arriving while the node is already suspect, with nothing ever sent: a clear error.
    fresh = Shell([], suspect=lambda now: True)
    with pytest.raises(ClusterUnavailableError, match="did not fail over") as raised:
        fresh.run(("GET", "k"), policy=policy)
    assert raised.value.slot == 7


def test_suspect_clears_and_command_goes_through() -> None:
    shell = Shell([Outcome(reply=b"ok")], suspect=lambda now: now < 0.6)
    assert shell.run(("GET", "k"), policy=RetryPolicy(topology_poll=0.2)) == b"ok"
    assert len(shell.attempts()) == 1


def test_replica_preferred_moves_to_primary_at_once() -> None:
    down = rx.ConnectionError("refused")
    shell = Shell([Outcome(error=down, sent=False, address="r:1"), Outcome(reply=b"v")])
    assert shell.run(("GET", "k"), read_from="replica_preferred") == b"v"
    assert shell.attempts() == [Attempt(7, replica=True), Attempt(7)]
    assert not any(isinstance(e, Sleep) for e in shell.log)


def test_writes_never_go_to_replicas() -> None:
    shell = Shell([Outcome(reply=True)])
    shell.run(("SET", "k", "v"), read_from="replica")
    assert shell.attempts() == [Attempt(7)]


def test_blocking_commands_are_flagged() -> None:
    shell = Shell([Outcome(reply=None)])
    shell.run(("BLPOP", "k", 0))
    assert shell.attempts()[0].blocking


def test_fast_path_failure_is_handed_over() -> None:
    shell = Shell([Outcome(reply=b"v")])
    first = Outcome(error=rx.MovedError("7 b:2"), sent=True, address="a:1")
    assert shell.run(("GET", "k"), first=first) == b"v"
    assert shell.log[0] == ApplyMoved(7, "b:2")


def test_plain_errors_raise_untouched() -> None:
    wrong = rx.ResponseError("WRONGTYPE Operation against a key")
    shell = Shell([Outcome(error=wrong, sent=True, address="a:1")])
    with pytest.raises(rx.ResponseError, match="WRONGTYPE"):
        shell.run(("GET", "k"))
    assert len(shell.attempts()) == 1
