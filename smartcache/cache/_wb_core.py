"""Write-behind, the I/O-free part: queue layout, coalescing and one flush round as a flow.

The queue lives in Redis: ``partitions`` streams, each under its own hash tag, with the
cache entries of the keys that hash to that partition under the same tag, so a write sets
the entry and appends to the stream in one script on one slot. The tags are chosen so their
slots are evenly spaced over 0..16383, which spreads the partitions over a cluster's
primaries (clusters assign contiguous, even slot ranges).

A flush round is a generator of effects (as :mod:`smartcache.core.flow` does for commands),
driven by the sync flusher thread and by the asyncio flusher task alike:

=========================  ===========================================================
``RedisBatch(commands)``   run as one non-transactional pipeline -> replies, errors in
                           place (an exception instance where a command failed)
``StoreCall(op, items)``   ``store.write_many(items)`` / ``delete_many(items)`` -> the
                           exception it raised, or ``None`` once committed
``StorePing()``            is the store reachable (``store.ping()``)? -> ``bool | None``
                           (``None``: the store has no ``ping``)
=========================  ===========================================================

Rules (docs/write-behind.md): entries are read with a consumer group; writes to one key are
coalesced to the last by stream order; the store is called in batches and an entry is
acknowledged (``XACK`` + ``XDEL`` in one script) only after the store committed it. A failed
batch is retried item by item to find the entries the store rejects; such an entry counts an
attempt only while the store is demonstrably up (another item succeeded, ``ping()`` answers,
or a call succeeded within ``healthy_window``), so an outage never dead-letters anything; after
``max_attempts`` it moves to the partition's dead-letter stream with its error, atomically with
its acknowledgement. Entries left pending by a dead flusher are claimed with ``XAUTOCLAIM``
once idle for ``claim_idle``.
"""

from __future__ import annotations

import os
import random
import re
import socket
import zlib
from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from smartcache.cache._store import StoreItem, stream_version
from smartcache.core.slots import SLOT_COUNT, key_slot
from smartcache.exceptions import InvalidArgumentError

__all__ = [
    "ACK_SCRIPT",
    "DEAD_SCRIPT",
    "PENDING_SCRIPT",
    "REPLAY_SCRIPT",
    "SET_SCRIPT",
    "FlushOptions",
    "FlushState",
    "QueueLayout",
    "RedisBatch",
    "RoundResult",
    "StoreCall",
    "StorePing",
    "ack_command",
    "coalesce",
    "consumer_name",
    "flush_round",
]

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")

#: KEYS: cache key, stream, dirty hash. ARGV: entry bytes, px, user key, value bytes, op
#: ("s" set, "d" delete). Sets the cache entry (for a delete: a tombstone, an entry holding
#: None) WITHOUT an expiry, appends the change (a set with the TTL its entry gets once
#: committed), and records it as the key's pending change (the dirty hash maps the cache
#: key to the change's ID): the entry cannot expire while its change is queued (the
#: flusher gives it its TTL once the store committed it, see ACK_SCRIPT). All or nothing.
SET_SCRIPT: Final = """
redis.call('SET', KEYS[1], ARGV[1])
local id
if ARGV[5] == 'd' then
  id = redis.call('XADD', KEYS[2], '*', 'op', 'd', 'k', ARGV[3])
else
  id = redis.call('XADD', KEYS[2], '*', 'op', 's', 'k', ARGV[3], 'v', ARGV[4], 'px', ARGV[2])
end
redis.call('HSET', KEYS[3], KEYS[1], id)
return id
"""

