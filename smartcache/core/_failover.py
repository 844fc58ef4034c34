"""Sentinel pub/sub events and the failover state machine: every transition lives here.

:func:`parse_event` turns a sentinel event (``+switch-master ...``, ``+odown master ...``)
into a :class:`SentinelEvent`; :meth:`FailoverState.apply` is the only place that decides
whether a failover of our primary is under way (writes held) and where the primary moved.

Pure: no sockets, no threads, no clock, no sleeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from smartcache.core._sentinel_common import Address, as_port, as_text

__all__ = [
    "WATCHED_CHANNELS",
    "FailoverState",
    "SentinelEvent",
    "parse_event",
    "parse_pubsub_message",
]

#: Events that mean a failover of the named primary is under way: hold writes to it.
_PROGRESS: Final = frozenset(
    {
        "+try-failover",
        "+elected-leader",
        "+failover-state-select-slave",
        "+selected-slave",
        "+failover-state-send-slaveof-noone",
        "+failover-state-wait-promotion",
        "+promoted-slave",
        "+failover-state-reconf-slaves",
        "+failover-end-for-timeout",
        "+failover-end",  # +switch-master follows at once; hold until it arrives
    }
)

#: The channels a watcher subscribes to on every sentinel.
WATCHED_CHANNELS: Final = (
    "+switch-master",
    *sorted(_PROGRESS),
    "-failover-abort-not-elected",
    "-failover-abort-no-good-slave",
    "-failover-abort-slave-timeout",
    "-failover-abort-master-timeout",
    "+odown",
    "-odown",
    "+sdown",
    "-sdown",
    "+reset-master",
    "+slave",
    "+convert-to-slave",
    "+role-change",
    "-role-change",
    "+slave-reconf-done",
    "+reboot",
    "+sentinel",
)


@dataclass(frozen=True, slots=True)
class SentinelEvent:
    """One sentinel pub/sub event, e.g. ``+switch-master`` or ``+odown master mymaster ...``.

    ``instance_type`` is Redis's word for what the event is about (``master``, ``slave``,
    ``sentinel``), ``address`` that instance's address, ``service`` and ``primary`` the
    monitored service and its primary's address as the event names them (for
    ``+switch-master``: the old primary, with ``new_primary`` the new one). ``source`` names
    the sentinel that published it (set by the caller).
    """

    channel: str
    instance_type: str | None = None
    name: str | None = None
    address: Address | None = None
    service: str | None = None
    primary: Address | None = None
    new_primary: Address | None = None
    detail: str = ""
    source: str = ""

    @property
    def about_replica(self) -> bool:
        """True for events about a replica (its list or health may have changed)."""
        return self.instance_type == "slave"


def parse_pubsub_message(message: Any) -> tuple[str, Any] | None:
    """``(channel, data)`` of a ``message``/``pmessage`` (RESP2 array or RESP3 push), else None."""
    if not isinstance(message, Sequence) or isinstance(message, str | bytes) or not message:
        return None
    kind = as_text(message[0])
    if kind == "message" and len(message) == 3:
        return as_text(message[1]), message[2]
    if kind == "pmessage" and len(message) == 4:
        return as_text(message[2]), message[3]
    return None


def parse_event(channel: str, data: Any, source: str = "") -> SentinelEvent | None:
    """Parse the payload of a sentinel event; None when it is malformed.

    Payloads: ``+switch-master <name> <oldip> <oldport> <newip> <newport>``; instance events
    ``<type> <name> <ip> <port> [@ <service> <ip> <port>] [detail...]``; anything else (for
    example ``+new-epoch 3``) becomes an event with only ``channel`` and ``detail``.
    """
    text = as_text(data)
    words = text.split()
    try:
        if channel == "+switch-master":
            name, old_host, old_port, new_host, new_port = words[:5]
            old, new = (old_host, as_port(old_port)), (new_host, as_port(new_port))
            return SentinelEvent(
                channel, "master", name, old, name, old, new, " ".join(words[5:]), source
            )
        if len(words) < 4 or words[0] not in ("master", "slave", "sentinel"):
            return SentinelEvent(channel, detail=text, source=source)
        kind, name, host, port = words[:4]
        address = (host, as_port(port))
        if kind == "master":
            return SentinelEvent(
                channel, kind, name, address, name, address, None, " ".join(words[4:]), source
            )
        if len(words) < 8 or words[4] != "@":
            return SentinelEvent(channel, kind, name, address, detail=text, source=source)
        primary = (words[6], as_port(words[7]))
        return SentinelEvent(
            channel, kind, name, address, words[5], primary, None, " ".join(words[8:]), source
        )
    except ValueError:
        return None


# -- the failover state machine --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FailoverState:
    """Whether a failover of one service's primary is under way, from the events seen.

    Immutable: :meth:`apply` returns the next state. Events from several sentinels may be
    mixed; each one is tracked by ``source``, so one sentinel's abort does not end another's
    failover. Events about a primary other than the known one (late events of a finished
    failover) are ignored.

    Transitions (events about our service and our primary only):

    - failover progress (``+try-failover``, ``+elected-leader``, ``+selected-slave``,
      ``+promoted-slave``, ``+failover-state-*``, ``+failover-end``): the source joins
      ``failing_over``;
    - ``-failover-abort-*``: the source leaves ``failing_over``; ``+reset-master``: the source
      is forgotten;
    - ``+odown`` / ``-odown``: the source joins / leaves ``down``;
    - ``+switch-master`` to a new address: ``pending`` = that address (still not writable);
    - :meth:`with_primary` (the shell confirmed a primary with ``ROLE``): a new primary clears
      everything; the same primary only clears a ``pending`` switch that proved wrong.

    Writes may go to the primary (``writable``) when no sentinel reports a failover or an
    objectively-down primary and no switch awaits confirmation.
    """

    service: str
    primary: Address | None = None
    pending: Address | None = None
    failing_over: frozenset[str] = frozenset()
    down: frozenset[str] = frozenset()

    @property
    def writable(self) -> bool:
        """True when writes may go to ``primary`` now."""
        return self.pending is None and not self.failing_over and not self.down

    @property
    def in_progress(self) -> bool:
        """True while a failover is reported and not yet finished or aborted."""
        return self.pending is not None or bool(self.failing_over)

    def _about_us(self, event: SentinelEvent) -> bool:
        if event.service != self.service:
            return False
        return self.primary is None or event.primary in (self.primary, self.pending)

    def apply(self, event: SentinelEvent) -> FailoverState:
        """The state after ``event`` (``self`` when the event changes nothing)."""
        channel = event.channel
        if channel == "+switch-master":
            new = event.new_primary
            if event.service != self.service or new is None or new in (self.primary, self.pending):
                return self
            return replace(self, pending=new)
        if not self._about_us(event):
            return self
        source = event.source
        if channel in _PROGRESS:
            return self._with(failing_over=self.failing_over | {source})
        if channel.startswith("-failover-abort-"):
            return self._with(failing_over=self.failing_over - {source})
        if channel == "+reset-master":
            return self.forget(source)
        if event.instance_type == "master" and channel == "+odown":
            return self._with(down=self.down | {source})
        if event.instance_type == "master" and channel == "-odown":
            return self._with(down=self.down - {source})
        return self

    def _with(
        self, failing_over: frozenset[str] | None = None, down: frozenset[str] | None = None
    ) -> FailoverState:
        new = replace(
            self,
            failing_over=self.failing_over if failing_over is None else failing_over,
            down=self.down if down is None else down,
        )
        return self if new == self else new

    def forget(self, source: str) -> FailoverState:
        """Drop what ``source`` reported (its connection was lost: it may never finish)."""
        return self._with(failing_over=self.failing_over - {source}, down=self.down - {source})

    def with_primary(self, address: Address) -> FailoverState:
        """The state once ``address`` was confirmed as the primary (``ROLE`` says master)."""
        if address != self.primary:
            return FailoverState(self.service, primary=address)
        if self.pending is not None:
            return replace(self, pending=None)
        return self
