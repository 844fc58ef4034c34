# Generated from smartcache/cache/_write_behind_async.py by scripts/unasync.py: do not edit.
"""Write-behind: the cache answers at once, the database catches up, and a crash loses nothing.

``set(key, value)`` runs one script on one slot that sets the cache entry and appends the
change to the key's partition stream: both happen or neither. Flushers (a thread of the
sync shell, a task of the asyncio one, or ``smartcache flush-worker`` processes) read the
streams with a consumer group, coalesce, call the store in batches and acknowledge only what
the store committed. The rules live in :mod:`._wb_core`, what both shells share in
:mod:`._wb_base`; the shells only perform the I/O. The asyncio shell calls a sync store in a
worker thread (``asyncio.to_thread``), so the event loop never blocks on the database, and
awaits a coroutine ``write_many``. See docs/write-behind.md.

The thread shell (``_write_behind.py``) is generated from the asyncio one
(``_write_behind_async.py``) by ``scripts/unasync.py``; what threads and tasks do
differently is in ``_primitives.py`` / ``_primitives_async.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any, ClassVar

from smartcache.cache._base import REDIS_ERRORS
from smartcache.cache._primitives import (
    CAN_AWAIT,
    Event,
    Worker,
    alive,
    call_store,
    join,
    sleep,
    spawn,
    start_in_init,
    wait_event,
)
from smartcache.cache._protocol import RedisLike
from smartcache.cache._wb_base import FlusherBase, WriteBehindBase, _s, log, queue_probe_commands
from smartcache.cache._wb_core import (
    PENDING_SCRIPT,
    SET_SCRIPT,
    RedisBatch,
    RoundResult,
    StoreCall,
    StorePing,
)
from smartcache.exceptions import InvalidArgumentError

__all__ = ["Flusher", "WriteBehind"]


def run_batch(client: RedisLike, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Run ``commands`` as one non-transactional pipeline; errors in place."""
    try:
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute(raise_on_error=False))
    except REDIS_ERRORS as exc:
        return [exc] * len(commands)


def run_round(
    gen: Generator[RedisBatch | StoreCall | StorePing, Any, RoundResult],
    client: RedisLike,
    store: Any,
    store_is_async: bool,
) -> RoundResult:
    """Drive one :func:`~smartcache.cache._wb_core.flush_round`: perform what it yields."""
    reply: Any = None
    try:
        effect = next(gen)
        while True:
            if isinstance(effect, RedisBatch):
                reply = run_batch(client, effect.commands)
            elif isinstance(effect, StoreCall):
                method = store.write_many if effect.op == "write" else store.delete_many
                try:
                    call_store(method, store_is_async, list(effect.items))
                    reply = None
                except Exception as exc:
                    reply = exc
            else:
                ping = getattr(store, "ping", None)
                try:
                    reply = None if ping is None else bool(call_store(ping, store_is_async))
                except Exception:
                    reply = False
            effect = gen.send(reply)
    except StopIteration as stop:
        result: RoundResult = stop.value
        return result