#: KEYS: stream, attempts hash, dirty hash, then the cache key of each of the m committed
#: changes. ARGV: group, m, a top ID (at least as high as every acknowledged one: the
#: highest read this round), the m changes' IDs, their m unpin actions (the entry's TTL in
#: ms, or "d": drop the tombstone), then the IDs they superseded. Acknowledges the entries
#: and removes them from the stream: one XTRIM MINID just above the top when the group has
#: delivered everything up to it and nothing up to it is pending (so every entry up to it
#: is acknowledged: the common case, and far cheaper than deleting each), else one XDEL of
#: their IDs. Then, for each change that is still its key's pending
#: one (one HMGET for all), ends the pin: a set entry gets its TTL (counted from now), a
#: tombstone is dropped. (A stream or group that is gone, as after a failover to a replica
#: that never had it, fails nothing: XACK and XDEL of a missing key count 0.)
ACK_SCRIPT: Final = """
local m = tonumber(ARGV[2])
local ids = {}
for i = 1, m do ids[i] = ARGV[3 + i] end
for i = 4 + 2 * m, #ARGV do ids[#ids + 1] = ARGV[i] end
local acked = redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq), seq
end
local function below(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  if am ~= bm then return am < bm end
  return as < bs
end
local top = ARGV[3]
local top_ms, top_seq, top_digits = parse(top)
local trim = #top_digits < 16
if trim then
  local pending = redis.pcall('XPENDING', KEYS[1], ARGV[1])  -- NOGROUP: nothing to trim
  trim = not pending.err and (pending[1] == 0 or below(top, pending[2]))
end
if trim then
  trim = false
  for _, group in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local name, last
    for i = 1, #group, 2 do
      if group[i] == 'name' then name = group[i + 1]
      elseif group[i] == 'last-delivered-id' then last = group[i + 1] end
    end
    if name == ARGV[1] and last then trim = not below(last, top) end
  end
end
if trim then
  redis.call('XTRIM', KEYS[1], 'MINID', string.format('%d-%d', top_ms, top_seq + 1))
else
  redis.call('XDEL', KEYS[1], unpack(ids))
end
if redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HDEL', KEYS[2], unpack(ids)) end
local current = redis.call('HMGET', KEYS[3], unpack(KEYS, 4))
local ended = {}
for k = 1, m do
  if current[k] == ARGV[3 + k] then
    local key = KEYS[3 + k]
    ended[#ended + 1] = key
    local action = ARGV[3 + m + k]
    if action == 'd' then
      redis.call('DEL', key)
    else
      redis.call('PEXPIRE', key, action)
    end
  end
end
if #ended > 0 then redis.call('HDEL', KEYS[3], unpack(ended)) end
return acked
"""

#: KEYS: stream, dead stream, attempts hash, dirty hash, cache key. ARGV: group, id, user
#: key, op, value, error, attempts, version, superseded ids... Move one entry (and the older
#: ones it superseded) to the dead-letter stream (with its version, for a replay) and
#: acknowledge them, atomically; if it is still its key's pending change, the pinned cache
#: entry goes too (the store never got it: readers see what the store has).
DEAD_SCRIPT: Final = """
redis.call('XADD', KEYS[2], '*', 'id', ARGV[2], 'k', ARGV[3], 'op', ARGV[4], 'v', ARGV[5],
           'error', ARGV[6], 'attempts', ARGV[7], 'ver', ARGV[8])
local ids = {ARGV[2]}
for i = 9, #ARGV do ids[#ids + 1] = ARGV[i] end
redis.call('XACK', KEYS[1], ARGV[1], unpack(ids))
redis.call('XDEL', KEYS[1], unpack(ids))
redis.call('HDEL', KEYS[3], unpack(ids))
if redis.call('HGET', KEYS[4], KEYS[5]) == ARGV[2] then
  redis.call('HDEL', KEYS[4], KEYS[5])
  redis.call('DEL', KEYS[5])
end
return #ids
"""

#: KEYS: stream, dead stream, cache key, dirty hash. ARGV: dead-letter ID, user key, op,
#: value, version. Moves one dead letter back into the queue, atomically (gone from the
#: dead letters exactly when it is queued again; nil if someone replayed or dropped it
#: first), keeping its original version so the store's version guard still decides: a
#: newer write of the key wins whatever the order. The cache entry is dropped unless the
#: key has a change of its own pending (whose pinned entry is newer): readers see the
#: store until the replay is flushed.
REPLAY_SCRIPT: Final = """
if redis.call('XDEL', KEYS[2], ARGV[1]) == 0 then return false end
local id
if ARGV[3] == 'd' then
  id = redis.call('XADD', KEYS[1], '*', 'op', 'd', 'k', ARGV[2], 'ver', ARGV[5])
else
  id = redis.call('XADD', KEYS[1], '*', 'op', 's', 'k', ARGV[2], 'v', ARGV[4], 'ver', ARGV[5])
end
if not redis.call('HGET', KEYS[4], KEYS[3]) then redis.call('DEL', KEYS[3]) end
return id
"""

