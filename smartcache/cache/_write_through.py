"""Write-through: the database first, then the cache entry (invalidated by default, or set).

A database failure leaves the cache untouched and propagates. A cache failure after the
database write is retried (bounded exponential backoff with full jitter); if Redis stays
unreachable the key is *recorded for repair* (in memory, and as a JSON line in an fsync'd
repair log when one is configured) and a later ``repair()``, or the next write, deletes the
entry. A DEL is always safe (it costs one miss), so every doubtful case ends in a DEL: the
cache is never left newer or older than the database without the key being recorded.

Each operation is a plain generator that yields the I/O it needs (``_Call``, ``_Redis``,
``_Sleep``) and receives the result or the exception; ``_run`` drives it with the sync client,
``_arun`` with the async one, so the rules exist once. The repair log (``_repair_log``) is
the only file I/O; it runs inline (it is touched only when something failed, or on repair).
The ``@write_through`` decorator (``_write_through_decorator``) drives the same engine.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import os
import random
import threading
import time
import uuid
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, TypeAlias, TypeVar, cast

from smartcache.cache._base import REDIS_ERRORS, CacheBase, CachePolicy
from smartcache.cache._policy import RandomSource
from smartcache.cache._protocol import AsyncRedisLike, RedisLike
from smartcache.cache._repair_log import (
    RepairRecord,
    append_repair_log,
    backoff_delay,
    read_repair_log,
    rewrite_repair_log,
)
from smartcache.cache._store import AsyncStore, Store, StoreItem, is_async_store
from smartcache.core.slots import key_slot
from smartcache.exceptions import CacheInconsistencyError, ConfigurationError, InvalidArgumentError

__all__ = ["WriteThrough"]

log = logging.getLogger("smartcache.cache")

R = TypeVar("R")

Mode = Literal["invalidate", "set"]
OnCacheError = Literal["record", "raise"]

#: Keys per DEL when repairing (bounds one command's size; a cluster client splits by slot).
REPAIR_BATCH: Final = 500
_FIELDS: Final = ("writes", "deletes", "store_errors", "cache_errors", "repaired")

#: A writer's lease (``mode="set"``), begun before the database write. KEYS: the key's lease
#: hash (same slot as the key). ARGV: token, stale ms. Drops leases older than ``stale``
#: (a writer that died), counts the others still open, opens this one and names it the
#: last begun. Returns how many others are open.
LEASE_BEGIN: Final = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local stale = tonumber(ARGV[2])
local fields = redis.call('HGETALL', KEYS[1])
local others = 0
for i = 1, #fields, 2 do
  if fields[i] ~= 'last' then
    if tonumber(fields[i + 1]) < now - stale then
      redis.call('HDEL', KEYS[1], fields[i])
    else
      others = others + 1
    end
  end
end
redis.call('HSET', KEYS[1], ARGV[1], now, 'last', ARGV[1])
redis.call('PEXPIRE', KEYS[1], stale * 2)
return others
"""

#: The lease's end, after the database write. KEYS: lease hash, cache key. ARGV: token,
#: alone ("1": no other lease was open when it began), entry bytes ('' for none), px.
#: Sets the entry only if this writer was alone from its begin to now (alone at the begin,
#: and still the last begun); otherwise, or with no entry, deletes it: two writers that
#: overlap never leave the older value cached, whatever order their commits took.
LEASE_END: Final = """
local last = redis.call('HGET', KEYS[1], 'last')
redis.call('HDEL', KEYS[1], ARGV[1])
if ARGV[2] == '1' and last == ARGV[1] and ARGV[3] ~= '' then
  redis.call('SET', KEYS[2], ARGV[3], 'PX', ARGV[4])
  return 1
end
redis.call('DEL', KEYS[2])
return 0
"""

#: a lease older than this belongs to a writer that died (its key is invalidated meanwhile)
LEASE_STALE_MS: Final = 60_000


def lease_key(key: str) -> str | None:
    """The lease hash of cache key ``key``: a key on the same cluster slot (its own hash
    tag kept, or ``key`` made the tag); ``None`` when no such name exists (odd braces)."""
    slot = key_slot(key)
    for candidate in (f"{key}:wt-lease", f"{{{key}}}:wt-lease"):
        if key_slot(candidate) == slot:
            return candidate
    return None


_STATS: Final = ("writes", "deletes", "store_errors", "cache_errors", "repairs_pending", "repaired")


