"""Write-behind: the cache answers at once, the database catches up, and a crash loses nothing.

``WriteBehind.set(key, value)`` runs one script on one slot that sets the cache entry and
appends the change to the key's partition stream: both happen or neither. Flushers (a thread
started here, an asyncio task in :class:`AsyncWriteBehind`, or ``smartcache flush-worker``
processes) read the streams with a consumer group, coalesce, call the store in batches and
acknowledge only what the store committed. The rules live in :mod:`._wb_core`; this module
and :mod:`._write_behind_async` only perform its effects. See docs/write-behind.md.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Generator, Sequence
from typing import Any, ClassVar, Final

from smartcache.cache._base import REDIS_ERRORS, CacheBase, CachePolicy
from smartcache.cache._codec import CorruptEntryError, Serializer, decode_entry, get_serializer
from smartcache.cache._protocol import AsyncRedisLike, RedisLike
from smartcache.cache._store import is_async_store, stream_version
from smartcache.cache._wb_core import (
    SET_SCRIPT,
    FlushOptions,
    FlushState,
    QueueLayout,
    RedisBatch,
    RoundResult,
    StoreCall,
    StorePing,
    flush_round,
)
from smartcache.exceptions import ConfigurationError, FlushTimeoutError, InvalidArgumentError

__all__ = ["Flusher", "FlusherBase", "WriteBehind", "WriteBehindBase"]

log = logging.getLogger("smartcache.cache")


class FlusherStats:
    """Counters of one flusher (thread-safe)."""

    FIELDS: Final = ("rounds", "read", "applied", "acked", "dead", "store_errors", "redis_errors")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(self.FIELDS, 0)

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

    def snapshot(self) -> dict[str, int]:
        """The counts now."""
        with self._lock:
            return dict(self._counts)


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
        if poll_interval <= 0 or max_backoff <= 0:
            raise InvalidArgumentError("poll_interval and max_backoff must be > 0 seconds")
        self.poll_interval = poll_interval
        self.max_backoff = max_backoff
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
        """KEYS and ARGV of :data:`SET_SCRIPT` for ``set(key, value)``."""
        key = self._check_key(key)
        raw = self.policy.serializer.dumps(value)
        data, px = self._entries._write_plan(key, value, 0, self.policy)
        p = self.layout.partition_of(key)
        return [self.layout.cache_key(key), self.layout.stream(p)], [data, px, key, raw]

    def _delete_args(self, key: str) -> tuple[list[str], list[Any]]:
        key = self._check_key(key)
        p = self.layout.partition_of(key)
        return [self.layout.cache_key(key), self.layout.stream(p)], [b"", 0, key, b""]

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
        return default if entry is None else entry.value

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
        cmds: list[tuple[Any, ...]] = []
        for p in range(self.layout.partitions):
            stream = self.layout.stream(p)
            cmds += [
                ("XLEN", stream),
                ("XLEN", self.layout.dead(p)),
                ("XRANGE", stream, "-", "+", "COUNT", 1),
            ]
        return cmds

    def _parse_stats(self, replies: Sequence[Any], flusher: dict[str, int]) -> dict[str, Any]:
        backlog = dead = 0
        oldest: int | None = None
        for i in range(self.layout.partitions):
            xlen, dlen, first = replies[3 * i : 3 * i + 3]
            backlog += int(xlen or 0)
            dead += int(dlen or 0)
            if first:
                ms = _id_ms(first[0][0])
                oldest = ms if oldest is None else min(oldest, ms)
        lag = max(0.0, (self._entries.now_ms() - oldest) / 1000) if oldest is not None else 0.0
        return {
            **self.counts,
            "backlog": backlog,
            "dead_letters": dead,
            "lag_seconds": lag,
            **{f"flusher_{k}": v for k, v in flusher.items()},
        }

    def _dead_commands(self, count: int) -> list[tuple[Any, ...]]:
        return [
            ("XRANGE", self.layout.dead(p), "-", "+", "COUNT", count)
            for p in range(self.layout.partitions)
        ]

    def _parse_dead(self, replies: Sequence[Any], count: int) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for reply in replies:
            for _dead_id, fields in reply or ():
                row = {_s(k): v for k, v in fields.items()}
                value = row.get("v", b"")
                op = _s(row.get("op", "s"))
                out.append(
                    {
                        "id": _s(row.get("id", "")),
                        "key": _s(row.get("k", "")),
                        "op": "delete" if op == "d" else "set",
                        "raw_value": value.encode() if isinstance(value, str) else value,
                        "error": _s(row.get("error", "")),
                        "attempts": int(row.get("attempts", 0) or 0),
                    }
                )
        out.sort(key=lambda r: r["id"])
        return out[:count]

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


def _s(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _id_ms(entry_id: Any) -> int:
    return int(_s(entry_id).split("-", 1)[0])


def run_batch_sync(client: RedisLike, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Run ``commands`` as one non-transactional pipeline; errors in place."""
    try:
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute(raise_on_error=False))
    except REDIS_ERRORS as exc:
        return [exc] * len(commands)


