"""The world-free parts of write-behind: what the thread and asyncio shells share.

Configuration, validation, the plan of a write (script keys and arguments), the flush-wait
flow, stats parsing, and a flusher's per-round bookkeeping. No I/O here: the shells
(``_write_behind_async.py`` and its generated twin ``_write_behind.py``) perform it, and
the flush rules themselves live in :mod:`._wb_core`.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, ClassVar, Final

from smartcache.cache._base import CacheBase, CachePolicy
from smartcache.cache._codec import (
    CorruptEntryError,
    Serializer,
    builtin_name,
    decode_entry,
    get_serializer,
)
from smartcache.cache._protocol import AsyncRedisLike, RedisLike
from smartcache.cache._store import is_async_store, stream_version
from smartcache.cache._wb_core import (
    REPLAY_SCRIPT,
    FlushOptions,
    FlushState,
    QueueLayout,
    RedisBatch,
    RoundResult,
    StoreCall,
    StorePing,
    flush_round,
)
from smartcache.core.stats import QUEUE_GAUGES
from smartcache.exceptions import ConfigurationError, FlushTimeoutError, InvalidArgumentError

__all__ = ["FlusherBase", "FlusherStats", "WriteBehindBase"]

log = logging.getLogger("smartcache.cache")


class FlusherStats:
    """Counters of one flusher (thread-safe)."""

    FIELDS: Final = ("rounds", "read", "applied", "acked", "dead", "store_errors", "redis_errors")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.FIELDS, 0)
        self._gauges: dict[str, int] = {}

    def record(self, result: RoundResult) -> None:
        """Add one round's result."""
        with self._lock:
            c = self._counts
            c["rounds"] += 1
            c["read"] += result.read
            c["applied"] += result.applied
            c["acked"] += result.acked
            c["dead"] += result.dead
            c["store_errors"] += result.store_error is not None
            c["redis_errors"] += result.redis_error is not None

    def measured(self, backlog: int, dead_letters: int, lag_ms: int) -> None:
        """The flusher's latest measure of its queue (see :data:`QUEUE_GAUGES`)."""
        with self._lock:
            self._gauges = {"backlog": backlog, "dead_letters": dead_letters, "lag_ms": lag_ms}

    def snapshot(self) -> dict[str, int]:
        """The counts now, and the queue's last measure once the flusher has taken one."""
        with self._lock:
            return {**self._counts, **self._gauges}


class _Backoff:
    """Exponential backoff with full jitter for stalled rounds, reset by progress."""

    def __init__(self, base: float, cap: float) -> None:
        self.base, self.cap, self.failures = base, cap, 0

    def next_delay(self) -> float:
        self.failures += 1
        return random.uniform(0, min(self.cap, self.base * 2 ** min(self.failures, 20)))

    def reset(self) -> None:
        self.failures = 0


