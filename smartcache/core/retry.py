"""Retry decisions: what to do after a command failed, inside one bounded budget.

``decide()`` is pure: given the error, whether the request reached the socket, whether the
command is idempotent and the attempt count and elapsed time, it returns a ``Decision``.
The policy is immutable and configured with tenacity strategies (``stop=``, ``wait=``),
which are evaluated only on the failure path, never on a command that succeeds.

Rules:
- ``MOVED``: follow at once, update the slot, schedule a refresh. Proves nothing ran.
- ``ASK``: retry once on the named node after ``ASKING``; the map is not touched.
- ``TRYAGAIN`` / ``CLUSTERDOWN`` / ``LOADING`` / ``MASTERDOWN``: back off with jitter and retry.
- ``READONLY`` (we wrote to a replica, e.g. a demoted primary): refresh and retry; the
  server refused the write, so it did not run. Only when a retry can reach another node
  (``reroutable``: a cluster's slot map or Sentinel's primary may change); a client given
  one server's address would only ask the same replica again, so it raises at once.
- Authentication refused (``NOAUTH``, ``WRONGPASS``: redis-py's ``AuthenticationError``, which
  it files under ``ConnectionError``) or not permitted (``AuthorizationError``): raise at once.
  It is the server's answer, not a broken link; no retry and no other node can change it.
- The client's pool stayed full for the caller's ``pool_timeout``
  (:class:`~smartcache.exceptions.PoolExhaustedError`): raise at once; nothing was sent.
- Connection refused / reset before the request was written: refresh and retry.
- Connection lost or timed out after the request was written: the command may have run;
  retry only when it is idempotent (or the policy opts in), else raise "ambiguous".

Pure: no sockets, no clocks, no sleeping; the shells sleep for ``Decision.delay``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

import redis.exceptions as rx
from tenacity import stop_after_attempt, stop_after_delay, wait_exponential_jitter

from smartcache.core.redirect import resolve_redirect
from smartcache.exceptions import PoolExhaustedError

__all__ = [
    "Action",
    "AwaitingTopology",
    "Decision",
    "RetryPolicy",
    "decide",
    "is_credentials_refusal",
    "is_network_failure",
    "may_resend",
    "request_written",
]


class AwaitingTopology(Exception):
    """The node for this command recently timed out; wait for the topology to change.

    Raised by no one: the shell passes an instance to :func:`decide` instead of sending a
    command to a primary it suspects is hung, so one hung node costs a caller one
    ``socket_timeout``, not one per retry.
    """


class Action(enum.Enum):
    """What the shell does next."""

    MOVED = "moved"  # re-send to Decision.target, update the slot, refresh soon
    ASK = "ask"  # re-send to Decision.target prefixed by ASKING
    RETRY = "retry"  # sleep Decision.delay, re-plan (refresh first if Decision.refresh)
    RAISE = "raise"  # give up: raise the error (ambiguous when Decision.ambiguous)


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of :func:`decide`."""

    action: Action
    delay: float = 0.0
    refresh: bool = False
    target: str | None = None
    slot: int | None = None
    ambiguous: bool = False


@dataclass(frozen=True, slots=True)
class _State:
    # The two attributes tenacity's stop/wait strategies read from a RetryCallState.
    attempt_number: int
    seconds_since_start: float
    idle_for: float = 0.0
    outcome: Any = None


def _default_stop() -> Any:
    return stop_after_attempt(16) | stop_after_delay(10.0)