#: KEYS: cache key, stream, dirty hash. The read fence of
#: ``WriteBehind.get`` after a cache miss: the key's pending change, if any, straight from
#: the queue (an evicted or deleted entry never sends a reader to the store's older row).
#: Returns {0} nothing pending, {1, entry} the entry is back, {2} a pending delete,
#: {3, value bytes} a pending set.
PENDING_SCRIPT: Final = """
local entry = redis.call('GET', KEYS[1])
if entry then return {1, entry} end
local id = redis.call('HGET', KEYS[3], KEYS[1])
if not id then return {0} end
local found = redis.call('XRANGE', KEYS[2], id, id)
if #found == 0 then return {0} end
local fields = found[1][2]
local op, value = 's', ''
for i = 1, #fields, 2 do
  if fields[i] == 'op' then op = fields[i + 1]
  elseif fields[i] == 'v' then value = fields[i + 1] end
end
if op == 'd' then return {2} end
return {3, value}
"""


def consumer_name() -> str:
    """A consumer name unique to this process and start: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{random.getrandbits(32):08x}"


def _partition_tag(name: str, index: int, partitions: int) -> str:
    """The first ``name.index.n`` whose slot falls in the ``index``-th of ``partitions``
    equal slot ranges (deterministic: every process computes the same tags)."""
    n = 0
    while True:
        tag = f"{name}.{index}.{n}"
        if key_slot(tag) * partitions // SLOT_COUNT == index:
            return tag
        n += 1


@dataclass(frozen=True, slots=True)
class QueueLayout:
    """Where one write-behind queue keeps its streams and cache entries.

    ``namespace`` and ``name`` identify the queue; ``partitions`` is fixed for its life (a
    key's partition decides where its cache entry lives: drain before changing it).
    """

    name: str = "default"
    namespace: str = "sc"
    partitions: int = 16
    group: str = "flushers"
    #: the hash tag of each partition (computed)
    tags: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for what in ("name", "namespace", "group"):
            if not _NAME.match(getattr(self, what)):
                raise InvalidArgumentError(
                    f"write-behind {what}={getattr(self, what)!r} is not allowed: use 1-64 "
                    "letters, digits or '_.:-' (no braces: they would change the hash tag)"
                )
        if not 1 <= self.partitions <= 1024:
            raise InvalidArgumentError(
                f"partitions={self.partitions} is out of range: give 1..1024 (16 spreads "
                "well over a cluster's primaries)"
            )
        tags = tuple(_partition_tag(self.name, i, self.partitions) for i in range(self.partitions))
        object.__setattr__(self, "tags", tags)

    def partition_of(self, key: str) -> int:
        """The partition of user key ``key`` (CRC32: stable across processes)."""
        return zlib.crc32(key.encode("utf-8", "surrogatepass")) % self.partitions

    def _prefix(self, p: int) -> str:
        return f"{self.namespace}:wb:{{{self.tags[p]}}}"

    def cache_key(self, key: str) -> str:
        """The Redis key of ``key``'s cache entry (same slot as its partition's stream)."""
        return f"{self._prefix(self.partition_of(key))}:{key}"

    def cache_key_in(self, p: int, key: str) -> str:
        """:meth:`cache_key` when the key's partition ``p`` is known already."""
        return f"{self._prefix(p)}:{key}"

    def stream(self, p: int) -> str:
        """Partition ``p``'s change stream."""
        return f"{self._prefix(p)}:{self.name}:stream"

    def dead(self, p: int) -> str:
        """Partition ``p``'s dead-letter stream."""
        return f"{self._prefix(p)}:{self.name}:dead"

    def attempts(self, p: int) -> str:
        """Partition ``p``'s hash of failed attempts per entry ID."""
        return f"{self._prefix(p)}:{self.name}:attempts"

    def dirty(self, p: int) -> str:
        """Partition ``p``'s hash of each key's pending (queued, not committed) change ID."""
        return f"{self._prefix(p)}:{self.name}:dirty"

    def meta(self) -> str:
        """The hash recording the queue's partition count."""
        return f"{self.namespace}:wb:{self.name}:meta"