class WriteBehindBase:
    """Layout, validation, the plan of a write, and stats parsing for both shells."""

    def __init__(
        self,
        client: RedisLike | AsyncRedisLike,
        store: Any = None,
        *,
        name: str = "default",
        namespace: str = "sc",
        partitions: int = 16,
        group: str = "flushers",
        policy: CachePolicy | None = None,
        options: FlushOptions | None = None,
        poll_interval: float = 0.05,
        max_backoff: float = 5.0,
        probe_interval: float = 1.0,
        **policy_options: Any,
    ) -> None:
        policy = (policy or CachePolicy(ttl=3600.0, namespace=namespace)).with_options(
            **policy_options
        )
        self.client = client
        self.policy = policy
        self._entries = CacheBase(client, policy)  # entry encoding, as Cache writes it
        self.clock = self._entries.clock
        self.layout = QueueLayout(name, namespace, partitions, group)
        self.store = store
        self.options = options or FlushOptions()
        _check_intervals(poll_interval, max_backoff, probe_interval)
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
        self.probe_interval = probe_interval
        self._last_ids: dict[int, str] = {}
        self._ids_lock = threading.Lock()
        self.counts = {"sets": 0, "deletes": 0}

    # -- planning (pure) ---------------------------------------------------------------
    def key_for(self, key: str) -> str:
        """The Redis key holding ``key``'s cache entry (readable by ``Cache.get_or_load``)."""
        return self.layout.cache_key(self._check_key(key))

    @staticmethod
    def _check_key(key: Any) -> str:
        if not isinstance(key, str) or not key:
            raise InvalidArgumentError(
                f"write-behind keys are non-empty str, got {type(key).__name__} {key!r}: "
                "pass the database key as text (e.g. f'user:{user_id}')"
            )
        return key

    def _set_args(self, key: str, value: Any) -> tuple[list[str], list[Any]]:
        """KEYS and ARGV of :data:`SET_SCRIPT` for ``set(key, value)``: the entry pinned
        (no expiry) until its change is committed."""
        key = self._check_key(key)
        raw = self.policy.serializer.dumps(value)
        data, px = self._entries._pinned_plan(value, self.policy)
        return self._script_keys(key), [data, px, key, raw, "s"]

    def _delete_args(self, key: str) -> tuple[list[str], list[Any]]:
        """For ``delete(key)``: a tombstone (an entry holding None), pinned likewise, so
        no reader loads the store's row before the delete reached it."""
        key = self._check_key(key)
        data, px = self._entries._pinned_plan(None, self.policy)
        return self._script_keys(key), [data, px, key, b"", "d"]

    def _script_keys(self, key: str) -> list[str]:
        p = self.layout.partition_of(key)
        return [self.layout.cache_key(key), self.layout.stream(p), self.layout.dirty(p)]

    def _pending_value(self, reply: Any, default: Any) -> Any:
        """What :data:`PENDING_SCRIPT` answered, as ``get`` returns it."""
        kind = int(reply[0])
        if kind == 1:
            return self._decode_value(reply[1], default)
        if kind == 3:
            raw = reply[1]
            if isinstance(raw, str):
                raw = raw.encode("utf-8", "surrogateescape")
            return self.policy.serializer.loads(raw)
        return default

    def _written(self, key: str, entry_id: Any, counter: str) -> str:
        text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        p = self.layout.partition_of(key)
        with self._ids_lock:
            self._last_ids[p] = text
            self.counts[counter] += 1
        return stream_version(text)

    def _decode_value(self, raw: Any, default: Any) -> Any:
        try:
            entry = decode_entry(raw, self.policy.serializer)
        except CorruptEntryError:
            return default
        # None: no entry, or a tombstone (a delete not yet committed)
        return default if entry is None or entry.value is None else entry.value

    def _flush_targets(self) -> dict[int, str]:
        with self._ids_lock:
            return dict(self._last_ids)

    def _wait_flow(
        self, targets: dict[int, str], timeout: float
    ) -> Generator[RedisBatch | float, Any, None]:
        """Wait until ``targets`` are flushed: yields checks (-> replies) and pauses (-> None).

        Raises :class:`~smartcache.exceptions.FlushTimeoutError` after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        delay = 0.002
        while targets:
            replies = yield RedisBatch(tuple(self._flush_check(targets)))
            for p, reply in zip(list(targets), replies, strict=True):
                if not isinstance(reply, BaseException) and not reply:
                    del targets[p]
            if not targets:
                return
            if time.monotonic() >= deadline:
                raise FlushTimeoutError(
                    f"write-behind queue {self.layout.name!r}: changes in {len(targets)} "
                    f"partition(s) not flushed within {timeout}s (they stay queued in Redis; "
                    "is a flusher running and the store reachable?)",
                    partitions=sorted(targets),
                )
            yield delay
            delay = min(delay * 2, 0.1)

    def _all_targets(self) -> dict[int, str]:
        return dict.fromkeys(range(self.layout.partitions), "+")

    def _flush_check(self, targets: dict[int, str]) -> list[tuple[Any, ...]]:
        """Commands answering "is any entry up to what this writer wrote still queued?"."""
        return [("XRANGE", self.layout.stream(p), "-", i, "COUNT", 1) for p, i in targets.items()]

    def _stats_commands(self) -> list[tuple[Any, ...]]:
        return queue_probe_commands(self.layout)

    def _parse_stats(self, replies: Sequence[Any], flusher: dict[str, int]) -> dict[str, Any]:
        backlog, dead, lag_ms = parse_queue_probe(self.layout, replies, self._entries.now_ms())
        return {
            **self.counts,
            "backlog": backlog,
            "dead_letters": dead,
            "lag_seconds": lag_ms / 1000,
            **{f"flusher_{k}": v for k, v in flusher.items() if k not in QUEUE_GAUGES},
        }

    def _dead_commands(self, count: int) -> list[tuple[Any, ...]]:
        return [
            ("XRANGE", self.layout.dead(p), "-", "+", "COUNT", count)
            for p in range(self.layout.partitions)
        ]

    def _parse_dead(self, replies: Sequence[Any], count: int) -> list[dict[str, Any]]:
        """Dead letters, oldest change first: ``dead_id`` (``"<partition>:<ID in its
        dead-letter stream>"``, unique in the queue: stream IDs repeat across partitions),
        ``partition``, ``id`` (the change's ID in its queue stream), ``version``, ``key``,
        ``op``, ``raw_value``, ``error``, ``attempts``."""
        out: list[dict[str, Any]] = []
        for p, reply in enumerate(replies):
            for dead_id, fields in reply or ():
                row = {_s(k): v for k, v in fields.items()}
                value = row.get("v", b"")
                op = _s(row.get("op", "s"))
                original = _s(row.get("id", ""))
                version = _s(row.get("ver", "")) or (stream_version(original) if original else "")
                out.append(
                    {
                        "dead_id": f"{p}:{_s(dead_id)}",
                        "partition": p,
                        "id": original,
                        "version": version,
                        "key": _s(row.get("k", "")),
                        "op": "delete" if op == "d" else "set",
                        "raw_value": value.encode() if isinstance(value, str) else value,
                        "error": _s(row.get("error", "")),
                        "attempts": int(row.get("attempts", 0) or 0),
                    }
                )
        out.sort(key=lambda r: (r["version"], r["dead_id"]))
        return out[:count]

    def _replay_command(self, letter: Mapping[str, Any]) -> tuple[Any, ...]:
        """The REPLAY_SCRIPT call that moves ``letter`` back into its queue partition."""
        key, p = str(letter["key"]), int(letter["partition"])
        return (
            "EVAL",
            REPLAY_SCRIPT,
            4,
            self.layout.stream(p),
            self.layout.dead(p),
            self.layout.cache_key(key) if key else self.layout.stream(p),
            self.layout.dirty(p),
            _stream_id(letter["dead_id"]),
            key,
            "d" if letter["op"] == "delete" else "s",
            letter.get("raw_value") or b"",
            letter["version"],
        )

    def _drop_command(self, letter: Mapping[str, Any]) -> tuple[Any, ...]:
        dead = self.layout.dead(int(letter["partition"]))
        return ("XDEL", dead, _stream_id(letter["dead_id"]))

    @staticmethod
    def _select(
        letters: Sequence[dict[str, Any]],
        ids: Sequence[str] | None,
        keys: Sequence[str] | None,
    ) -> list[dict[str, Any]]:
        """The dead letters named by ``ids`` (their ``dead_id``) or ``keys``; all when
        neither is given. Oldest change first."""
        if ids is None and keys is None:
            return list(letters)
        wanted_ids, wanted_keys = set(ids or ()), set(keys or ())
        return [d for d in letters if d["dead_id"] in wanted_ids or d["key"] in wanted_keys]

    def _meta_commands(self) -> list[tuple[Any, ...]]:
        meta = self.layout.meta()
        return [
            ("HSETNX", meta, "partitions", self.layout.partitions),
            ("HGET", meta, "partitions"),
        ]

    def _check_meta(self, stored: Any) -> None:
        if stored is not None and int(stored) != self.layout.partitions:
            raise ConfigurationError(
                f"write-behind queue {self.layout.name!r} was created with {int(stored)} "
                f"partitions, this process asks for {self.layout.partitions}: keys would land "
                "in other partitions. Use the same partitions= everywhere, or drain the queue "
                f"(flush()) and delete {self.layout.meta()!r} before changing it"
            )


def _stream_id(dead_id: str) -> str:
    """The stream ID part of a ``"<partition>:<ID>"`` dead-letter handle."""
    return dead_id.split(":", 1)[1] if ":" in dead_id else dead_id


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _check_intervals(poll_interval: float, max_backoff: float, probe_interval: float) -> None:
    if poll_interval <= 0 or max_backoff <= 0 or probe_interval <= 0:
        raise InvalidArgumentError(
            "poll_interval, max_backoff and probe_interval must be > 0 seconds"
        )


def _id_ms(entry_id: Any) -> int:
    return int(_s(entry_id).split("-", 1)[0])


def queue_probe_commands(layout: QueueLayout) -> list[tuple[Any, ...]]:
    """The commands that measure a queue: per partition, its length, its dead letters'
    length and its oldest entry (three O(1) reads, nothing scanned)."""
    cmds: list[tuple[Any, ...]] = []
    for p in range(layout.partitions):
        stream = layout.stream(p)
        cmds += [
            ("XLEN", stream),
            ("XLEN", layout.dead(p)),
            ("XRANGE", stream, "-", "+", "COUNT", 1),
        ]
    return cmds


def parse_queue_probe(
    layout: QueueLayout, replies: Sequence[Any], now_ms: int
) -> tuple[int, int, int]:
    """(backlog, dead letters, lag in ms) from the replies to :func:`queue_probe_commands`;
    the lag is the age of the oldest queued change (0 when the queue is empty)."""
    backlog = dead = 0
    oldest: int | None = None
    for i in range(layout.partitions):
        xlen, dlen, first = replies[3 * i : 3 * i + 3]
        backlog += int(xlen or 0)
        dead += int(dlen or 0)
        if first:
            ms = _id_ms(first[0][0])
            oldest = ms if oldest is None else min(oldest, ms)
    return backlog, dead, max(0, now_ms - oldest) if oldest is not None else 0


class FlusherBase:
    """Configuration and per-round bookkeeping shared by the flushers of both shells.

    The shells only drive :meth:`_round` with their I/O and wait :meth:`_pause_after` seconds.
    """

    def __init__(
        self,
        client: RedisLike | AsyncRedisLike,
        store: Any,
        layout: QueueLayout | None = None,
        options: FlushOptions | None = None,
        *,
        poll_interval: float = 0.05,
        max_backoff: float = 5.0,
        clock: Callable[[], float] = time.time,
        serializer: str | Serializer = "json",
        on_round: Callable[[RoundResult], None] | None = None,
        probe_interval: float = 1.0,
    ) -> None:
        _check_intervals(poll_interval, max_backoff, probe_interval)
        self.store_is_async = is_async_store(store)
        if self.store_is_async and not self.accepts_async_store:
            raise InvalidArgumentError(
                "this store's write_many is async: use AsyncWriteBehind (an asyncio flusher), "
                "or give the sync Flusher a sync store"
            )
        self.client = client
        self.store = store
        self.layout = layout or QueueLayout()
        self.options = options or FlushOptions()
        self.poll_interval = poll_interval
        self.clock = clock
        self.loads = get_serializer(serializer).loads
        self.serializer_name = builtin_name(get_serializer(serializer))
        self.state = FlushState()
        self.stats = FlusherStats()
        register = getattr(client, "_register_cache", None)  # a smartcache client: metrics
        if register is not None:
            register(self.layout.name, self.stats, kind="write_behind")
        # the queue is measured (backlog, dead letters, lag) only where someone can read it:
        # a smartcache client's stats() and metrics
        self._probe_interval = probe_interval if register is not None else None
        self._next_probe = time.monotonic() + probe_interval  # the first after one interval
        self.on_round = on_round
        self._backoff = _Backoff(min(0.05, max_backoff), max_backoff)
        self._init_shell()

    #: whether this shell can await an async store (the asyncio one can)
    accepts_async_store: ClassVar[bool] = True

    def _init_shell(self) -> None:
        """Set up the shell's own wake-up and stop machinery."""

    def _round(self) -> Generator[RedisBatch | StoreCall | StorePing, Any, RoundResult]:
        return flush_round(
            self.layout,
            self.options,
            self.state,
            self.loads,
            self.clock() * 1000,
            serializer=self.serializer_name,
        )

    def _record(self, result: RoundResult) -> None:
        """Count, log and report one round."""
        self.stats.record(result)
        if result.redis_error is not None:
            log.warning("write-behind flusher: Redis error, backing off: %r", result.redis_error)
        elif result.store_error is not None:
            log.warning("write-behind flusher: store error: %r", result.store_error)
        if self.on_round is not None:
            self.on_round(result)

    def _probe_due(self) -> bool:
        """Whether to measure the queue now (at most once per ``probe_interval``)."""
        if self._probe_interval is None:
            return False
        now = time.monotonic()
        if now < self._next_probe:
            return False
        self._next_probe = now + self._probe_interval
        return True

    def _probed(self, replies: Sequence[Any]) -> None:
        self.stats.measured(*parse_queue_probe(self.layout, replies, int(self.clock() * 1000)))

    def _pause_after(self, result: RoundResult) -> float:
        """Seconds to wait before the next round: none while there is work, a poll interval
        when the queue is empty, backoff with jitter while Redis or the store fails."""
        if result.stalled:
            return self._backoff.next_delay()
        self._backoff.reset()
        return self.poll_interval if result.idle else 0.0
