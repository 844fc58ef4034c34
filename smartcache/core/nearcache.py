"""The near cache's rules, I/O-free: what may be cached, where an entry lives, when it dies.

A near cache keeps the replies of read-only single-key commands in the process and stays
coherent through the server's key tracking (``CLIENT TRACKING``): every data connection
that reads a cached key redirects its invalidations to one *tracking channel* per node,
and an invalidation drops every entry of that key. The shells (``smartcache._near``,
``smartcache.wire.tracking``) do the I/O; the decisions are here, once:

- :class:`NearCache`: the user's settings, checked (``ConfigurationError`` names the fix);
- :func:`cacheable_commands`: which commands the cache serves (a fixed list of
  deterministic reads with their key first, kept only where the server says it is
  read-only);
- :class:`NearStore`: the entries (LRU, O(1) eviction by count and by bytes), the index from
  a Redis key to its entries (O(entries of that key) invalidation), and the *in-flight
  placeholders*: a read that is on the wire holds a token for its key; an invalidation of
  the key takes the token away, and a reply whose token is gone is not stored, so an
  invalidation that arrives between a read's request and its reply is never lost;
- :func:`classify_message`: what a message on a tracking channel means (RESP2 pub/sub or
  RESP3 push; an invalidation of keys, a flush, a PONG);
- :func:`expiry`: an entry expires no later than ``ttl`` and no later than the key on the
  server (the reply's ``PTTL``).

Time is passed in (``now``, seconds on a monotonic clock): this module reads no clock.
"""

from __future__ import annotations

import math
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from smartcache.exceptions import ConfigurationError

__all__ = [
    "CACHEABLE",
    "INVALIDATE_CHANNEL",
    "MODES",
    "NearCache",
    "NearStats",
    "NearStore",
    "cacheable_commands",
    "classify_message",
    "expiry",
    "reply_size",
    "thaw",
    "tracking_commands",
]

#: the tracking modes: per-key tracking of every read (``default``), per-key tracking of
#: the reads the cache asks for (``optin``), or every write under the prefixes
#: (``broadcast``)
MODES: Final = ("default", "optin", "broadcast")

#: the pub/sub channel a RESP2 redirect target receives invalidations on
INVALIDATE_CHANNEL: Final = b"__redis__:invalidate"

#: Deterministic reads whose only key is their first argument: the reply depends on the
#: key's value and the arguments alone (no clock, no randomness, no server state such as
#: TTL, OBJECT or MEMORY). Kept per client only where the server's command table says the
#: command is read-only, so a module command (JSON.GET) is cached only where it exists.
CACHEABLE: Final = frozenset(
    {
        # strings and bits
        "GET", "GETRANGE", "SUBSTR", "STRLEN", "GETBIT", "BITCOUNT", "BITPOS", "BITFIELD_RO",
        "LCS_RO",
        # generic
        "TYPE",
        # hashes
        "HGET", "HGETALL", "HMGET", "HKEYS", "HVALS", "HLEN", "HEXISTS", "HSTRLEN",
        # sets
        "SMEMBERS", "SISMEMBER", "SMISMEMBER", "SCARD",
        # sorted sets
        "ZRANGE", "ZRANGEBYSCORE", "ZREVRANGE", "ZREVRANGEBYSCORE", "ZRANGEBYLEX",
        "ZREVRANGEBYLEX", "ZSCORE", "ZMSCORE", "ZRANK", "ZREVRANK", "ZCARD", "ZCOUNT",
        "ZLEXCOUNT",
        # lists
        "LRANGE", "LINDEX", "LLEN", "LPOS",
        # geo
        "GEOPOS", "GEODIST", "GEOHASH", "GEOSEARCH", "GEORADIUS_RO", "GEORADIUSBYMEMBER_RO",
        # streams (a stream's entries only change by writes)
        "XLEN", "XRANGE", "XREVRANGE",
        # modules, where the server has them
        "JSON.GET", "JSON.TYPE", "JSON.STRLEN", "JSON.OBJLEN", "JSON.OBJKEYS", "JSON.ARRLEN",
    }
)  # fmt: skip