def run_round_sync(
    gen: Generator[RedisBatch | StoreCall | StorePing, Any, RoundResult],
    client: RedisLike,
    store: Any,
) -> RoundResult:
    """Drive one :func:`flush_round` with blocking calls."""
    reply: Any = None
    try:
        effect = next(gen)
        while True:
            if isinstance(effect, RedisBatch):
                reply = run_batch_sync(client, effect.commands)
            elif isinstance(effect, StoreCall):
                method = store.write_many if effect.op == "write" else store.delete_many
                try:
                    method(list(effect.items))
                    reply = None
                except Exception as exc:
                    reply = exc
            else:
                ping = getattr(store, "ping", None)
                try:
                    reply = None if ping is None else bool(ping())
                except Exception:
                    reply = False
            effect = gen.send(reply)
    except StopIteration as stop:
        result: RoundResult = stop.value
        return result


class FlusherBase:
    """Configuration and per-round bookkeeping shared by :class:`Flusher` and ``AsyncFlusher``.

    The shells only drive :meth:`_round` with their I/O and wait :meth:`_after` seconds.
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
    ) -> None:
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
        self.state = FlushState()
        self.stats = FlusherStats()
        self.on_round = on_round
        self._backoff = _Backoff(min(0.05, max_backoff), max_backoff)
        self._init_shell()

    #: whether this shell can await an async store (the asyncio one can)
    accepts_async_store: ClassVar[bool] = True

    def _init_shell(self) -> None:
        """Set up the shell's own wake-up and stop machinery."""

    def _round(self) -> Generator[RedisBatch | StoreCall | StorePing, Any, RoundResult]:
        return flush_round(self.layout, self.options, self.state, self.loads, self.clock() * 1000)

    def _record(self, result: RoundResult) -> None:
        """Count, log and report one round."""
        self.stats.record(result)
        if result.redis_error is not None:
            log.warning("write-behind flusher: Redis error, backing off: %r", result.redis_error)
        elif result.store_error is not None:
            log.warning("write-behind flusher: store error: %r", result.store_error)
        if self.on_round is not None:
            self.on_round(result)

    def _pause_after(self, result: RoundResult) -> float:
        """Seconds to wait before the next round: none while there is work, a poll interval
        when the queue is empty, backoff with jitter while Redis or the store fails."""
        if result.stalled:
            return self._backoff.next_delay()
        self._backoff.reset()
        return self.poll_interval if result.idle else 0.0


class Flusher(FlusherBase):
    """Moves queued changes from Redis into the store; run it in a thread or in a process.

    ``Flusher(client, store, layout).run(stop_event)`` loops until ``stop_event`` is set:
    rounds back to back while there is work, a ``poll_interval`` pause when the queue is
    empty (cut short by :meth:`kick`), exponential backoff with jitter while Redis or the
    store is failing. Any number of flushers may share a queue.
    """

    accepts_async_store: ClassVar[bool] = False
    client: RedisLike

    def _init_shell(self) -> None:
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> RoundResult:
        """One round; what it did."""
        result = run_round_sync(self._round(), self.client, self.store)
        self._record(result)
        return result

    def run(self, stop: threading.Event | None = None) -> None:
        """Flush until ``stop`` (or :meth:`stop`) is set."""
        stop = stop or self._stop
        while not stop.is_set() and not self._stop.is_set():
            delay = self._pause_after(self.run_once())
            if delay:
                self._wake.wait(delay)
                self._wake.clear()

    def kick(self) -> None:
        """Cut the current pause short (a writer wants its changes flushed now)."""
        self._wake.set()

    def start(self) -> threading.Thread:
        """Run in a daemon thread; returns it."""
        if self._thread is not None and self._thread.is_alive():
            return self._thread
        self._stop.clear()
        thread = threading.Thread(target=self.run, name="smartcache-flusher", daemon=True)
        self._thread = thread
        thread.start()
        return thread

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop after the current round (it finishes: nothing is left half-acknowledged)."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)