# -- the I/O a flow asks for ----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _Call:
    """Call the database side (a store method or the decorated function)."""

    func: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    in_thread: bool = False  # a sync store driven from async code runs in a worker thread


@dataclass(frozen=True, slots=True)
class _Redis:
    """DEL ``deletes``, SET ``sets`` (key, entry bytes, PX) and end ``leased`` writes
    (lease key, token, alone, key, entry bytes or b"", PX: :data:`LEASE_END`) in one
    round trip."""

    deletes: tuple[str, ...]
    sets: tuple[tuple[str, bytes, int], ...] = ()
    leased: tuple[tuple[str, str, bool, str, bytes, int], ...] = ()

    def as_delete(self) -> _Redis:
        return _Redis(
            self.deletes
            + tuple(key for key, _, _ in self.sets)
            + tuple(item[3] for item in self.leased)
        )


@dataclass(frozen=True, slots=True)
class _Leases:
    """Begin the leases ``(lease key, token)`` (:data:`LEASE_BEGIN`) -> others open each."""

    items: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class _Sleep:
    seconds: float


_Op: TypeAlias = _Call | _Redis | _Sleep | _Leases
_Flow: TypeAlias = Generator[_Op, Any, R]


def _client_is_async(client: RedisLike | AsyncRedisLike) -> bool:
    flag = getattr(client, "_is_async_client", None)
    if isinstance(flag, bool):
        return flag
    return inspect.iscoroutinefunction(getattr(client, "execute_command", None))