def cacheable_commands(is_readonly: Callable[[str], bool | None]) -> frozenset[str]:
    """The commands of :data:`CACHEABLE` that the server knows as read-only.

    ``is_readonly(name)`` answers from the client's command table: ``True``/``False``, or
    ``None`` when the table does not know the command (then it is not cached: a module
    command on a server without the module, or a name the server does not have).
    """
    return frozenset(name for name in CACHEABLE if is_readonly(name))


@dataclass(frozen=True)
class NearCache:
    """Settings of a client's near cache (server-assisted client-side caching).

    Pass it as ``SmartClient(..., near_cache=NearCache(...))`` (or ``AsyncSmartClient``).

    - ``max_entries``: how many replies are kept (least recently used go first);
    - ``max_bytes``: the memory the kept replies and their keys may take, measured with
      ``sys.getsizeof`` over the reply's objects (``None``: no limit);
    - ``ttl``: the longest an entry is kept, in seconds (``None``: until invalidated or
      evicted); an entry never outlives the key's own TTL on the server;
    - ``mode``: ``"optin"`` (the server tracks only the reads the cache makes; the
      default), ``"default"`` (the server tracks every read of a tracking connection),
      ``"broadcast"`` (the server announces every write under ``prefixes``; no per-key
      memory on the server, more invalidation traffic);
    - ``prefixes``: only keys starting with one of these are cached (and, in broadcast
      mode, announced); empty means every key;
    - ``health_check_interval``: how often each tracking channel is PINGed, in seconds;
      a channel that has not answered for twice this long is declared lost and its node's
      entries are dropped (so a silently dead channel cannot keep entries alive);
    - ``commands``: the commands to cache, to narrow the default (:data:`CACHEABLE`).
    """

    max_entries: int = 10_000
    max_bytes: int | None = 64 * 1024 * 1024
    ttl: float | None = 300.0
    mode: str = "optin"
    prefixes: tuple[str | bytes, ...] = ()
    health_check_interval: float = 1.0
    commands: frozenset[str] | None = None
    #: the prefixes as bytes (derived)
    prefix_bytes: tuple[bytes, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        def bad(what: str) -> ConfigurationError:
            return ConfigurationError(f"NearCache: {what}")

        given: dict[str, Any] = dict(vars(self))  # as passed: the types are not checked yet
        max_entries, max_bytes, ttl = given["max_entries"], given["max_bytes"], given["ttl"]
        if type(max_entries) is not int or max_entries < 1:
            raise bad(f"max_entries must be a positive int, got {max_entries!r}")
        if max_bytes is not None and (type(max_bytes) is not int or max_bytes < 1):
            raise bad(f"max_bytes must be a positive int or None, got {max_bytes!r}")
        if ttl is not None and (
            not isinstance(ttl, int | float) or isinstance(ttl, bool) or not ttl > 0
        ):
            raise bad(f"ttl must be a positive number of seconds or None, got {ttl!r}")
        if self.mode not in MODES:
            raise bad(f"mode must be one of {', '.join(map(repr, MODES))}, got {self.mode!r}")
        raw_prefixes = given["prefixes"]
        if isinstance(raw_prefixes, str | bytes):
            raise bad(f"prefixes must be a sequence of prefixes, e.g. ({raw_prefixes!r},)")
        prefixes = tuple(raw_prefixes)
        for prefix in prefixes:
            if not isinstance(prefix, str | bytes) or not prefix:
                raise bad(f"each prefix must be a non-empty str or bytes, got {prefix!r}")
        object.__setattr__(self, "prefixes", prefixes)
        object.__setattr__(
            self,
            "prefix_bytes",
            tuple(p.encode() if isinstance(p, str) else p for p in prefixes),
        )
        interval = given["health_check_interval"]
        if (
            not isinstance(interval, int | float)
            or isinstance(interval, bool)
            or not (0 < interval <= 3600)
        ):
            raise bad(
                f"health_check_interval must be a number of seconds in (0, 3600], got {interval!r}"
            )
        if self.commands is not None:
            commands = frozenset(str(c).upper() for c in self.commands)
            unknown = commands - CACHEABLE
            if unknown:
                raise bad(
                    f"commands {sorted(unknown)} cannot be cached (not deterministic "
                    f"single-key reads); choose from smartcache.core.nearcache.CACHEABLE"
                )
            object.__setattr__(self, "commands", commands)

    def wanted(self) -> frozenset[str]:
        """The commands this configuration asks for (before the server's table narrows it)."""
        return CACHEABLE if self.commands is None else self.commands

    def key_allowed(self, key: bytes) -> bool:
        """Whether ``key`` (as sent) falls under :attr:`prefixes`."""
        prefixes = self.prefix_bytes
        return not prefixes or key.startswith(prefixes)


def tracking_commands(config: NearCache, redirect: int) -> list[tuple[Any, ...]]:
    """The commands that make a data connection track for the channel ``redirect``.

    ``CLIENT TRACKING OFF`` first: a connection that tracked for an earlier channel (lost
    since) may not switch modes while on.
    """
    on: tuple[Any, ...] = ("CLIENT", "TRACKING", "ON", "REDIRECT", redirect)
    if config.mode == "optin":
        on += ("OPTIN",)
    elif config.mode == "broadcast":
        on += ("BCAST",)
        for prefix in config.prefix_bytes:
            on += ("PREFIX", prefix)
    return [("CLIENT", "TRACKING", "OFF"), on]


# -- messages on a tracking channel -----------------------------------------------------------

#: what :func:`classify_message` found
INVALIDATE: Final = "invalidate"
FLUSH: Final = "flush"
PONG: Final = "pong"
OTHER: Final = "other"


def classify_message(message: Any) -> tuple[str, list[bytes] | None]:
    """What a message read on a tracking channel says.

    RESP2: ``[b"message", b"__redis__:invalidate", [keys] | None]`` (pub/sub), a PING
    answered in subscribed mode as ``[b"pong", b""]``; RESP3: the push
    ``[b"invalidate", [keys] | None]`` and ``b"PONG"``. ``None`` instead of keys is a flush
    (FLUSHALL/FLUSHDB, or the server dropping its tracking table).
    """
    if isinstance(message, list):
        if len(message) == 3 and message[0] == b"message" and message[1] == INVALIDATE_CHANNEL:
            keys = message[2]
        elif len(message) == 2 and message[0] == b"invalidate":
            keys = message[1]
        elif message and message[0] in (b"pong", b"PONG"):
            return PONG, None
        else:
            return OTHER, None
        if keys is None:
            return FLUSH, None
        return INVALIDATE, list(keys)
    if message == b"PONG":
        return PONG, None
    return OTHER, None


# -- sizes, copies, expiry -------------------------------------------------------------------

_FLAT = (bytes, str, int, float, type(None), bool)


def reply_size(value: Any) -> int:
    """The memory a reply takes in the process (``sys.getsizeof`` over its objects)."""
    size = sys.getsizeof(value)
    if isinstance(value, list | tuple | set | frozenset):
        return size + sum(reply_size(item) for item in value)
    if isinstance(value, dict):
        return size + sum(reply_size(k) + reply_size(v) for k, v in value.items())
    return size


def thaw(value: Any) -> Any:
    """A copy of a kept reply that the caller may change without changing the cache
    (strings and numbers are shared: they cannot change)."""
    if value.__class__ in _FLAT:
        return value
    if isinstance(value, list):
        return [thaw(item) for item in value]
    if isinstance(value, dict):
        return {thaw(k): thaw(v) for k, v in value.items()}
    if isinstance(value, set):
        return {thaw(item) for item in value}
    if isinstance(value, tuple):
        return tuple(thaw(item) for item in value)
    return value


def expiry(now: float, ttl: float | None, pttl: Any) -> float | None:
    """When an entry read at ``now`` expires, or ``None`` if it must not be kept.

    ``pttl`` is the key's ``PTTL`` read in the same round trip: ``-1`` (no TTL), ``-2``
    (no such key: the reply is kept, the key's creation invalidates it), or milliseconds.
    Anything else (an error) means not to keep the reply.
    """
    limit = math.inf if ttl is None else ttl
    if type(pttl) is not int:
        return None
    if pttl >= 0:
        limit = min(limit, pttl / 1000.0)
        if limit <= 0:
            return None
    return now + limit


# -- the store -------------------------------------------------------------------------------


@dataclass
class NearStats:
    """A snapshot of a near cache's counters (see ``client.near_cache.stats()``)."""

    hits: int = 0
    misses: int = 0
    #: entries dropped by an invalidation from the server
    invalidations: int = 0
    #: entries dropped to stay under ``max_entries`` / ``max_bytes``
    evictions: int = 0
    #: entries that reached their expiry (``ttl`` or the key's PTTL)
    expirations: int = 0
    #: replies read but not kept because an invalidation (or a flush) raced them
    races: int = 0
    #: entries dropped in bulk, by reason (``channel_lost``, ``server_flush``, ``topology``,
    #: ``clear``, ``health_check``)
    flushes: dict[str, int] = field(default_factory=dict)
    entries: int = 0
    bytes: int = 0
    #: tracking channels open now
    channels: int = 0
    #: the last health-check round trip of a tracking channel, in seconds: how long an
    #: invalidation takes to travel the channel, at most (``None`` before the first PING)
    invalidation_lag: float | None = None

    @property
    def hit_rate(self) -> float:
        """hits / (hits + misses), 0.0 before any read."""
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class Entry:
    """One kept reply. ``owner`` is what served it (the node's pool), ``channel`` the
    tracking channel that will tell of its invalidation, ``generation`` that channel's
    life when the read was made (a lost channel starts a new one)."""

    __slots__ = (
        "channel",
        "ckey",
        "expires",
        "generation",
        "owner",
        "rkey",
        "size",
        "slot",
        "value",
    )

    def __init__(  # noqa: PLR0917  # one constructor call, in NearStore.put
        self,
        ckey: tuple[Any, ...],
        rkey: bytes,
        value: Any,
        size: int,
        expires: float,
        owner: object,
        slot: int,
        channel: object,
        generation: object,
    ) -> None:
        self.ckey = ckey
        self.rkey = rkey
        self.value = value
        self.size = size
        self.expires = expires
        self.owner = owner
        self.slot = slot
        self.channel = channel
        self.generation = generation


class NearStore:
    """The entries of one client's near cache (see the module). Not thread-safe: the
    shell holds its lock around every call."""

    def __init__(self, config: NearCache) -> None:
        self.config = config
        self._lru: OrderedDict[tuple[Any, ...], Entry] = OrderedDict()
        self._by_key: dict[bytes, dict[tuple[Any, ...], None]] = {}
        self._inflight: dict[bytes, object] = {}
        self.bytes = 0
        self.stats = NearStats()

    def __len__(self) -> int:
        return len(self._lru)

    # -- reads --------------------------------------------------------------------------

    def get(self, ckey: tuple[Any, ...], now: float) -> Entry | None:
        """The live entry for ``ckey`` (marked most recently used), or ``None``; an
        expired entry is dropped. The caller still checks :attr:`Entry.owner` and the
        channel's generation (see ``smartcache._near``)."""
        entry = self._lru.get(ckey)
        if entry is None:
            return None
        if now >= entry.expires:
            self._remove(entry)
            self.stats.expirations += 1
            return None
        self._lru.move_to_end(ckey)
        return entry

    def begin(self, rkey: bytes) -> object:
        """Hold the in-flight placeholder of ``rkey`` for a read about to be sent."""
        token = object()
        self._inflight[rkey] = token
        return token

    def abandon(self, rkey: bytes, token: object) -> None:
        """Give up the placeholder (the read failed or was not cacheable)."""
        if self._inflight.get(rkey) is token:
            del self._inflight[rkey]

    def put(  # noqa: PLR0917  # one call, in the runtime's complete()
        self,
        ckey: tuple[Any, ...],
        rkey: bytes,
        token: object,
        value: Any,
        expires: float | None,
        owner: object,
        slot: int,
        channel: object,
        generation: object,
    ) -> bool:
        """Keep ``value`` if the placeholder ``token`` is still held (no invalidation of
        ``rkey`` arrived since :meth:`begin`); return whether it was kept."""
        inflight = self._inflight
        if inflight.get(rkey) is not token:
            self.stats.races += 1
            return False
        del inflight[rkey]
        if expires is None:
            return False
        size = reply_size(value) + sys.getsizeof(ckey) + len(rkey) + 120
        max_bytes = self.config.max_bytes
        if max_bytes is not None and size > max_bytes:
            return False
        old = self._lru.get(ckey)
        if old is not None:
            self._remove(old)
        entry = Entry(ckey, rkey, value, size, expires, owner, slot, channel, generation)
        self._lru[ckey] = entry
        self._by_key.setdefault(rkey, {})[ckey] = None
        self.bytes += size
        self._evict()
        return True

    def _evict(self) -> None:
        lru = self._lru
        max_entries, max_bytes = self.config.max_entries, self.config.max_bytes
        while len(lru) > max_entries or (max_bytes is not None and self.bytes > max_bytes):
            _, entry = lru.popitem(last=False)
            self._unindex(entry)
            self.stats.evictions += 1

    # -- removal ------------------------------------------------------------------------

    def _remove(self, entry: Entry) -> None:
        del self._lru[entry.ckey]
        self._unindex(entry)

    def _unindex(self, entry: Entry) -> None:
        self.bytes -= entry.size
        ckeys = self._by_key.get(entry.rkey)
        if ckeys is not None:
            ckeys.pop(entry.ckey, None)
            if not ckeys:
                del self._by_key[entry.rkey]

    def discard(self, entry: Entry) -> None:
        """Drop one entry found unusable (its node or channel changed)."""
        if self._lru.get(entry.ckey) is entry:
            self._remove(entry)

    def invalidate(self, keys: Iterable[bytes]) -> int:
        """The server says ``keys`` changed: drop their entries and placeholders."""
        dropped = 0
        inflight, by_key, lru = self._inflight, self._by_key, self._lru
        for rkey in keys:
            inflight.pop(rkey, None)
            ckeys = by_key.pop(rkey, None)
            if ckeys:
                for ckey in ckeys:
                    entry = lru.pop(ckey)
                    self.bytes -= entry.size
                    dropped += 1
        self.stats.invalidations += dropped
        return dropped

    def drop_where(self, reason: str, predicate: Callable[[Entry], bool] | None = None) -> int:
        """Drop every entry for which ``predicate`` holds (every entry when ``None``) and
        every placeholder, counted as a flush for ``reason``; return how many went.

        Placeholders all go: a read in flight cannot say which node will answer it, and
        losing one only costs a store.
        """
        self._inflight.clear()
        if predicate is None:
            dropped = len(self._lru)
            self._lru.clear()
            self._by_key.clear()
            self.bytes = 0
        else:
            doomed = [e for e in self._lru.values() if predicate(e)]
            for entry in doomed:
                self._remove(entry)
            dropped = len(doomed)
        flushes = self.stats.flushes
        flushes[reason] = flushes.get(reason, 0) + dropped
        return dropped

    def snapshot(self) -> NearStats:
        """The counters now (a copy)."""
        s = self.stats
        return NearStats(
            hits=s.hits,
            misses=s.misses,
            invalidations=s.invalidations,
            evictions=s.evictions,
            expirations=s.expirations,
            races=s.races,
            flushes=dict(s.flushes),
            entries=len(self._lru),
            bytes=self.bytes,
            invalidation_lag=s.invalidation_lag,
        )