@dataclass(frozen=True, slots=True)
class FlushOptions:
    """Tuning of one flusher (seconds unless named otherwise)."""

    batch_size: int = 500
    claim_idle: float = 30.0
    #: how often each partition is scanned for idle entries (default: claim_idle / 2, <= 5 s)
    claim_interval: float | None = None
    max_attempts: int = 5
    healthy_window: float = 60.0
    isolate_limit: int = 3

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.max_attempts < 1 or self.isolate_limit < 1:
            raise InvalidArgumentError("batch_size, max_attempts and isolate_limit must be >= 1")
        if self.claim_idle <= 0 or (self.claim_interval is not None and self.claim_interval <= 0):
            raise InvalidArgumentError("claim_idle and claim_interval must be > 0 seconds")

    @property
    def claim_every(self) -> float:
        """Seconds between two claim scans of one partition."""
        if self.claim_interval is not None:
            return self.claim_interval
        return min(5.0, self.claim_idle / 2)


@dataclass(slots=True)
class FlushState:
    """What one flusher remembers between rounds."""

    consumer: str = field(default_factory=consumer_name)
    #: partitions where this consumer holds entries it has not acknowledged yet
    own_pending: set[int] = field(default_factory=set)
    #: next XAUTOCLAIM cursor and due time (ms) per partition
    claim_cursor: dict[int, str] = field(default_factory=dict)
    claim_due_ms: dict[int, float] = field(default_factory=dict)
    groups_ready: bool = False
    last_store_ok_ms: float | None = None


@dataclass(frozen=True, slots=True)
class RedisBatch:
    """Effect: run ``commands`` as one non-transactional pipeline."""

    commands: tuple[tuple[Any, ...], ...]


@dataclass(frozen=True, slots=True)
class StoreCall:
    """Effect: ``store.write_many(items)`` (``op="write"``) or ``delete_many(items)``."""

    op: Literal["write", "delete"]
    items: tuple[StoreItem, ...]


@dataclass(frozen=True, slots=True)
class StorePing:
    """Effect: ask the store whether it is reachable."""


@dataclass(frozen=True, slots=True)
class RoundResult:
    """What one round did."""

    read: int = 0
    applied: int = 0
    acked: int = 0
    dead: int = 0
    failed: int = 0
    redis_error: BaseException | None = None
    store_error: BaseException | None = None

    @property
    def idle(self) -> bool:
        """Nothing was read: the queue is empty for this consumer."""
        return self.read == 0 and self.redis_error is None

    @property
    def stalled(self) -> bool:
        """Work is stuck (Redis unreachable, or the store failing everything)."""
        return self.redis_error is not None or (self.failed > 0 and self.applied == 0)


@dataclass(slots=True)
class _Change:
    partition: int
    entry_id: str
    key: str
    op: str
    raw_value: bytes | None
    #: what its acknowledgement does to the pinned entry: its TTL in ms as sent (a set),
    #: "d" (a delete's tombstone, or an entry without a TTL field: dropped)
    unpin: Any = "d"
    #: the version the store compares: a replayed dead letter's original one, else the
    #: entry's stream version (set once the change goes to the store)
    version: str = ""
    superseded: list[str] = field(default_factory=list)
    value: Any = None
    error: str | None = None


def _text(value: Any) -> str:
    return value.decode("utf-8", "surrogatepass") if isinstance(value, bytes) else str(value)


def _fields(raw: Any) -> Mapping[bytes, Any]:
    """Stream entry fields as ``{bytes: value}`` (RESP2 flat list or RESP3 map; the str
    names a ``decode_responses=True`` client gives are encoded)."""
    if isinstance(raw, dict):
        fields = raw
    else:
        items = iter(raw or ())
        fields = dict(zip(items, items, strict=False))
    for name in fields:
        if isinstance(name, str):
            return {k.encode() if isinstance(k, str) else k: v for k, v in fields.items()}
        break
    return fields


def _entries(reply: Any) -> list[tuple[str, Mapping[bytes, Any]]]:
    """``[(id, fields)]`` from an XREADGROUP/XAUTOCLAIM entry list (deleted ones skipped)."""
    out = []
    for item in reply or ():
        if not item or item[1] is None:
            continue  # an entry deleted while pending (Redis 6.2 shape)
        entry_id = item[0]
        out.append((entry_id.decode() if type(entry_id) is bytes else entry_id, _fields(item[1])))
    return out