# -- the engine -----------------------------------------------------------------------------
class _WriteThroughCore:
    """The cache step, repair bookkeeping and statistics (shared with ``@write_through``)."""

    def __init__(
        self,
        client: RedisLike | AsyncRedisLike,
        *,
        mode: Mode = "invalidate",
        policy: CachePolicy | None = None,
        retry_attempts: int = 3,
        retry_base_delay: float = 0.05,
        retry_max_delay: float = 1.0,
        repair_log: str | os.PathLike[str] | None = None,
        on_cache_error: OnCacheError = "record",
        clock: Callable[[], float] = time.time,
        rng: RandomSource | None = None,
    ) -> None:
        if mode not in ("invalidate", "set"):
            raise ConfigurationError(f"mode={mode!r}: give 'invalidate' (default) or 'set'")
        if on_cache_error not in ("record", "raise"):
            raise ConfigurationError(
                f"on_cache_error={on_cache_error!r}: give 'record' (default) or 'raise'"
            )
        if retry_attempts < 0 or retry_base_delay < 0 or retry_max_delay < retry_base_delay:
            raise ConfigurationError(
                "retry_attempts and retry_base_delay must be >= 0, and retry_max_delay >= "
                "retry_base_delay"
            )
        self.client = client
        self.mode: Mode = mode
        self.on_cache_error: OnCacheError = on_cache_error
        self.retry_attempts = retry_attempts
        self.retry_base_delay = retry_base_delay
        self.retry_max_delay = retry_max_delay
        self._is_async = _client_is_async(client)
        # Entries are encoded exactly as Cache writes them, so get_or_load/@cached read them.
        self._entries = CacheBase(client, policy, clock=clock, rng=rng or random.Random())
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(_FIELDS, 0)
        self._pending: dict[str, set[str]] = {}  # key -> ids of its unrepaired records
        self._last_heal = float("-inf")
        self.repair_log = None if repair_log is None else Path(repair_log)
        if self.repair_log is not None:
            if not self.repair_log.parent.is_dir():
                raise ConfigurationError(
                    f"repair_log={str(self.repair_log)!r}: its directory does not exist"
                )
            self._merge(read_repair_log(self.repair_log))

    @property
    def policy(self) -> CachePolicy:
        """TTL, jitter and serializer of the entries written in ``mode="set"``."""
        return self._entries.policy

    # -- public bookkeeping
    def pending_repairs(self) -> list[str]:
        """Keys whose cache entries may be stale until :meth:`repair` deletes them."""
        with self._lock:
            return sorted(self._pending)

    def stats(self) -> dict[str, int]:
        """writes, deletes, store_errors, cache_errors, repairs_pending, repaired (key counts)."""
        with self._lock:
            counts = {**self._counts, "repairs_pending": len(self._pending)}
        return {name: counts[name] for name in _STATS}

    # -- drivers
    def _check(self, want_async: bool, what: str, fix: str) -> None:
        """Refuse, before any database write, a sync call on an async client or vice versa."""
        if self._is_async != want_async:
            kind = "async" if self._is_async else "sync"
            raise InvalidArgumentError(
                f"{what} needs {'an async' if want_async else 'a sync'} client, and "
                f"{type(self.client).__name__} is {kind}: {fix}"
            )

    def _run(self, flow: _Flow[R]) -> R:
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                op = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as stop:
                return cast(R, stop.value)
            reply, error = None, None
            try:
                reply = self._perform(op)
            except BaseException as exc:  # handed to the flow, which decides
                error = exc

    def _perform(self, op: _Op) -> Any:
        if isinstance(op, _Call):
            return op.func(*op.args, **op.kwargs)
        if isinstance(op, _Sleep):
            time.sleep(op.seconds)
            return None
        if isinstance(op, _Leases):
            pipe = self.client.pipeline(transaction=False)
            self._queue_leases(pipe, op)
            return pipe.execute()
        if not op.sets and not op.leased:
            return self.client.delete(*op.deletes)
        if len(op.sets) == 1 and not op.deletes and not op.leased:
            key, data, px = op.sets[0]
            return self.client.set(key, data, px=px)
        pipe = self.client.pipeline(transaction=False)
        self._queue(pipe, op)
        return pipe.execute()

    async def _arun(self, flow: _Flow[R]) -> R:
        reply: Any = None
        error: BaseException | None = None
        while True:
            try:
                op = flow.send(reply) if error is None else flow.throw(error)
            except StopIteration as stop:
                return cast(R, stop.value)
            reply, error = None, None
            try:
                reply = await self._aperform(op)
            except BaseException as exc:  # cancellation too: the flow records, then re-raises
                error = exc

    async def _aperform(self, op: _Op) -> Any:
        if isinstance(op, _Call):
            if op.in_thread:
                return await asyncio.to_thread(op.func, *op.args, **op.kwargs)
            result = op.func(*op.args, **op.kwargs)
            return await result if inspect.isawaitable(result) else result
        if isinstance(op, _Sleep):
            await asyncio.sleep(op.seconds)
            return None
        if isinstance(op, _Leases):
            pipe = self.client.pipeline(transaction=False)
            self._queue_leases(pipe, op)
            return await pipe.execute()
        if not op.sets and not op.leased:
            return await self.client.delete(*op.deletes)
        if len(op.sets) == 1 and not op.deletes and not op.leased:
            key, data, px = op.sets[0]
            return await self.client.set(key, data, px=px)
        pipe = self.client.pipeline(transaction=False)
        self._queue(pipe, op)
        return await pipe.execute()

    @staticmethod
    def _queue(pipe: Any, op: _Redis) -> None:
        for key, data, px in op.sets:
            pipe.set(key, data, px=px)
        for lease, token, alone, key, data, px in op.leased:
            pipe.eval(LEASE_END, 2, lease, key, token, "1" if alone else "0", data, px)
        if op.deletes:
            pipe.delete(*op.deletes)

    @staticmethod
    def _queue_leases(pipe: Any, op: _Leases) -> None:
        for lease, token in op.items:
            pipe.eval(LEASE_BEGIN, 1, lease, token, LEASE_STALE_MS)

    def _lease(self, keys: Sequence[str]) -> _Flow[dict[str, tuple[str, str, bool]]]:
        """``mode="set"``: begin a lease on each key before the database write; key ->
        (lease key, token, alone). A key without one is invalidated after the write (Redis
        failed, or no lease name shares its slot)."""
        if self.mode != "set":
            return {}
        items = [(key, lease_key(key)) for key in keys]
        begun = [(key, lease, uuid.uuid4().hex) for key, lease in items if lease is not None]
        if not begun:
            return {}
        try:
            others = yield _Leases(tuple((lease, token) for _, lease, token in begun))
        except REDIS_ERRORS:
            return {}  # the write goes on; its cache step invalidates
        return {
            key: (lease, token, int(n) == 0)
            for (key, lease, token), n in zip(begun, others, strict=True)
        }

    # -- flows
    def _cache_op(
        self,
        values: Mapping[str, Any] | None,
        keys: Sequence[str],
        leases: Mapping[str, tuple[str, str, bool]] | None = None,
    ) -> _Redis:
        """What to do to the cache: DEL ``keys``, or (``values`` given, ``mode="set"``) set
        their entries, each through its lease (``leases``: from :meth:`_lease`): set only
        if its writer was alone, else deleted. A key without a lease is deleted.

        A value the policy does not cache (``None``, ``condition``) or cannot encode is
        deleted instead (through its lease, which that also ends).
        """
        leases = leases or {}
        if self.mode == "invalidate":
            return _Redis(tuple(keys))
        if values is None:  # a delete in set mode: end each lease with a DEL
            plain = tuple(k for k in keys if k not in leases)
            ended = tuple((*leases[k][:2], False, k, b"", 0) for k in keys if k in leases)
            return _Redis(plain, (), ended)
        policy = self.policy
        deletes: list[str] = []
        sets: list[tuple[str, bytes, int]] = []
        leased: list[tuple[str, str, bool, str, bytes, int]] = []
        for key in keys:
            value = values[key]
            lease = leases.get(key)
            if lease is None:
                deletes.append(key)
                continue
            if not self._entries._should_store(value, policy):
                leased.append((*lease[:2], False, key, b"", 0))
                continue
            try:
                data, px = self._entries._write_plan(key, value, 0, policy)
            except Exception as exc:  # the database is written: invalidate, never fail
                log.warning(
                    "write-through: cannot encode the value of %s with %s (%s); "
                    "invalidating instead",
                    key,
                    policy.serializer.name,
                    type(exc).__name__,
                )
                leased.append((*lease[:2], False, key, b"", 0))
                continue
            leased.append((lease[0], lease[1], lease[2], key, data, px))
        return _Redis(tuple(deletes), tuple(sets), tuple(leased))

    def _heal(self) -> _Flow[None]:
        """Before a write: DEL pending keys, once per ``retry_max_delay`` at most, one try."""
        if not self._pending:  # unlocked read: a hint, rechecked below
            return
        now = self._entries.clock()
        with self._lock:
            if now - self._last_heal < self.retry_max_delay or not self._pending:
                return
            self._last_heal = now
            batch = {
                key: set(ids) for key, ids in itertools.islice(self._pending.items(), REPAIR_BATCH)
            }
        try:
            yield _Redis(tuple(batch))
        except REDIS_ERRORS:
            log.debug("write-through: Redis still unreachable; %d repairs pending", len(batch))
            return
        self._resolved(batch)

    def _attempts(self, op: _Redis, attempts: int) -> _Flow[BaseException | None]:
        """Try ``op`` up to ``attempts`` times; after a failure only DEL. The last error."""
        error: BaseException | None = None
        for attempt in range(attempts):
            if attempt:
                yield _Sleep(
                    backoff_delay(
                        attempt - 1,
                        base=self.retry_base_delay,
                        cap=self.retry_max_delay,
                        rng=self._entries.rng,
                    )
                )
                op = op.as_delete()  # a failed SET falls back to invalidation
            try:
                yield op
            except REDIS_ERRORS as exc:
                error = exc
                continue
            return None
        return error

    def _cache_step(self, op: _Redis) -> _Flow[None]:
        """After the database write: apply ``op``; on failure record the keys for repair."""
        keys = op.as_delete().deletes
        if not keys:
            return
        before = self._snapshot(keys)
        try:
            error = yield from self._attempts(op, self.retry_attempts + 1)
        except BaseException as exc:  # cancelled or a bug: the cache state is unknown
            self._record(keys, exc)
            raise
        if error is None:
            self._resolved(before)  # a write that reached the cache heals its key
            return
        self._record(keys, error)
        if self.on_cache_error == "raise":
            raise CacheInconsistencyError(keys, attempts=self.retry_attempts + 1) from error

    def _database(self, call: _Call, keys: Sequence[str], counter: str) -> _Flow[Any]:
        """The database step; its failure propagates unchanged and the cache is not touched."""
        try:
            result = yield call
        except Exception:
            self._count("store_errors")
            raise
        except BaseException as exc:  # interrupted: the commit may have happened
            self._record(keys, exc)
            raise
        self._count(counter, len(keys))
        return result

    def _repair_flow(self) -> _Flow[int]:
        if self.repair_log is not None:
            self._merge(read_repair_log(self.repair_log))
        with self._lock:
            snapshot = {key: set(ids) for key, ids in self._pending.items()}
        keys = list(snapshot)
        repaired = 0
        for start in range(0, len(keys), REPAIR_BATCH):
            chunk = keys[start : start + REPAIR_BATCH]
            error = yield from self._attempts(_Redis(tuple(chunk)), self.retry_attempts + 1)
            if error is not None:
                log.warning(
                    "write-through: repair stopped, Redis unreachable (%s); %d keys pending",
                    type(error).__name__,
                    len(keys) - repaired,
                )
                break
            self._resolved({key: snapshot[key] for key in chunk})
            repaired += len(chunk)
        return repaired

    # -- bookkeeping
    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _merge(self, records: Sequence[RepairRecord]) -> None:
        with self._lock:
            for record in records:
                self._pending.setdefault(record.key, set()).add(record.id)

    def _snapshot(self, keys: Sequence[str]) -> dict[str, set[str]]:
        with self._lock:
            return {key: set(self._pending[key]) for key in keys if key in self._pending}

    def _record(self, keys: Sequence[str], error: BaseException) -> None:
        """The database holds a newer value than the cache may: remember to DEL ``keys``."""
        now = self._entries.clock()
        records = [RepairRecord(key, uuid.uuid4().hex, now) for key in dict.fromkeys(keys)]
        self._merge(records)
        self._count("cache_errors", len(records))
        shown = ", ".join(r.key for r in records[:10]) + (" ..." if len(records) > 10 else "")
        log.warning(
            "write-through: the database is written but the cache was not updated (%s: %s); "
            "recorded %d key(s) for repair: %s",
            type(error).__name__,
            error,
            len(records),
            shown,
        )
        if self.repair_log is not None:
            try:
                append_repair_log(self.repair_log, records)
            except OSError as exc:
                log.error(
                    "write-through: could not append to the repair log %s (%s); the keys are "
                    "recorded in this process only",
                    self.repair_log,
                    exc,
                )

    def _resolved(self, done: Mapping[str, set[str]]) -> None:
        """The records ``done`` were repaired: forget them (newer records of a key stay)."""
        if not done:
            return
        dropped: set[str] = set()
        with self._lock:
            for key, ids in done.items():
                current = self._pending.get(key)
                if current is None or not ids & current:
                    continue  # resolved meanwhile by another caller
                dropped |= ids & current
                current -= ids
                if not current:
                    del self._pending[key]
                self._counts["repaired"] += 1
        if self.repair_log is not None and dropped:
            try:
                rewrite_repair_log(self.repair_log, dropped)
            except OSError as exc:  # the records stay in the file: a later repair DELs again
                log.error("write-through: could not rewrite the repair log (%s)", exc)


