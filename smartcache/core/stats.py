"""What a client counts about the work it did for its caller: redirects followed, retries by
reason, ambiguous failures, topology refreshes by cause, nodes added and removed, Sentinel
failovers followed and how long writes were held for them.

I/O-free and off the hot path: every count is of an *event* (a redirect, a retry, a
refresh), never of an ordinary command, so a client pays nothing for it while nothing goes
wrong. :class:`Counters` is fed by the retry flows (:func:`Counters.decided`, one rule for
every flow) and by the topology states; :meth:`Counters.snapshot` returns a typed, frozen
:class:`ClientStats`.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import redis.exceptions as rx

from smartcache.core.retry import Action, AwaitingTopology, Decision

__all__ = ["ClientStats", "Counters", "PoolUsage", "retry_reason"]


class PoolUsage(NamedTuple):
    """One connection pool now (:meth:`SmartClient.pool_usage`)."""

    address: str  #: the node, ``host:port``
    idle: int  #: connections open and free
    used: int  #: connections handed out (an asyncio pool's shared one counts once)
    pending: int  #: callers waiting for a connection
    max: int | None  #: ``max_connections`` (None: no limit)
    #: asyncio: writes of the shared connection and the commands they carried (their ratio
    #: is the auto-pipelining batch size); 0 for a sync pool
    writes: int = 0
    commands: int = 0


@dataclass(frozen=True, slots=True)
class ClientStats:
    """A snapshot of a client's counters (see :meth:`SmartClient.stats`).

    - ``moved`` / ``ask``: ``MOVED`` / ``ASK`` redirects followed;
    - ``retries``: attempts re-sent after a failure, by reason (``"TRYAGAIN"``,
      ``"CLUSTERDOWN"``, ``"LOADING"``, ``"READONLY"``, ``"MASTERDOWN"``,
      ``"connection"``, ``"timeout"``, ``"node_suspected"``, or the error's class name);
    - ``ambiguous``: failures surfaced as :class:`~smartcache.AmbiguousCommandError` (the
      command may have run);
    - ``refreshes``: slot-map refreshes installed, by cause (``"startup"``, ``"moved"``,
      ``"node_failure"``, ``"retry"``, ``"periodic"``, ``"forced"``);
    - ``nodes_added`` / ``nodes_removed``: cluster nodes that appeared in / left the map;
    - ``failovers``: Sentinel primary switches followed; ``write_fence_seconds``: total time
      writes were held while a failover of the primary was reported;
    - ``pool_timeouts``: callers that gave up waiting for a pooled connection
      (:class:`~smartcache.PoolExhaustedError`);
    - ``near_cache``: the near cache's :class:`~smartcache.NearStats`, if it has one;
    - ``caches``: the counters of each ``@cached`` function and ``Cache`` on this client, by
      name (``module.qualname`` of the function, or the Cache's namespace): ``hits``,
      ``misses``, ``loads`` (recomputes), ``errors``, ``stale_serves``, ``lock_waits``,
      ``refreshes``, ``bloom_rejects``;
    - ``write_behind``: the counters of each write-behind flusher running in this process on
      this client, by queue name: ``rounds``, ``read``, ``applied``, ``acked``, ``dead``
      (moved to the dead letters), ``store_errors``, ``redis_errors``; and, once the
      flusher has measured its queue (each second), the gauges ``backlog`` (changes
      queued), ``dead_letters`` (changes in the dead-letter streams) and ``lag_ms`` (age of
      the oldest queued change, 0 when none is queued).
    """

    moved: int = 0
    ask: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    ambiguous: int = 0
    refreshes: dict[str, int] = field(default_factory=dict)
    nodes_added: int = 0
    nodes_removed: int = 0
    failovers: int = 0
    write_fence_seconds: float = 0.0
    pool_timeouts: int = 0
    near_cache: Any = None
    caches: dict[str, dict[str, int]] = field(default_factory=dict)
    write_behind: dict[str, dict[str, int]] = field(default_factory=dict)


_REASONS: tuple[tuple[type[BaseException], str], ...] = (
    (rx.TryAgainError, "TRYAGAIN"),
    (rx.ClusterDownError, "CLUSTERDOWN"),
    (rx.BusyLoadingError, "LOADING"),
    (rx.ReadOnlyError, "READONLY"),
    (rx.TimeoutError, "timeout"),
    (TimeoutError, "timeout"),
    (rx.ConnectionError, "connection"),
    (ConnectionError, "connection"),
    (OSError, "connection"),
    (AwaitingTopology, "node_suspected"),
)


#: what a write-behind flusher measures of its queue: shared by every flusher of that
#: queue, so merged by maximum, not summed
QUEUE_GAUGES: Final = frozenset({"backlog", "dead_letters", "lag_ms"})


def retry_reason(error: BaseException) -> str:
    """The label of a retry caused by ``error``."""
    for kind, label in _REASONS:
        if isinstance(error, kind):
            return label
    text = str(error)
    if text.startswith("MASTERDOWN"):
        return "MASTERDOWN"
    return type(error).__name__


class Counters:
    """The mutable counters behind :class:`ClientStats` (one per client, shared by its
    threads: updates take ``lock``, which the client passes in (a ``threading.Lock``; the
    core imports no threading), and happen only on the events counted)."""

    __slots__ = (
        "_caches",
        "_lock",
        "ambiguous",
        "ask",
        "failovers",
        "listener",
        "moved",
        "nodes_added",
        "nodes_removed",
        "pool_timeouts",
        "refreshes",
        "retries",
        "write_fence_seconds",
    )

    def __init__(self, lock: AbstractContextManager[Any] | None = None) -> None:
        self._lock = lock if lock is not None else nullcontext()
        self.moved = 0
        self.ask = 0
        self.retries: dict[str, int] = {}
        self.ambiguous = 0
        self.refreshes: dict[str, int] = {}
        self.nodes_added = 0
        self.nodes_removed = 0
        self.failovers = 0
        self.write_fence_seconds = 0.0
        self.pool_timeouts = 0
        #: called with each decision after the counts (the client's tracing, if on)
        self.listener: Callable[[Decision, BaseException], None] | None = None
        #: (kind, name) -> statistics sources (held weakly: a Cache can go away)
        self._caches: dict[tuple[str, str], list[weakref.ref[Any]]] = {}

    def add_cache(self, name: str, source: Any, kind: str = "cache") -> None:
        """Report ``source.snapshot()`` (a dict of counts) under ``name`` in snapshots
        (``kind``: ``"cache"`` or ``"write_behind"``); sources of one name are summed."""
        with self._lock:
            refs = [r for r in self._caches.get((kind, name), []) if r() is not None]
            refs.append(weakref.ref(source))
            self._caches[kind, name] = refs

    def decided(self, decision: Decision, error: BaseException) -> None:
        """Count what a retry flow decided after ``error`` (the one place that maps
        decisions to counts, for every flow)."""
        action = decision.action
        with self._lock:
            if action is Action.MOVED:
                self.moved += 1
            elif action is Action.ASK:
                self.ask += 1
            elif action is Action.RETRY:
                reason = retry_reason(error)
                self.retries[reason] = self.retries.get(reason, 0) + 1
            elif decision.ambiguous:
                self.ambiguous += 1
        listener = self.listener
        if listener is not None:
            listener(decision, error)

    def refreshed(self, cause: str, added: int, removed: int) -> None:
        """A slot map was installed (``cause``), with ``added``/``removed`` nodes."""
        with self._lock:
            self.refreshes[cause] = self.refreshes.get(cause, 0) + 1
            self.nodes_added += added
            self.nodes_removed += removed

    def failed_over(self) -> None:
        """A Sentinel switch to a new primary was followed."""
        with self._lock:
            self.failovers += 1

    def fenced(self, seconds: float) -> None:
        """Writes were held ``seconds`` for a failover."""
        with self._lock:
            self.write_fence_seconds += seconds

    def pool_timed_out(self) -> None:
        """A caller gave up waiting for a pooled connection."""
        with self._lock:
            self.pool_timeouts += 1

    def snapshot(self, near_cache: Any = None) -> ClientStats:
        """The counters now (copies)."""
        by_kind: dict[str, dict[str, dict[str, int]]] = {"cache": {}, "write_behind": {}}
        with self._lock:
            sources = [(key, [r() for r in refs]) for key, refs in self._caches.items()]
        for (kind, name), found in sources:
            for source in found:
                if source is None:
                    continue
                total = by_kind.setdefault(kind, {}).setdefault(name, {})
                for k, v in source.snapshot().items():
                    # two flushers of one queue count their own work but measure the same
                    # queue: counts add up, measures do not
                    total[k] = max(total.get(k, 0), v) if k in QUEUE_GAUGES else total.get(k, 0) + v
        with self._lock:
            return ClientStats(
                moved=self.moved,
                ask=self.ask,
                retries=dict(self.retries),
                ambiguous=self.ambiguous,
                refreshes=dict(self.refreshes),
                nodes_added=self.nodes_added,
                nodes_removed=self.nodes_removed,
                failovers=self.failovers,
                write_fence_seconds=self.write_fence_seconds,
                pool_timeouts=self.pool_timeouts,
                near_cache=near_cache,
                caches=by_kind["cache"],
                write_behind=by_kind["write_behind"],
            )