def _read_reply(reply: Any) -> list[tuple[str, Mapping[bytes, Any]]]:
    """Entries of an XREADGROUP reply for one stream (RESP2 list or RESP3 map)."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [e for entries in reply.values() for e in _entries(_first(entries))]
    return [e for _stream, entries in reply for e in _entries(entries)]


def _first(entries: Any) -> Any:
    # redis-py's RESP3 XREADGROUP callback nests the entry list one level deeper
    if (
        isinstance(entries, list)
        and entries
        and isinstance(entries[0], list)
        and entries[0]
        and isinstance(entries[0][0], list | tuple)
    ):
        return entries[0]
    return entries


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _newer(
    a: _Change, b: _Change, fields_a: Mapping[bytes, Any], fields_b: Mapping[bytes, Any]
) -> bool:
    """Is change ``a`` newer than ``b`` (same key)? By version when either is a replayed
    dead letter (which keeps its original version), else by stream order."""
    ver_a, ver_b = fields_a.get(b"ver"), fields_b.get(b"ver")
    if ver_a is not None or ver_b is not None:
        va = _text(ver_a) if ver_a is not None else stream_version(a.entry_id)
        vb = _text(ver_b) if ver_b is not None else stream_version(b.entry_id)
        if va != vb:
            return va > vb
    return _id_key(a.entry_id) > _id_key(b.entry_id)


def coalesce(entries: Sequence[tuple[int, str, Mapping[Any, Any]]]) -> list[_Change]:
    """The newest change per key by version (stream order, but for replayed dead letters,
    which keep their original version); older ones ride along as ``superseded``.

    ``entries`` are ``(partition, id, fields)`` in any order; a key lives in one partition.
    An entry seen twice (read and claimed) counts once. Malformed entries are not
    coalesced: each comes back alone, with its ``error``.
    """
    latest: dict[str, tuple[_Change, Mapping[bytes, Any]]] = {}
    malformed: list[_Change] = []
    for partition, entry_id, raw_fields in entries:
        fields = _fields(raw_fields)
        key_raw = fields.get(b"k", b"")
        key = key_raw.decode("utf-8", "surrogatepass") if type(key_raw) is bytes else str(key_raw)
        op_raw = fields.get(b"op", b"s")
        op = "s" if op_raw in (b"s", "s") else "d" if op_raw in (b"d", "d") else None
        raw = fields.get(b"v")
        if isinstance(raw, str):  # a client with decode_responses=True
            raw = raw.encode("utf-8", "surrogateescape")
        change = _Change(partition, entry_id, key, op or _text(op_raw), raw)
        if op is None or not key:
            change.error = f"malformed write-behind entry (op={change.op!r}, key={key!r})"
            if not any(m.partition == partition and m.entry_id == entry_id for m in malformed):
                malformed.append(change)
            continue
        if op == "s":
            px = fields.get(b"px")
            if px is not None:
                change.unpin = px
        ver = fields.get(b"ver")
        if ver is not None:
            change.version = _text(ver)
        found = latest.get(key)
        if found is None:
            latest[key] = (change, fields)
            continue
        previous, previous_fields = found
        if entry_id == previous.entry_id or entry_id in previous.superseded:
            continue  # read and claimed in one round
        if _newer(change, previous, fields, previous_fields):
            change.superseded = [*previous.superseded, previous.entry_id]
            latest[key] = (change, fields)
        else:
            previous.superseded.append(entry_id)
    return [change for change, _fields_of in latest.values()] + malformed


def ack_command(
    layout: QueueLayout, p: int, done: Sequence[_Change], top: str | None = None
) -> tuple[Any, ...]:
    """The :data:`ACK_SCRIPT` call for partition ``p``'s committed changes ``done``.

    ``top``: an ID at least as high as every one acknowledged (the highest one read from
    the partition this round will do: the script trims only when nothing up to it is
    pending); computed when not given."""
    superseded = [i for c in done for i in c.superseded]
    if top is None:
        top = max([c.entry_id for c in done] + superseded, key=_id_key)
    return (
        "EVAL",
        ACK_SCRIPT,
        3 + len(done),
        layout.stream(p),
        layout.attempts(p),
        layout.dirty(p),
        *[layout.cache_key_in(p, c.key) for c in done],
        layout.group,
        len(done),
        top,
        *[c.entry_id for c in done],
        *[c.unpin if c.op == "s" else "d" for c in done],
        *superseded,
    )


_Failed = tuple[_Change, str, StoreItem, BaseException, bool]


def _isolate(
    pairs: Sequence[tuple[_Change, str, StoreItem, BaseException]],
    ok: list[_Change],
    limit: int,
    *,
    proven: bool,
) -> Generator[StoreCall, BaseException | None, list[_Failed]]:
    """Store each ``(change, op, item, error)`` alone: a success joins ``ok``; a failure is
    returned with its own error. After ``limit`` failures with no success at all (the store
    looks down) the rest are returned untried, with the error they had. Each failure is
    marked proven (the item's own) when ``proven`` or once a call in the round succeeded."""
    failed: list[_Failed] = []
    misses = 0
    for change, op, item, earlier in pairs:
        error = earlier
        if misses < limit or ok:
            single = yield StoreCall(op, (item,))  # type: ignore[arg-type]
            if single is None:
                ok.append(change)
                continue
            error, misses = single, misses + 1
        failed.append((change, op, item, error, proven or bool(ok)))
    return failed


def flush_round(
    layout: QueueLayout,
    options: FlushOptions,
    state: FlushState,
    loads: Any,
    now_ms: float,
    *,
    serializer: str | None = None,
) -> Generator[RedisBatch | StoreCall | StorePing, Any, RoundResult]:
    """One round: (create groups,) claim, read, coalesce, store, acknowledge / dead-letter.

    ``serializer``: the name of the built-in serializer whose ``loads`` this is (the
    items then carry the bytes as written, see :class:`StoreItem`), or ``None``."""
    parts = range(layout.partitions)
    group = layout.group
    if not state.groups_ready:
        replies = yield RedisBatch(
            tuple(("XGROUP", "CREATE", layout.stream(p), group, "0", "MKSTREAM") for p in parts)
        )
        for reply in replies:
            if isinstance(reply, BaseException) and "BUSYGROUP" not in str(reply):
                return RoundResult(redis_error=reply)
        state.groups_ready = True

    commands: list[tuple[Any, ...]] = []
    kinds: list[tuple[str, int]] = []
    for p in parts:
        if now_ms >= state.claim_due_ms.get(p, 0.0):
            commands.append(
                (
                    "XAUTOCLAIM",
                    layout.stream(p),
                    group,
                    state.consumer,
                    int(options.claim_idle * 1000),
                    state.claim_cursor.get(p, "0-0"),
                    "COUNT",
                    options.batch_size,
                )
            )
            kinds.append(("claim", p))
        # its own unacknowledged entries (a failed round) and new ones: new writes keep
        # flowing past an entry the store rejects, and prove the store is up
        for start in ("0", ">") if p in state.own_pending else (">",):
            commands.append(
                (
                    "XREADGROUP",
                    "GROUP",
                    group,
                    state.consumer,
                    "COUNT",
                    options.batch_size,
                    "STREAMS",
                    layout.stream(p),
                    start,
                )
            )
            kinds.append((start, p))
    replies = yield RedisBatch(tuple(commands))

    read: list[tuple[int, str, Mapping[bytes, Any]]] = []
    top_of: dict[int, str] = {}  #: the highest ID read per partition
    read_error: BaseException | None = None
    for (kind, p), reply in zip(kinds, replies, strict=True):
        if isinstance(reply, BaseException):
            if "NOGROUP" in str(reply):
                state.groups_ready = False
            read_error = read_error or reply
            continue
        if kind == "claim":
            cursor = _text(reply[0]) if reply else "0-0"
            state.claim_cursor[p] = cursor
            if cursor == "0-0":  # a full pass: rest until the next interval
                state.claim_due_ms[p] = now_ms + options.claim_every * 1000
            entries = _entries(reply[1] if reply and len(reply) > 1 else ())
            if entries:
                state.own_pending.add(p)
        else:
            entries = _read_reply(reply)
            if kind == "0" and not entries:
                state.own_pending.discard(p)
            elif entries:
                state.own_pending.add(p)
        if entries:
            newest = entries[-1][0]  # replies list entries in stream order
            top = top_of.get(p)
            top_of[p] = newest if top is None else max(top, newest, key=_id_key)
        read.extend((p, entry_id, fields) for entry_id, fields in entries)
    if read_error is not None:
        # what was read is now pending to this consumer (own_pending says where): the next
        # round reads it again, whole, rather than half a round now
        return RoundResult(redis_error=read_error)
    if not read:
        return RoundResult()

    changes = coalesce(read)
    for change in changes:
        if not change.version:  # only the changes that go to the store need theirs
            change.version = stream_version(change.entry_id)
        if change.error is None and change.op == "s":
            try:
                change.value = loads(change.raw_value or b"")
            except Exception as exc:
                change.error = f"cannot decode the value: {exc!r}"

    ok: list[_Change] = []
    #: (change, its store op, its item, the error, whether the store had proven itself up
    #: before that failure: only then is the failure the item's own, and counts)
    failed: list[_Failed] = []
    poison = [c for c in changes if c.error is not None]
    live = [c for c in changes if c.error is None]
    store_error: BaseException | None = None
    for op, group_changes in (
        ("write", [c for c in live if c.op == "s"]),
        ("delete", [c for c in live if c.op == "d"]),
    ):
        if not group_changes:
            continue
        if op == "write" and serializer is not None:  # the bytes as written ride along
            items = tuple(
                StoreItem(c.key, c.value, c.version, c.raw_value, serializer) for c in group_changes
            )
        else:
            items = tuple(StoreItem(c.key, c.value, c.version) for c in group_changes)
        error = yield StoreCall(op, items)  # type: ignore[arg-type]
        if error is None:
            ok.extend(group_changes)
            continue
        store_error = error
        # find the entries the store rejects: item by item, unless it looks down
        pairs = [(c, op, item, error) for c, item in zip(group_changes, items, strict=True)]
        failed += yield from _isolate(pairs, ok, options.isolate_limit, proven=False)

    # A failure before the store proved itself up may be the outage's, not the item's (the
    # store can come back in the middle of a round): once it is up (a call succeeded, or
    # it answers ping), each such item is tried once more, and only a failure then counts.
    unproven = [f for f in failed if not f[4]]
    if unproven:
        up, retry = bool(ok), True
        if not up:
            answer = yield StorePing()
            if answer is None:  # no ping: a recent success stands in for it
                last = state.last_store_ok_ms
                up = last is not None and now_ms - last <= options.healthy_window * 1000
                retry = False
            else:
                up = bool(answer)
        if up:
            failed = [f for f in failed if f[4]]
            if retry:
                pairs = [f[:4] for f in unproven]
                failed += yield from _isolate(pairs, ok, options.isolate_limit, proven=True)
            else:
                failed += [(*f[:4], True) for f in unproven]
    if ok:
        state.last_store_ok_ms = now_ms

    commands = []
    by_partition: dict[int, list[_Change]] = {}
    for change in ok:
        by_partition.setdefault(change.partition, []).append(change)
    for p, done in by_partition.items():
        commands.append(ack_command(layout, p, done, top_of[p]))
    counted = [change for change, _op, _item, _error, proven in failed if proven]
    for change in counted:
        commands.append(("HINCRBY", layout.attempts(change.partition), change.entry_id, 1))
    if commands:
        replies = yield RedisBatch(tuple(commands))
    else:
        replies = []
    errors = [r for r in replies if isinstance(r, BaseException)]
    if errors:
        return RoundResult(
            read=len(read), applied=len(ok), failed=len(failed), redis_error=errors[0]
        )

    attempts_of = {
        change.entry_id: int(reply)
        for change, reply in zip(counted, replies[len(by_partition) :], strict=True)
    }
    dead: list[tuple[_Change, str, int]] = [(c, c.error or "", 0) for c in poison]
    errors_of = {c.entry_id: e for c, _op, _item, e, _proven in failed}
    for change in counted:
        n = attempts_of[change.entry_id]
        if n >= options.max_attempts:
            dead.append((change, repr(errors_of[change.entry_id]), n))
    if dead:
        commands = [
            (
                "EVAL",
                DEAD_SCRIPT,
                5,
                layout.stream(c.partition),
                layout.dead(c.partition),
                layout.attempts(c.partition),
                layout.dirty(c.partition),
                layout.cache_key(c.key) if c.key else layout.stream(c.partition),
                group,
                c.entry_id,
                c.key,
                c.op,
                c.raw_value or b"",
                error[:2000],
                n,
                c.version,
                *c.superseded,
            )
            for c, error, n in dead
        ]
        replies = yield RedisBatch(tuple(commands))
        errors = [r for r in replies if isinstance(r, BaseException)]
        if errors:
            return RoundResult(
                read=len(read), applied=len(ok), failed=len(failed), redis_error=errors[0]
            )
    for change, *_rest in failed:
        state.own_pending.add(change.partition)
    acked = sum(1 + len(c.superseded) for c in ok)
    return RoundResult(
        read=len(read),
        applied=len(ok),
        acked=acked,
        dead=len(dead),
        failed=len(failed) - sum(1 for c, _e, n in dead if n),
        store_error=store_error,
    )
