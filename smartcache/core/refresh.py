"""The slot-map refresh as a flow: whom to ask, which view to trust, which suspects to clear.

Shared by the sync and async cluster states. The flow yields :class:`AskTopology` (the
driver answers with the node's :class:`~smartcache.core.slotmap.SlotMap`, or the exception
it met) and :class:`Probe` (answer: did the node reply to PING), and returns the new map
with the set of suspects to clear. Collapsing concurrent refreshes and rate limiting are the
drivers' business (their locks differ); the rules are here, once.

Pure: randomness is a parameter, no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator, Sequence
from dataclasses import dataclass
from typing import Any

from smartcache.core.slotmap import SlotMap, choose_view
from smartcache.exceptions import NoReachableNodeError

__all__ = [
    "REPROBE_TIMEOUT",
    "VIEWS_WANTED",
    "AskTopology",
    "Probe",
    "candidates",
    "periodic_refresh_due",
    "refresh_flow",
]

#: how many nodes' views a refresh compares
VIEWS_WANTED = 3

#: the probe timeout (seconds) for a suspect whose last probe went unanswered: a node that
#: recovered answers PING at once, and while a hung primary's replica is being promoted a
#: refresh must not spend a full probe timeout on it each time (the promotion would reach
#: the callers that long late)
REPROBE_TIMEOUT = 0.1


@dataclass(frozen=True, slots=True)
class AskTopology:
    """Ask ``address`` for its view (CLUSTER SHARDS, else CLUSTER SLOTS)."""

    address: str


@dataclass(frozen=True, slots=True)
class Probe:
    """PING ``address`` with a short timeout (``quick``: :data:`REPROBE_TIMEOUT`, for a
    suspect that already left a probe unanswered)."""

    address: str
    quick: bool = False


def candidates(
    current: SlotMap | None,
    startup: Sequence[str],
    suspects: Collection[str],
    shuffle: Callable[[list[str]], None],
) -> list[str]:
    """Whom to ask, in order: known primaries, then replicas, then the startup nodes
    (each group shuffled), with suspected nodes last."""
    primaries = list(current.primaries) if current is not None else []
    replicas = [a for a in (current.nodes if current is not None else ()) if a not in primaries]
    shuffle(primaries)
    shuffle(replicas)
    ordered = list(dict.fromkeys([*primaries, *replicas, *startup]))
    return sorted(ordered, key=lambda a: a in suspects)  # stable: keeps the shuffled order


def refresh_flow(
    current: SlotMap | None,
    startup: Sequence[str],
    suspects: Collection[str],
    shuffle: Callable[[list[str]], None],
    unanswered: Collection[str] = (),
) -> Generator[AskTopology | Probe, Any, tuple[SlotMap, set[str]]]:
    """Ask up to :data:`VIEWS_WANTED` nodes, keep the majority view, re-check suspects.

    Returns ``(new_map, suspects_to_clear)``: a suspect is cleared when it no longer serves
    slots (it was failed over) or answers a probe; a suspect in ``unanswered`` (its last
    probe timed out) is probed quickly. Raises :class:`NoReachableNodeError` listing every
    node tried when none gave a usable view.
    """
    views: list[SlotMap] = []
    tried: list[str] = []
    errors: list[str] = []
    for address in candidates(current, startup, suspects, shuffle):
        if len(views) >= VIEWS_WANTED:
            break
        tried.append(address)
        answer = yield AskTopology(address)
        if isinstance(answer, BaseException):
            errors.append(f"{address}: {type(answer).__name__}: {answer}")
        elif answer.covered:
            views.append(answer)
    if not views:
        detail = "; ".join(errors) or "no node reported any slot"
        raise NoReachableNodeError(
            f"could not load the cluster topology from any of {len(tried)} node(s): {detail}",
            addresses=tried,
        )
    new_map = choose_view(views)
    cleared: set[str] = set()
    for address in suspects:
        if address not in new_map.primaries or (yield Probe(address, address in unanswered)):
            cleared.add(address)
    return new_map, cleared


def periodic_refresh_due(last_refresh: float, now: float, interval: float | None) -> bool:
    """Whether the periodic topology refresh (``refresh_interval=``) is due at ``now``: the
    map is older than ``interval`` seconds. A map just refreshed for another reason (MOVED,
    a lost node) resets the clock, so no refresh is made twice for one change; ``None``
    turns periodic refreshes off. Both clients' timers ask this."""
    return interval is not None and now - last_refresh >= interval