def _default_wait() -> Any:
    # 50 ms doubling to 1 s, plus up to 100 ms of jitter: a failover (1-3 s on a tuned
    # cluster) fits in the budget, and clients that failed together do not retry together.
    return wait_exponential_jitter(multiplier=0.05, max=1.0, jitter=0.1)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded retries with backoff and jitter, configured with tenacity strategies.

    ``stop``: a tenacity stop strategy over failed attempts and elapsed seconds (default: 16
    attempts or 10 s). ``wait``: a tenacity wait strategy (default: exponential from 50 ms,
    capped at 1 s, plus up to 100 ms of random jitter). ``max_redirects``: MOVED/ASK hops
    allowed per command.
    ``retry_non_idempotent``: re-send commands such as INCR after an ambiguous failure.
    ``topology_poll``: seconds between topology checks while waiting for a failover.
    """

    stop: Any = field(default_factory=_default_stop)
    wait: Any = field(default_factory=_default_wait)
    max_redirects: int = 16
    retry_non_idempotent: bool = False
    topology_poll: float = 0.2

    def should_stop(self, attempt: int, elapsed: float) -> bool:
        """True when ``attempt`` failed attempts after ``elapsed`` seconds exhaust the budget."""
        return bool(self.stop(_State(attempt, elapsed)))

    def backoff(self, attempt: int, elapsed: float) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        return float(self.wait(_State(attempt, elapsed)))


_BACKOFF_ERRORS = (
    rx.TryAgainError,
    rx.ClusterDownError,
    rx.BusyLoadingError,
    rx.MasterDownError,
)


_NETWORK_ERRORS = (rx.ConnectionError, rx.TimeoutError, OSError)
#: redis-py files these under ConnectionError, yet they are replies: the link is fine.
_CREDENTIALS_REFUSED = (rx.AuthenticationError, rx.AuthorizationError)


def is_credentials_refusal(error: BaseException) -> bool:
    """True when the server refused the credentials or the user's rights (NOAUTH,
    WRONGPASS, ...): another attempt, on this node or another, would be refused too."""
    return isinstance(error, _CREDENTIALS_REFUSED)


def is_network_failure(error: BaseException) -> bool:
    """True when the link to a node failed (refused, reset, timed out): another attempt,
    or another node, may succeed. False for everything else, credential refusals included."""
    return isinstance(error, _NETWORK_ERRORS) and not isinstance(error, _CREDENTIALS_REFUSED)


def decide(
    policy: RetryPolicy,
    error: BaseException,
    *,
    attempt: int,
    redirects: int,
    elapsed: float,
    idempotent: bool,
    sent: bool,
    answered_by: str | None = None,
    reroutable: bool = True,
) -> Decision:
    """Decide what to do after ``error``.

    ``attempt``: failed attempts so far, this one included (redirects not counted).
    ``redirects``: MOVED/ASK hops so far. ``sent``: the request was written to the socket,
    so a connection error leaves its outcome unknown. ``answered_by``: the ``host:port``
    that sent the error (a redirect with an empty host means that host).
    ``reroutable``: a retry may reach another node (cluster, Sentinel); ``False`` for a
    client of one fixed server.
    """
    if isinstance(error, rx.AskError):  # redis-py's MovedError derives from AskError
        if redirects >= policy.max_redirects or policy.should_stop(0, elapsed):
            return Decision(Action.RAISE)
        kind = Action.MOVED if isinstance(error, rx.MovedError) else Action.ASK
        redirect = resolve_redirect(error, answered_by)
        target = redirect.address if redirect is not None else f"{error.host}:{error.port}"
        return Decision(kind, target=target, slot=int(error.slot_id), refresh=kind is Action.MOVED)
    if isinstance(error, PoolExhaustedError):
        # The client's own pool stayed full for the whole ``pool_timeout`` the caller set:
        # nothing was sent, no node is at fault, and waiting again would exceed that
        # timeout. Raised at once, as redis-py's blocking pool raises.
        return Decision(Action.RAISE)
    if isinstance(error, AwaitingTopology):
        # Bounded by the deadline only: polls are not attempts.
        if policy.should_stop(0, elapsed):
            return Decision(Action.RAISE)
        return Decision(Action.RETRY, delay=policy.topology_poll, refresh=True)
    if isinstance(error, rx.ReadOnlyError):
        if not reroutable:
            return Decision(Action.RAISE)  # the same replica would refuse it again
        return _retry(policy, attempt, elapsed, refresh=True)
    if isinstance(error, _BACKOFF_ERRORS):
        return _retry(policy, attempt, elapsed, refresh=True)
    if is_network_failure(error):
        if not may_resend(policy, idempotent=idempotent, sent=sent):
            return Decision(Action.RAISE, ambiguous=True)
        return _retry(policy, attempt, elapsed, refresh=True)
    return Decision(Action.RAISE)


def request_written(error: BaseException) -> bool:
    """Whether the request of a failed command may have reached the server: a transport
    error says so in ``request_sent`` (False: nothing was written); unknown counts as
    written, the safe side for a command that must not run twice."""
    return getattr(error, "request_sent", None) is not False


def may_resend(policy: RetryPolicy, *, idempotent: bool, sent: bool) -> bool:
    """Whether a command whose connection failed may be sent again: it was never written,
    or running it twice is harmless (idempotent), or the policy opts in
    (``retry_non_idempotent``). Otherwise its outcome is unknown ("ambiguous").

    The one rule for single commands (:func:`decide`) and for the commands of a pipeline
    whose connection was lost (:func:`smartcache.core.pipeline.after_loss`)."""
    return not sent or idempotent or policy.retry_non_idempotent


def _retry(policy: RetryPolicy, attempt: int, elapsed: float, *, refresh: bool) -> Decision:
    if policy.should_stop(attempt, elapsed):
        return Decision(Action.RAISE)
    return Decision(Action.RETRY, delay=policy.backoff(attempt, elapsed), refresh=refresh)