class Flusher(FlusherBase):
    """Moves queued changes from Redis into the store; in a thread, a task or a process.

    ``Flusher(client, store, layout).run(stop_event)`` loops until ``stop_event`` (or
    :meth:`stop`) is set: rounds back to back while there is work, a ``poll_interval`` pause
    when the queue is empty (cut short by :meth:`kick`), exponential backoff with jitter
    while Redis or the store is failing. Any number of flushers may share a queue.
    ``start()`` runs it in a daemon thread, or (the asyncio shell, which also takes an async
    store) in a task of the running loop.
    """

    accepts_async_store: ClassVar[bool] = CAN_AWAIT
    client: RedisLike

    def _init_shell(self) -> None:
        self._wake = Event()
        self._stop = Event()
        self._worker: Worker | None = None

    def run_once(self) -> RoundResult:
        """One round; what it did."""
        result = run_round(self._round(), self.client, self.store, self.store_is_async)
        self._record(result)
        return result

    def run(self, stop: Event | None = None) -> None:
        """Flush until ``stop`` (or :meth:`stop`) is set."""
        stop = stop or self._stop
        while not stop.is_set() and not self._stop.is_set():
            delay = self._pause_after(self.run_once())
            if self._probe_due():
                self.probe()
            if delay and not self._stop.is_set():
                wait_event(self._wake, delay)
                self._wake.clear()

    def probe(self) -> None:
        """Measure the queue (backlog, dead letters, lag) for ``stats()`` and the metrics;
        a failure only leaves the last measure in place (the round reports Redis errors)."""
        pipe = self.client.pipeline(transaction=False)
        for command in queue_probe_commands(self.layout):
            pipe.execute_command(*command)
        try:
            replies = pipe.execute()
        except REDIS_ERRORS as e:  # a measure is never worth stopping a flusher
            log.debug("write-behind flusher: queue probe failed: %r", e)
        else:
            self._probed(replies)

    def kick(self) -> None:
        """Cut the current pause short (a writer wants its changes flushed now)."""
        self._wake.set()

    def start(self) -> Worker:
        """Run in a daemon thread, or a task of the running loop; returns it."""
        if self._worker is None or not alive(self._worker):
            self._stop.clear()
            self._worker = spawn(self.run, "smartcache-flusher")
        return self._worker

    def stop(self, timeout: float | None = 10.0) -> None:
        """Stop after the current round (it finishes: nothing is left half-acknowledged),
        waiting up to ``timeout`` seconds for it; a task is then cancelled (it never outlives
        this call), a thread ends after its round."""
        self._stop.set()
        self._wake.set()
        if self._worker is not None:
            join(self._worker, timeout)


