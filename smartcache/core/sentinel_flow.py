"""Sentinel discovery, replica listing and event handling as flows: the rules, written once.

Shared by the sync :class:`~smartcache.sync._sentinel.SentinelState` and the asyncio
:class:`~smartcache.asyncio._sentinel.AsyncSentinelState`. A flow yields *effects* (small
frozen values saying "do this I/O") and receives their results; the sync shell answers
with plain calls, the async shell with awaits (as :mod:`smartcache.core.refresh` does for
the cluster). Which sentinel to ask next, when a reported primary is refused, which peers
are learned, how long to back off while a failover is under way, which replicas may serve
reads and how an event moves the failover state: all decided here.

Effects and what the driver sends back:

=========================  ===========================================================
``AskSentinel(address)``   run ``commands`` on that sentinel in one round trip ->
                           :func:`~smartcache.core.sentinel.interpret_answer` of the
                           replies (a ``SentinelAnswer``), or the exception met
``ConfirmRole(address)``   ``ROLE`` on that node -> :func:`judge_role` of the reply or of
                           the exception met: ``None`` (a primary) or why it is refused
``LearnSentinels(addrs)``  remember these new sentinels (and watch them) -> ``None``
``Pause(seconds)``         wait (woken early when the shell installs a primary) -> the
                           primary the shell installed since the flow began, or ``None``
``ListReplicas(address)``  run ``command`` on that sentinel -> the raw reply, or the
                           exception met
=========================  ===========================================================

Pure: no sockets, no threads, no clock (``clock`` is a parameter), no sleeping. Collapsing
concurrent discoveries is the drivers' business (their locks differ).
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import redis.exceptions as rx

from smartcache.core._sentinel_common import as_text
from smartcache.core.sentinel import (
    WATCHED_CHANNELS,
    Address,
    FailoverState,
    SentinelAnswer,
    SentinelEvent,
    format_address,
    parse_replicas,
    parse_role,
    usable_replicas,
)
from smartcache.exceptions import ConfigurationError, NoReachableNodeError

__all__ = [
    "FIRST_PAUSE",
    "MAX_PAUSE",
    "AskSentinel",
    "ConfirmRole",
    "Discovery",
    "DiscoveryEffect",
    "LearnSentinels",
    "ListReplicas",
    "Pause",
    "Reaction",
    "check_config",
    "describe_error",
    "discovery_flow",
    "judge_role",
    "react",
    "replicas_flow",
    "sentinel_queries",
    "subscribed_all",
]

#: Back-off between discovery rounds while sentinels answer but no primary confirms.
FIRST_PAUSE: Final = 0.05
MAX_PAUSE: Final = 0.5

_AUTH_ERRORS: Final = (rx.AuthenticationError, rx.AuthenticationWrongNumberOfArgsError)


# -- effects ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AskSentinel:
    """Ask the sentinel at ``address`` for the primary, its flags and its peers."""

    address: Address
    commands: tuple[tuple[str, ...], ...]


@dataclass(frozen=True, slots=True)
class ConfirmRole:
    """Ask the node at ``address`` what it is (``ROLE``)."""

    address: Address


@dataclass(frozen=True, slots=True)
class LearnSentinels:
    """Sentinels named by an answer that the flow did not know: remember and watch them."""

    addresses: tuple[Address, ...]


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait ``seconds`` before the next round (``0``: only look for an installed switch)."""

    seconds: float


@dataclass(frozen=True, slots=True)
class ListReplicas:
    """Ask the sentinel at ``address`` for the replicas (``SENTINEL REPLICAS``)."""

    address: Address
    command: tuple[str, ...]


DiscoveryEffect = AskSentinel | ConfirmRole | LearnSentinels | Pause


@dataclass(frozen=True, slots=True)
class Discovery:
    """The result of a discovery: the confirmed ``primary`` and the ``sentinel`` that named
    it (move it to the front), or ``sentinel=None`` when the shell had installed the
    primary itself meanwhile (its watcher followed a switch)."""

    primary: Address
    sentinel: Address | None = None


# -- small rules -------------------------------------------------------------------------------


def sentinel_queries(service: str) -> tuple[tuple[str, ...], ...]:
    """What :class:`AskSentinel` sends: the address, the primary's flags, the peers."""
    return (
        ("SENTINEL", "GET-MASTER-ADDR-BY-NAME", service),
        ("SENTINEL", "MASTER", service),
        ("SENTINEL", "SENTINELS", service),
    )


def describe_error(exc: BaseException) -> str:
    """An error as one line for a "tried: ..." message."""
    return f"{type(exc).__name__}: {exc}"


def judge_role(reply: Any) -> str | None:
    """None if a ``ROLE`` reply says primary, else why the node is refused.

    ``reply`` may be the exception the shell met asking: a refusal too, except wrong
    credentials, which are raised at once (no other node would do better).
    """
    if isinstance(reply, _AUTH_ERRORS):
        raise reply
    if isinstance(reply, BaseException):
        return describe_error(reply)
    try:
        role = parse_role(reply)
    except ValueError as exc:
        return str(exc)
    if role.is_primary:
        return None
    if role.primary is not None:
        return f"ROLE says it is a {role.kind} of {format_address(role.primary)}"
    return f"ROLE says it is a {role.kind}"


def check_config(
    sentinels: Iterable[tuple[str, int]], service_name: str, **positive: float
) -> list[Address]:
    """Validate a Sentinel configuration; return the sentinels deduplicated, in order.

    ``positive`` names durations that must be > 0 (``check_interval=5.0``...). Raises
    :class:`~smartcache.exceptions.ConfigurationError` saying what is wrong.
    """
    if not service_name or any(c.isspace() for c in service_name):
        raise ConfigurationError(f"service_name must be one word, got {service_name!r}")
    addresses = list(dict.fromkeys((str(h), int(p)) for h, p in sentinels))
    if not addresses:
        raise ConfigurationError("sentinels is empty: give at least one (host, port)")
    for name, value in positive.items():
        if value <= 0:
            raise ConfigurationError(f"{name} must be positive, got {value!r}")
    return addresses


