"""The Sentinel watcher's decisions, I/O-free: when to (re)subscribe to each sentinel,
when to re-check the primary, and what a message of a subscription says.

Both watchers keep one :class:`WatchPlan` and ask it; neither decides itself (the asyncio
watcher runs one task per subscription, the sync one a thread polling every
subscription: that, and only that, differs). :class:`Watched` is what both read of the
Sentinel state they feed.

Pure: no sockets, no threads, no clock (``now`` is a parameter).
"""

from __future__ import annotations

from collections.abc import Container, Iterable
from typing import Any, Final, Literal, Protocol

from smartcache.core.sentinel import Address, SentinelEvent, parse_event, parse_pubsub_message
from smartcache.core.sentinel_flow import subscribed_all

__all__ = ["BACKOFF_CAP", "BACKOFF_FIRST", "WatchPlan", "Watched", "read_message"]

#: Resubscription backoff: first retry after this, doubling up to the cap (and never
#: longer than the check interval).
BACKOFF_FIRST: Final = 0.05
BACKOFF_CAP: Final = 2.0


class Watched(Protocol):
    """What a watcher reads of the Sentinel state it feeds (each shell's watcher adds the
    methods that do I/O): a Protocol, so a watcher does not import its state's module."""

    service_name: str
    check_interval: float

    @property
    def primary_address(self) -> str | None: ...
    @property
    def closed(self) -> bool: ...
    @property
    def sentinels(self) -> list[Address]: ...
    def report(self, kind: str, value: Any) -> None: ...
    def forget_source(self, source: str) -> None: ...


class WatchPlan:
    """When each sentinel is (re)subscribed to and when the primary is re-checked.

    ``check_interval``: seconds between checks; the first one is due at once unless the
    primary is already known (``primary_known``).
    """

    def __init__(self, check_interval: float, now: float, *, primary_known: bool) -> None:
        self.check_interval = check_interval
        #: when the next periodic check is due (monotonic seconds)
        self.check_at = now + check_interval if primary_known else now
        self._retry: dict[Address, tuple[int, float]] = {}  # failures, next attempt at

    def to_subscribe(
        self, sentinels: Iterable[Address], busy: Container[Address], now: float
    ) -> list[Address]:
        """The sentinels to subscribe to now: not ``busy`` (subscribed, or a subscription
        under way) and not waiting out a backoff."""
        return [a for a in sentinels if a not in busy and self._retry.get(a, (0, 0.0))[1] <= now]

    def subscribed(self, sentinel: Address) -> bool:
        """A subscription to ``sentinel`` was made. True when an earlier one had failed or
        broken: events may have been missed meanwhile, so the check is due at once."""
        if self._retry.pop(sentinel, None) is None:
            return False
        self.check_at = 0.0
        return True

    def failed(self, sentinel: Address, now: float, *, was_subscribed: bool) -> float:
        """A subscription broke (``was_subscribed``: the backoff starts over) or could not be
        made (it doubles); return the seconds until the next attempt."""
        failures = 1 if was_subscribed else self._retry.get(sentinel, (0, 0.0))[0] + 1
        doubled = BACKOFF_FIRST * 2.0 ** min(failures - 1, 32)  # no float overflow, ever
        delay = min(doubled, BACKOFF_CAP, self.check_interval)
        self._retry[sentinel] = (failures, now + delay)
        return delay

    def check_due(self, now: float) -> bool:
        """Whether the periodic check (re-confirm the primary, refresh replicas) is due."""
        return now >= self.check_at

    def checked(self, now: float) -> None:
        """The periodic check was made (it ended at ``now``)."""
        self.check_at = now + self.check_interval

    def wait(self, busy: Container[Address], now: float) -> float:
        """Seconds until the next duty: the check, or a resubscription not under way."""
        retries = (at for a, (_, at) in self._retry.items() if a not in busy)
        return max(0.0, min([self.check_at, *retries]) - now)


def read_message(message: Any, source: str) -> SentinelEvent | Literal["subscribed"] | None:
    """What one message of the subscription to the sentinel ``source`` says: an event for
    the failover state, ``"subscribed"`` once every watched channel is subscribed, or None
    (a PING's answer, a malformed or unrelated message)."""
    parsed = parse_pubsub_message(message)
    if parsed is not None:
        return parse_event(parsed[0], parsed[1], source)
    return "subscribed" if subscribed_all(message) else None