class WriteThrough(_WriteThroughCore):
    """Write-through over ``store`` (the database) and ``client`` (the cache).

    ``write(key, value)`` writes the database first, through ``store.write_many``; then
    ``mode="invalidate"`` (default) deletes the cache entry, ``mode="set"`` stores the new
    value as an entry :class:`~smartcache.cache.Cache` and ``@cached`` read (``policy``:
    ttl, jitter, serializer). If the database raises, the exception propagates unchanged
    and Redis is not touched. If the cache step still fails after ``retry_attempts`` retries
    (exponential backoff from ``retry_base_delay`` to ``retry_max_delay`` s, full jitter), the
    key is recorded for repair (and appended to the fsync'd ``repair_log`` file, which a
    restarted process reads back), a warning is logged, and the write returns normally
    (``on_cache_error="record"``: the database write succeeded) or raises
    :class:`~smartcache.exceptions.CacheInconsistencyError` (``"raise"``). :meth:`repair`
    deletes recorded keys; each write also tries that first, at most once per
    ``retry_max_delay`` seconds, so the cache heals by itself once Redis is back.

    A sync client takes a sync store; an async client takes either (a sync store then runs in
    a worker thread, so it must not be bound to one thread). Async methods are prefixed
    ``a``. Keys are full Redis keys, as with :meth:`Cache.get_or_load`.

    The client's own retries run inside each attempt: give it a short retry policy and socket
    timeouts, or a dead Redis delays each write by the client's whole retry budget.

    **Races**: both modes are safe against concurrent writers. ``mode="invalidate"``: the
    next reader loads the latest database value. ``mode="set"``: each write holds a lease on
    its key from before the database write to the cache step (one script each, on the key's
    slot); it sets the entry only if no other writer of that key overlapped it, and
    otherwise deletes it, so two racing writers never leave the older value cached whatever
    order their commits took (a writer that dies leaves its lease for 60 s, during which
    the key's writes invalidate). It costs one more round trip per write.
    """

    def __init__(
        self,
        client: RedisLike | AsyncRedisLike,
        store: Store | AsyncStore,
        *,
        mode: Mode = "invalidate",
        policy: CachePolicy | None = None,
        retry_attempts: int = 3,
        retry_base_delay: float = 0.05,
        retry_max_delay: float = 1.0,
        repair_log: str | os.PathLike[str] | None = None,
        on_cache_error: OnCacheError = "record",
        clock: Callable[[], float] = time.time,
        rng: RandomSource | None = None,
    ) -> None:
        super().__init__(
            client,
            mode=mode,
            policy=policy,
            retry_attempts=retry_attempts,
            retry_base_delay=retry_base_delay,
            retry_max_delay=retry_max_delay,
            repair_log=repair_log,
            on_cache_error=on_cache_error,
            clock=clock,
            rng=rng,
        )
        self.store = store
        self._async_store = is_async_store(store)
        if self._async_store and not self._is_async:
            raise InvalidArgumentError(
                f"store {type(store).__name__} is async but the client is sync: give an async "
                "client (AsyncSmartClient) or a sync store"
            )

    # -- sync
    def write(self, key: str, value: Any) -> None:
        """Write ``value`` to the database, then invalidate (or set) the cache entry."""
        self._sync("write")
        self._run(self._write_flow({key: value}))

    def write_many(self, values: Mapping[str, Any]) -> None:
        """Write every key in one store transaction, then one cache round trip."""
        self._sync("write_many")
        self._run(self._write_flow(values))

    def delete(self, key: str) -> None:
        """Delete ``key`` from the database, then from the cache."""
        self._sync("delete")
        self._run(self._delete_flow([key]))

    def delete_many(self, keys: Sequence[str]) -> None:
        """Delete keys from the database in one store transaction, then from the cache."""
        self._sync("delete_many")
        self._run(self._delete_flow(keys))

    def repair(self) -> int:
        """DEL every recorded key (this process's and the repair log's); how many."""
        self._sync("repair")
        return self._run(self._repair_flow())

    # -- async
    async def awrite(self, key: str, value: Any) -> None:
        """Async :meth:`write`."""
        self._async("write")
        await self._arun(self._write_flow({key: value}))

    async def awrite_many(self, values: Mapping[str, Any]) -> None:
        """Async :meth:`write_many`."""
        self._async("write_many")
        await self._arun(self._write_flow(values))

    async def adelete(self, key: str) -> None:
        """Async :meth:`delete`."""
        self._async("delete")
        await self._arun(self._delete_flow([key]))

    async def adelete_many(self, keys: Sequence[str]) -> None:
        """Async :meth:`delete_many`."""
        self._async("delete_many")
        await self._arun(self._delete_flow(keys))

    async def arepair(self) -> int:
        """Async :meth:`repair`."""
        self._async("repair")
        return await self._arun(self._repair_flow())

    def _sync(self, name: str) -> None:
        self._check(False, f"WriteThrough.{name}()", f"use 'await wt.a{name}(...)'")

    def _async(self, name: str) -> None:
        self._check(True, f"WriteThrough.a{name}()", f"call wt.{name}(...) without await")

    # -- flows
    def _store_call(self, method: str, items: list[StoreItem]) -> _Call:
        func = getattr(self.store, method)
        return _Call(func, (items,), {}, in_thread=self._is_async and not self._async_store)

    def _write_flow(self, values: Mapping[str, Any]) -> _Flow[None]:
        values = dict(values)
        keys = _check_keys(values)
        if not keys:
            return
        yield from self._heal()
        leases = yield from self._lease(keys)
        items = [StoreItem(key, value) for key, value in values.items()]
        yield from self._database(self._store_call("write_many", items), keys, "writes")
        yield from self._cache_step(self._cache_op(values, keys, leases))

    def _delete_flow(self, keys: Sequence[str]) -> _Flow[None]:
        keys = _check_keys(dict.fromkeys(keys))
        if not keys:
            return
        yield from self._heal()
        leases = yield from self._lease(keys)
        items = [StoreItem(key) for key in keys]
        yield from self._database(self._store_call("delete_many", items), keys, "deletes")
        yield from self._cache_step(self._cache_op(None, keys, leases))


def _check_keys(values: Mapping[Any, Any]) -> list[str]:
    keys = list(values)
    for key in keys:
        if not isinstance(key, str):
            raise InvalidArgumentError(f"write-through keys are str, not {type(key).__name__}")
    return keys
