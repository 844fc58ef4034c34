"""A client's near cache at run time: the store, the tracking channels, the hit and miss steps.

Both clients drive the same :class:`NearRuntime`; only the round trip of a miss differs
(a pooled connection in the sync client, the shared auto-pipelined one in the asyncio
client), and how channels are watched (a daemon thread, or the event loop's reader and
timer: each shell's ``_near_io`` module, behind :class:`World`). The rules themselves are
:mod:`smartcache.core.nearcache`'s.

A hit: look the arguments up; drain the entry's tracking channel if anything has arrived
(so an invalidation already on this machine is applied before the hit is served); check
that the channel is the one that tracked the read and is alive, and that the node that
served the read still serves the key (slot map, Sentinel primary); return a copy.

A miss: hold the key's placeholder, send ``[CLIENT TRACKING ... (first read on this
connection for this channel)], [CLIENT CACHING YES (optin)], <the read>, PTTL key`` in one
write, then keep the reply only if the placeholder survived (no invalidation of the key
arrived meanwhile), the connection did not reconnect in between, and the channel is the
same. Any error (an error reply, a lost connection, a redirect) sends the command down the
client's ordinary path, which owns those rules; nothing is kept then.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Final, Protocol

from smartcache.core.nearcache import (
    FLUSH,
    INVALIDATE,
    PONG,
    Entry,
    NearCache,
    NearStats,
    NearStore,
    classify_message,
    expiry,
    thaw,
    tracking_commands,
)
from smartcache.exceptions import ConfigurationError
from smartcache.wire.settings import ConnectionSettings
from smartcache.wire.tracking import TrackingChannel

__all__ = ["MISS", "NearRuntime", "World", "bypassed", "near_config_from", "with_mget"]

#: what :meth:`NearRuntime.get` returns when it has nothing to serve
MISS: Final = object()

_monotonic = time.monotonic
_BYPASS: ContextVar[bool] = ContextVar("smartcache_near_bypass", default=False)
#: whether the caller is inside ``near_cache.bypass()`` (the hot path's check)
bypassed: Final = _BYPASS.get


class World(Protocol):
    """How a shell watches tracking channels (``sync/_near_io``, ``asyncio/_near_io``)."""

    def start(self, runtime: NearRuntime) -> None:
        """Begin calling ``runtime.tick()`` every ``interval / 2`` seconds."""

    def watch(self, channel: TrackingChannel, runtime: NearRuntime) -> None:
        """A channel opened: drain it as messages arrive, where the world can."""

    def unwatch(self, channel: TrackingChannel) -> None:
        """A channel is about to close (its socket is still open)."""

    def stop(self) -> None:
        """Stop the timer (idempotent)."""


@dataclass(slots=True)
class Read:
    """One read of a miss: its arguments, where its reply sits among the replies, and the
    placeholder it holds (``token`` None: read but not to be kept, outside ``prefixes``)."""

    args: tuple[Any, ...]
    rkey: bytes
    slot: int
    index: int
    token: object


@dataclass(slots=True)
class Plan:
    """A miss on its way: the commands sent, the reads among them, and what must still
    hold when the replies come back for a reply to be kept."""

    reads: list[Read]
    channel: TrackingChannel
    commands: list[tuple[Any, ...]]
    #: the connection's handshake count when the commands went out
    connects: int
    conn: Any
    generation: object
    owner: object
    #: how many commands switch the connection's tracking on (first in ``commands``)
    tracks: int


def with_mget(commands: frozenset[str]) -> frozenset[str]:
    """``commands``, and MGET where GET is among them (served key by key)."""
    return commands | {"MGET"} if "GET" in commands else commands


def near_config_from(near_cache: Any, cache: Any, cache_config: Any) -> NearCache | None:
    """The :class:`NearCache` a client was given: ``near_cache=``, or redis-py's own
    client-side-caching arguments (``cache_config=CacheConfig(...)``, ``cache=``)."""
    given = [n for n, v in (("near_cache", near_cache), ("cache", cache),
                            ("cache_config", cache_config)) if v is not None]  # fmt: skip
    if len(given) > 1:
        raise ConfigurationError(
            f"give one of near_cache=, cache=, cache_config= (got {', '.join(given)})"
        )
    if near_cache is not None:
        if near_cache is True:
            return NearCache()
        if not isinstance(near_cache, NearCache):
            raise ConfigurationError(
                "near_cache must be a smartcache.NearCache(...) (or True for the defaults), "
                f"got {type(near_cache).__name__}"
            )
        return near_cache
    source = cache_config
    if cache is not None:
        source = getattr(cache, "config", None)
        if source is None:
            raise ConfigurationError(
                "cache= must be a redis-py cache with a .config (CacheConfig); smartcache "
                "keeps its own store, sized from that config: pass cache_config= instead"
            )
    if source is None:
        return None
    get_max = getattr(source, "get_max_size", None)
    max_entries = int(get_max()) if callable(get_max) else int(getattr(source, "max_size", 10_000))
    return NearCache(max_entries=max_entries)


class NearRuntime:
    """One client's near cache (``client.near_cache``): statistics, :meth:`clear`,
    :meth:`bypass`, and the steps both clients run (see the module)."""

    def __init__(
        self,
        config: NearCache,
        world: World,
        encode: Callable[[Any], bytes],
        owner_of: Callable[[int], object],
        live_addresses: Callable[[], set[str] | None] | None = None,
    ) -> None:
        self.config = config
        self.store = NearStore(config)
        #: guards the store and every channel's reads (drains happen under it)
        self.lock = threading.Lock()
        #: the commands served: those asked for until the first read settles them from
        #: the server's command table (:attr:`ready`)
        self.commands: frozenset[str] = with_mget(config.wanted())
        self.ready = False
        #: whether a reply for a missing key may be kept (not on a cluster: a slot can
        #: move without any write to that key, and then nothing would invalidate it)
        self.keep_missing = True
        self._encode = encode
        self._owner_of = owner_of
        self._live = live_addresses
        self._world = world
        self._channels: dict[str, TrackingChannel] = {}
        self._limit = 2.0 * config.health_check_interval
        _RUNTIMES.add(self)

    def __repr__(self) -> str:
        return (
            f"<NearCache entries={len(self.store)} channels={len(self._channels)} {self.config!r}>"
        )

    # -- public ---------------------------------------------------------------------------

    def stats(self) -> NearStats:
        """Counters and sizes now (a copy)."""
        with self.lock:
            snapshot = self.store.snapshot()
            snapshot.channels = len(self._channels)
            lags = [c.lag for c in self._channels.values() if c.lag is not None]
            snapshot.invalidation_lag = max(lags) if lags else None
        return snapshot

    def clear(self) -> int:
        """Drop every entry (the server keeps tracking; later reads fill it again)."""
        with self.lock:
            return self.store.drop_where("clear")

    def __len__(self) -> int:
        return len(self.store)

    @staticmethod
    @contextlib.contextmanager
    def bypass() -> Iterator[None]:
        """Inside ``with client.near_cache.bypass():`` reads go to the server and are not
        kept (in this thread or task)."""
        token = _BYPASS.set(True)
        try:
            yield
        finally:
            _BYPASS.reset(token)

    @staticmethod
    def bypassed() -> bool:
        """Whether the caller is inside :meth:`bypass`."""
        return _BYPASS.get()

    # -- a hit ----------------------------------------------------------------------------

    def get(self, args: tuple[Any, ...]) -> Any:
        """A copy of the kept reply to ``args``, or :data:`MISS`."""
        store = self.store
        with self.lock:
            entry = store._lru.get(args)  # the hot path's one look-up
            if entry is None:
                return MISS
            channel: TrackingChannel = entry.channel  # type: ignore[assignment]
            if channel.readable():
                channel.drain()
            now = _monotonic()
            if channel.overdue(now, self._limit) or not channel.reader_ok():
                channel.lost()
                return MISS
            entry = store.get(args, now)
            if entry is None:
                return MISS
            if entry.generation is not channel.generation or (
                self._owner_of(entry.slot) is not entry.owner
            ):
                store.discard(entry)
                return MISS
            store.stats.hits += 1
            return thaw(entry.value)

    # -- a miss ---------------------------------------------------------------------------

    def channel(self, settings: ConnectionSettings) -> TrackingChannel | None:
        """The open channel to the node of ``settings``, if there is one."""
        channel = self._channels.get(settings.address)
        return channel if channel is not None and channel.is_open else None

    def new_channel(self, settings: ConnectionSettings) -> TrackingChannel:
        """A channel object for the node of ``settings`` (not connected yet)."""
        return TrackingChannel(settings, self._on_message, self._on_lost)

    def opened(self, channel: TrackingChannel) -> TrackingChannel:
        """Adopt a freshly connected channel (or keep the one already there)."""
        with self.lock:
            current = self._channels.get(channel.address)
            if current is not None and current.is_open:
                channel.close()
                return current
            self._channels[channel.address] = channel
        self._world.start(self)
        self._world.watch(channel, self)
        return channel

    def connect_commands(self, channel: TrackingChannel) -> list[tuple[Any, ...]]:
        """What a new channel sends once it knows its id (broadcast mode registers the
        prefixes on the channel itself, so data connections need not)."""
        if self.config.mode != "broadcast":
            return []
        return tracking_commands(self.config, channel.client_id)[1:]

    def prepare(
        self,
        reads: list[tuple[tuple[Any, ...], int]],
        owner: Any,
        channel: TrackingChannel,
        conn: Any,
    ) -> Plan:
        """The commands for the misses ``reads`` (``(args, slot)`` each) on ``conn``, a
        connection of ``owner``: one write, one round trip."""
        config = self.config
        commands: list[tuple[Any, ...]] = []
        if config.mode != "broadcast" and conn.near_tracking is not channel.generation:
            commands += tracking_commands(config, channel.client_id)
        tracks = len(commands)
        optin = config.mode == "optin"
        planned: list[Read] = []
        with self.lock:
            store = self.store
            for args, slot in reads:
                rkey = self._encode(args[1])
                keep = config.key_allowed(rkey)
                if keep and optin:
                    commands.append(("CLIENT", "CACHING", "YES"))
                planned.append(
                    Read(args, rkey, slot, len(commands), store.begin(rkey) if keep else None)
                )
                commands.append(args)
                commands.append(("PTTL", args[1]))
                store.stats.misses += 1
        return Plan(
            reads=planned, channel=channel, commands=commands, connects=conn.connects,
            conn=conn, generation=channel.generation, owner=owner, tracks=tracks,
        )  # fmt: skip

    def reader_failed(self, channel: TrackingChannel) -> None:
        """A tracked read failed on the wire: the reader's tracking cannot be trusted any
        more, so the channel goes with its entries (the next miss opens both again)."""
        with self.lock:
            channel.lost()

    def abandon(self, plan: Plan) -> None:
        """The misses failed: let go of their placeholders."""
        with self.lock:
            for read in plan.reads:
                if read.token is not None:
                    self.store.abandon(read.rkey, read.token)

    def complete(self, plan: Plan, replies: list[Any]) -> list[Any]:
        """The replies of the reads (each kept if it may be), :data:`MISS` in place of an
        error reply (the ordinary path runs that command: redirects, WRONGTYPE... are its
        to decide)."""
        conn = plan.conn
        same_socket = conn.connects == plan.connects
        if plan.tracks:
            if same_socket and not any(isinstance(r, Exception) for r in replies[: plan.tracks]):
                conn.near_tracking = plan.generation
            else:
                same_socket = False
        channel: TrackingChannel = plan.channel
        ttl, keep_missing = self.config.ttl, self.keep_missing
        results: list[Any] = []
        with self.lock:
            store = self.store
            if channel.readable():
                channel.drain()
            usable = same_socket and channel.generation is plan.generation
            now = _monotonic()
            for read in plan.reads:
                reply, pttl = replies[read.index], replies[read.index + 1]
                if isinstance(reply, Exception):
                    results.append(MISS)
                    if read.token is not None:
                        store.abandon(read.rkey, read.token)
                    continue
                if read.token is None:
                    results.append(reply)
                    continue
                if not usable or (pttl == -2 and not keep_missing):
                    store.abandon(read.rkey, read.token)
                    results.append(reply)
                    continue
                kept = store.put(
                    read.args, read.rkey, read.token, reply, expiry(now, ttl, pttl),
                    plan.owner, read.slot, channel, plan.generation,
                )  # fmt: skip
                results.append(thaw(reply) if kept else reply)  # the caller may change it
        return results

    # -- the channels' messages -----------------------------------------------------------

    def _on_message(self, channel: TrackingChannel, message: Any) -> None:
        # under self.lock (every drain is)
        kind, keys = classify_message(message)
        if kind == INVALIDATE:
            assert keys is not None
            self.store.invalidate(keys)
        elif kind == FLUSH:
            self.store.drop_where("server_flush", lambda e: e.channel is channel)
        elif kind == PONG:
            channel.took_pong(_monotonic())

    def _on_lost(self, channel: TrackingChannel) -> None:
        # under self.lock (drain, tick and close call it)
        self._world.unwatch(channel)
        if self._channels.get(channel.address) is channel:
            del self._channels[channel.address]
        self.store.drop_where("channel_lost", _of_channel(channel))

    def tick(self) -> None:
        """The keep-alive, every ``health_check_interval / 2``: close the channels of nodes
        that serve nothing any more, drain each channel, PING the quiet ones, declare lost
        those quiet for twice the interval."""
        half = self.config.health_check_interval / 2
        live = None
        if self._live is not None:
            try:
                live = self._live()
            except Exception:  # a topology mid-change: look next tick
                live = None
        with self.lock:
            for channel in list(self._channels.values()):
                if live is not None and channel.address not in live:
                    # The node serves nothing of ours any more (left the cluster, demoted
                    # by a failover): its entries go now, not one access at a time.
                    self._world.unwatch(channel)
                    del self._channels[channel.address]
                    self.store.drop_where("topology", _of_channel(channel))
                    channel.close()
                    continue
                channel.drain()
                now = _monotonic()
                if channel.overdue(now, self._limit):
                    self.store.stats.flushes.setdefault("health_check", 0)
                    channel.lost()
                elif now - channel.last_ok >= half:
                    channel.ping()

    def drain_channel(self, channel: TrackingChannel) -> None:
        """Read what has arrived on ``channel`` (an event loop's reader callback)."""
        with self.lock:
            channel.drain()

    def awaiting_pong(self) -> dict[int, TrackingChannel]:
        """The channels whose PING is unanswered, by the descriptors to wait on (the
        socket's and the idle reader's), for a thread that waits for the PONG."""
        with self.lock:
            return {fd: c for c in self._channels.values() if c.ping_sent for fd in c.fds()}

    def serve(self, channel: TrackingChannel) -> None:
        """One of ``channel``'s descriptors woke a waiting thread: apply what arrived (or
        drop the channel if that was its end, or its reader's)."""
        with self.lock:
            if channel.readable():
                channel.drain()

    def forget_nodes(self, reason: str, keep: Callable[[Entry], bool]) -> int:
        """Drop the entries for which ``keep`` is false (a topology change)."""
        with self.lock:
            return self.store.drop_where(reason, lambda e: not keep(e))

    def close(self) -> None:
        """Close every channel and stop the keep-alive; the entries go (a client used
        again after ``close()`` opens new channels as it reads)."""
        self._world.stop()
        with self.lock:
            channels, self._channels = list(self._channels.values()), {}
            for channel in channels:
                self._world.unwatch(channel)
                channel.close()
            self.store.drop_where("closed")


#: every live runtime, for the fork hook below
_RUNTIMES: weakref.WeakSet[NearRuntime] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A forked child shares its parent's channel sockets: reading them would steal the
    parent's invalidations, and the child's copies of the entries would be followed by no
    one. The child forgets both (closing only its own descriptors) and starts empty."""
    for runtime in list(_RUNTIMES):
        runtime.lock = threading.Lock()  # another thread may have held it at the fork
        for channel in runtime._channels.values():  # this module's own
            channel.close()
        runtime._channels = {}
        runtime.store.drop_where("fork")


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _of_channel(channel: TrackingChannel) -> Callable[[Entry], bool]:
    return lambda entry: entry.channel is channel