class WriteBehind(WriteBehindBase):
    """Write-behind: ``set`` answers from Redis; a flusher feeds the store.

    ``WriteBehind(client, store, ttl=3600)`` starts one flusher: a thread, at once, over a
    sync client; a task of the running loop, with the first write, the context manager or
    ``start()``, in the asyncio shell (over ``redis.asyncio`` or the asyncio smartcache
    client). ``flusher=False`` for processes that only write, with ``smartcache
    flush-worker`` processes flushing. ``set`` returns the change's version;
    ``flush(timeout)`` waits until everything this object wrote reached the store; closing
    flushes and stops. Use it as a context manager.
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
        self._pending = client.register_script(PENDING_SCRIPT)
        self._checked = False
        self.flusher: Flusher | None = None
        if flusher:
            self.flusher = Flusher(
                client,
                store,
                self.layout,
                self.options,
                poll_interval=self.poll_interval,
                max_backoff=self.max_backoff,
                probe_interval=self.probe_interval,
                clock=self.clock,
                serializer=self.policy.serializer,
            )
        start_in_init(self.start)

    def start(self) -> None:
        """Check the queue's partition count and start the flusher (idempotent)."""
        if not self._checked:
            pipe = self.client.pipeline(transaction=False)
            for command in self._meta_commands():
                pipe.execute_command(*command)
            replies = pipe.execute()
            self._check_meta(replies[1])
            self._checked = True
        if self.flusher is not None:
            self.flusher.start()

    def set(self, key: str, value: Any) -> str:
        """Cache ``value`` under ``key`` and queue it for the store; the change's version."""
        keys, args = self._set_args(key, value)
        if not self._checked:
            self.start()
        return self._written(key, self._script(keys=keys, args=args), "sets")

    def delete(self, key: str) -> str:
        """Drop ``key`` from the cache and queue its deletion from the store."""
        keys, args = self._delete_args(key)
        if not self._checked:
            self.start()
        return self._written(key, self._script(keys=keys, args=args), "deletes")

    def get(self, key: str, default: Any = None) -> Any:
        """The value of ``key`` as last written (``default`` when none is cached or pending).

        Read-your-writes: a change still queued is served even if its cache entry was
        evicted or deleted meanwhile (it is read from the queue), never the store's older
        row; a pending delete reads as ``default``."""
        raw = self.client.get(self.key_for(key))
        if raw is not None:
            return self._decode_value(raw, default)
        reply = self._pending(keys=self._script_keys(key))
        return self._pending_value(reply, default)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every change this object wrote has reached the store.

        Raises :class:`~smartcache.exceptions.FlushTimeoutError` after ``timeout`` seconds;
        the changes stay queued in Redis (nothing is dropped).
        """
        self._wait_flushed(self._flush_targets(), timeout)

    def drain(self, timeout: float = 30.0) -> None:
        """Wait until the whole queue is empty (every writer's changes, e.g. after a crash);
        starts the flusher first (a recovering process may never write)."""
        if not self._checked:
            self.start()
        self._wait_flushed(self._all_targets(), timeout)

    def _wait_flushed(self, targets: dict[int, str], timeout: float) -> None:
        flow = self._wait_flow(targets, timeout)
        try:
            step = next(flow)
            while True:
                if isinstance(step, RedisBatch):
                    reply = run_batch(self.client, step.commands)
                else:
                    if self.flusher is not None:
                        self.flusher.kick()
                    sleep(step)
                    reply = None
                step = flow.send(reply)
        except StopIteration:
            return

    def close(self, timeout: float = 30.0) -> None:
        """Flush (bounded by ``timeout``), then stop the flusher after its current round."""
        try:
            if self.flusher is not None and self._checked:
                self.flush(timeout)
        finally:
            if self.flusher is not None:
                self.flusher.stop()

    def __enter__(self) -> WriteBehind:
        self.start()
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
        """Entries moved to the dead-letter streams, oldest change first, with their errors:
        dicts of ``dead_id``, ``partition``, ``id``, ``version``, ``key``, ``op`` ("set" or
        "delete"), ``raw_value`` (serialized), ``error``, ``attempts``."""
        pipe = self.client.pipeline(transaction=False)
        for command in self._dead_commands(count):
            pipe.execute_command(*command)
        return self._parse_dead(pipe.execute(), count)

    def replay_dead_letters(
        self,
        ids: Sequence[str] | None = None,
        *,
        keys: Sequence[str] | None = None,
        dry_run: bool = False,
        limit: int = 100_000,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Move dead letters back into the queue (all of them, or those named by ``ids``,
        their ``dead_id``, or by ``keys``), oldest change first, each keeping its
        original version: the store applies it only if nothing newer reached the key.
        Each move is atomic (out of the dead letters exactly when queued again).
        ``dry_run``: only say which would be replayed. Returns the letters replayed (with
        ``requeued_id``; one another process took first is left out)."""
        chosen = self._select(self.dead_letters(limit), ids, keys)
        if dry_run:
            return chosen
        done: list[dict[str, Any]] = []
        for start in range(0, len(chosen), 100):
            batch = chosen[start : start + 100]
            replies = run_batch(self.client, [self._replay_command(d) for d in batch])
            for letter, reply in zip(batch, replies, strict=True):
                if isinstance(reply, BaseException):
                    raise reply
                if reply:
                    done.append({**letter, "requeued_id": _s(reply)})
            if progress is not None:
                progress(start + len(batch), len(chosen))
        if done and self.flusher is not None:
            self.flusher.kick()
        return done

    def drop_dead_letters(
        self,
        ids: Sequence[str] | None = None,
        *,
        keys: Sequence[str] | None = None,
        limit: int = 100_000,
    ) -> list[dict[str, Any]]:
        """Delete dead letters for good (all, or those named by ``ids`` or ``keys``);
        the letters dropped."""
        chosen = self._select(self.dead_letters(limit), ids, keys)
        if chosen:
            replies = run_batch(self.client, [self._drop_command(d) for d in chosen])
            chosen = [d for d, n in zip(chosen, replies, strict=True) if n == 1]
        return chosen

    def __repr__(self) -> str:
        return (
            f"WriteBehind(name={self.layout.name!r}, "
            f"partitions={self.layout.partitions}, store={type(self.store).__name__})"
        )