# -- discovery ---------------------------------------------------------------------------------


def discovery_flow(
    sentinels: Sequence[Address],
    service: str,
    *,
    clock: Callable[[], float],
    timeout: float,
) -> Generator[DiscoveryEffect, Any, Discovery]:
    """Find the primary through the sentinels and confirm it with ``ROLE``.

    Each round asks the sentinels in order (those learned from answers are appended and
    asked too): one that fails or reports the primary down is skipped; a reported primary
    that is not a primary by its own ``ROLE`` is refused (each address judged once per
    round). While some sentinel answers but none names a confirmable primary (a failover
    under way) the rounds repeat, backing off from :data:`FIRST_PAUSE` to
    :data:`MAX_PAUSE`, for up to ``timeout`` seconds (``0``: one round). Raises
    :class:`~smartcache.exceptions.NoReachableNodeError` listing every address tried and
    why.
    """
    known = list(dict.fromkeys(sentinels))
    deadline = clock() + timeout
    reasons: dict[str, str] = {}
    delay = FIRST_PAUSE
    while True:
        found, answered = yield from _round(known, service, reasons)
        if found is not None:
            return found
        remaining = deadline - clock()
        wait = min(delay, remaining) if answered and remaining > 0 else 0.0
        installed = yield Pause(wait)
        if installed is not None:
            return Discovery(installed)  # the shell followed a switch meanwhile
        if wait <= 0:
            detail = "; ".join(f"{a}: {r}" for a, r in reasons.items())
            raise NoReachableNodeError(
                f"no primary of service {service!r} could be found and confirmed: {detail}",
                addresses=list(reasons),
            )
        delay = min(delay * 2, MAX_PAUSE)


def _round(
    known: list[Address], service: str, reasons: dict[str, str]
) -> Generator[DiscoveryEffect, Any, tuple[Discovery | None, bool]]:
    """One pass over the sentinels; ``(found or None, whether any sentinel answered)``."""
    answered = False
    verdicts: dict[Address, str | None] = {}
    commands = sentinel_queries(service)
    index = 0
    while index < len(known):
        sentinel = known[index]
        index += 1
        answer: SentinelAnswer | BaseException = yield AskSentinel(sentinel, commands)
        if isinstance(answer, BaseException):
            reasons[format_address(sentinel)] = describe_error(answer)
            continue
        answered = True
        new = tuple(a for a in dict.fromkeys(answer.sentinels) if a not in known)
        if new:
            known.extend(new)
            yield LearnSentinels(new)
        primary = answer.primary
        if primary is None:
            reasons[format_address(sentinel)] = answer.reason
            continue
        if primary not in verdicts:
            verdicts[primary] = yield ConfirmRole(primary)
        refusal = verdicts[primary]
        if refusal is None:
            return Discovery(primary, sentinel), True
        reasons[format_address(sentinel)] = f"reported primary {format_address(primary)}"
        reasons[format_address(primary)] = refusal
    return None, answered


# -- replicas ----------------------------------------------------------------------------------


def replicas_flow(
    sentinels: Sequence[Address], service: str, primary: Address | None
) -> Generator[ListReplicas, Any, tuple[Address, ...]]:
    """The replicas fit for reads, from the first sentinel that lists them.

    Fit: not ``s_down``/``o_down``/``disconnected``, ``master-link-status`` ok, reporting
    the replica role, and not ``primary``; in the sentinel's order. Raises
    :class:`~smartcache.exceptions.NoReachableNodeError` when no sentinel answers.
    """
    command = ("SENTINEL", "REPLICAS", service)
    errors: dict[str, str] = {}
    for sentinel in sentinels:
        reply = yield ListReplicas(sentinel, command)
        if isinstance(reply, BaseException):
            errors[format_address(sentinel)] = describe_error(reply)
            continue
        return usable_replicas(parse_replicas(reply), primary)
    raise NoReachableNodeError(
        f"no sentinel listed the replicas of {service!r}: "
        + "; ".join(f"{a}: {r}" for a, r in errors.items()),
        addresses=list(errors),
    )


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reaction:
    """What a shell does about one sentinel event.

    ``failover``: the next failover state (the same object when unchanged); ``learn``: a
    sentinel to remember; ``follow``: a newly announced primary to confirm with ``ROLE``
    and install (if it does not confirm, run one discovery round); ``replicas_stale``: the
    replica list may have changed (refresh it after the batch of events).
    """

    failover: FailoverState
    learn: Address | None = None
    follow: Address | None = None
    replicas_stale: bool = False


def react(failover: FailoverState, event: SentinelEvent) -> Reaction:
    """How ``event`` changes ``failover`` and what the shell must do about it."""
    if event.service != failover.service:
        return Reaction(failover)
    learn = event.address if event.channel == "+sentinel" else None
    after = failover.apply(event)
    pending = after.pending
    follow = pending if pending is not None and pending != failover.pending else None
    return Reaction(after, learn, follow, event.about_replica and follow is None)


def subscribed_all(message: Any) -> bool:
    """True for the confirmation of the last channel of ``SUBSCRIBE *WATCHED_CHANNELS``."""
    return (
        isinstance(message, list)
        and len(message) == 3
        and as_text(message[0]) == "subscribe"
        and message[2] == len(WATCHED_CHANNELS)
    )