class WriteBehind(WriteBehindBase):
    """Write-behind over a sync client: ``set`` answers from Redis; a flusher feeds the store.

    ``WriteBehind(client, store, ttl=3600)`` starts one flusher thread (``flusher=False`` for
    processes that only write, with ``smartcache flush-worker`` processes flushing). ``set``
    returns the change's version; ``flush(timeout)`` waits until everything this object wrote
    reached the store; ``close()`` flushes and stops. Use it as a context manager.
    """

    client: RedisLike

    def __init__(
        self, client: RedisLike, store: Any = None, *, flusher: bool = True, **kw: Any
    ) -> None:
        super().__init__(client, store, **kw)
        if flusher and store is None:
            raise InvalidArgumentError(
                "WriteBehind(flusher=True) needs a store; pass store=..., or flusher=False "
                "when separate flush-worker processes write the database"
            )
        self._script = client.register_script(SET_SCRIPT)
        pipe = client.pipeline(transaction=False)
        for command in self._meta_commands():
            pipe.execute_command(*command)
        self._check_meta(pipe.execute()[1])
        self.flusher: Flusher | None = None
        if flusher:
            self.flusher = Flusher(
                client,
                store,
                self.layout,
                self.options,
                poll_interval=self.poll_interval,
                max_backoff=self.max_backoff,
                clock=self.clock,
                serializer=self.policy.serializer,
            )
            self.flusher.start()

    def set(self, key: str, value: Any) -> str:
        """Cache ``value`` under ``key`` and queue it for the store; the change's version."""
        keys, args = self._set_args(key, value)
        return self._written(key, self._script(keys=keys, args=args), "sets")

    def delete(self, key: str) -> str:
        """Drop ``key`` from the cache and queue its deletion from the store."""
        keys, args = self._delete_args(key)
        return self._written(key, self._script(keys=keys, args=args), "deletes")

    def get(self, key: str, default: Any = None) -> Any:
        """The cached value of ``key`` (``default`` on a miss)."""
        return self._decode_value(self.client.get(self.key_for(key)), default)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every change this object wrote has reached the store.

        Raises :class:`~smartcache.exceptions.FlushTimeoutError` after ``timeout`` seconds;
        the changes stay queued in Redis (nothing is dropped).
        """
        self._wait_flushed(self._flush_targets(), timeout)

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until the whole queue is empty (every writer's changes, e.g. after a crash)."""
        self._wait_flushed(self._all_targets(), timeout)

    def _wait_flushed(self, targets: dict[int, str], timeout: float) -> None:
        flow = self._wait_flow(targets, timeout)
        try:
            step = next(flow)
            while True:
                if isinstance(step, RedisBatch):
                    reply = run_batch_sync(self.client, step.commands)
                else:
                    if self.flusher is not None:
                        self.flusher.kick()
                    time.sleep(step)
                    reply = None
                step = flow.send(reply)
        except StopIteration:
            return

    def close(self, timeout: float = 30.0) -> None:
        """Flush (bounded by ``timeout``), then stop the flusher thread."""
        try:
            if self.flusher is not None:
                self.flush(timeout)
        finally:
            if self.flusher is not None:
                self.flusher.stop()

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> dict[str, Any]:
        """Counts, ``backlog`` (queued entries), ``dead_letters`` and ``lag_seconds``."""
        pipe = self.client.pipeline(transaction=False)
        for command in self._stats_commands():
            pipe.execute_command(*command)
        flusher = self.flusher.stats.snapshot() if self.flusher is not None else {}
        return self._parse_stats(pipe.execute(), flusher)

    def dead_letters(self, count: int = 100) -> list[dict[str, Any]]:
        """Entries moved to the dead-letter streams, oldest first, with their errors."""
        pipe = self.client.pipeline(transaction=False)
        for command in self._dead_commands(count):
            pipe.execute_command(*command)
        return self._parse_dead(pipe.execute(), count)

    def __repr__(self) -> str:
        return (
            f"WriteBehind(name={self.layout.name!r}, partitions={self.layout.partitions}, "
            f"store={type(self.store).__name__})"
        )
