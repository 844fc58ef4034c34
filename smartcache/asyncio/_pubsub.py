"""Pub/sub for AsyncSmartClient: redis.asyncio's ``PubSub`` API over dedicated connections.

Routing is the sync :mod:`smartcache.sync._pubsub`'s: SUBSCRIBE/PSUBSCRIBE (and, on a standalone
server, SSUBSCRIBE) share one dedicated connection, to any primary of a cluster, since the
cluster bus carries PUBLISH to all; SSUBSCRIBE on a cluster goes to the primary owning each
channel's slot, one connection per node. No reader task: every connection's
``push_handler`` puts its replies, tagged with their connection, on one ``asyncio.Queue``
that ``get_message`` awaits, and a lost connection puts a marker there. ``get_message``
then reopens what was lost and replays its subscriptions; a shard channel the server
drops (``MOVED``, or an unasked ``sunsubscribe`` after resharding or failover) is
re-subscribed at its slot's owner now. The registries and message dicts are
:mod:`smartcache._pubsub_messages`'s, shared with the sync ``PubSub``. Never uses a node's
shared, auto-pipelined connection; starts no task.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import random
from collections.abc import AsyncIterator, Callable, Iterable
from typing import TYPE_CHECKING, Any, Final, Protocol

import hiredis
import redis.exceptions as rx
from redis.commands.helpers import list_or_args, parse_pubsub_subscriptions
from redis.utils import str_if_bytes

from smartcache._pubsub_messages import Handler, Subscriptions, group_by_slot
from smartcache.core.redirect import resolve_redirect
from smartcache.exceptions import ClusterUnavailableError, SmartConnectionError

if TYPE_CHECKING:
    from types import TracebackType

    from redis._parsers.encoders import Encoder

    from smartcache.asyncio._cluster import AsyncClusterRouter
    from smartcache.asyncio._connection import AsyncConnection
    from smartcache.asyncio._pool import AsyncConnectionPool

__all__ = ["AsyncPubSub"]

_NET: Final = (rx.ConnectionError, rx.TimeoutError, OSError)
_LOST: Final = object()  # queued when a connection is lost
_WAKE: Final = object()  # queued by aclose() for readers waiting on the queue
_CLASSIC: Final = ("SUBSCRIBE", "PSUBSCRIBE")


class _Client(Protocol):
    """What a pub/sub needs of its client (``AsyncSmartClient``): a Protocol, so this module
    does not import the client's, which imports this one."""

    _pool: AsyncConnectionPool | None
    _router: AsyncClusterRouter | None

    def get_encoder(self) -> Encoder: ...
    async def _ensure_ready(self) -> None: ...


class _Link:
    """One dedicated connection of a pub/sub, and the pool it is given back to."""

    __slots__ = ("conn", "pool", "retired", "shard")

    def __init__(self, pool: AsyncConnectionPool, conn: AsyncConnection, shard: bool) -> None:
        self.pool = pool
        self.conn = conn
        self.shard = shard  # carries shard channels of a cluster (not channels, patterns)
        self.retired = False

    @property
    def address(self) -> str:
        return self.conn.address

    @property
    def alive(self) -> bool:
        return not self.retired and self.conn.is_connected

    def retire(self) -> None:
        """Close the connection and give it back to its pool (idempotent)."""
        if not self.retired:
            self.retired = True
            self.conn.close()
            self.pool.release(self.conn)

    async def aclose(self) -> None:
        """:meth:`retire`, once the socket is really closed."""
        if not self.retired:
            self.retired = True  # from now on its loss is ours, not news
            try:
                await self.conn.aclose()
            finally:
                self.pool.release(self.conn)


class AsyncPubSub(Subscriptions):
    """Publish/subscribe on an AsyncSmartClient, with redis.asyncio's ``PubSub`` API.

    Messages are dicts ``{'type', 'pattern', 'channel', 'data'}``; a channel or pattern
    subscribed with a handler (``await subscribe(news=handler)``, sync or async) calls the
    handler instead. Close it with :meth:`aclose` (or ``async with``).
    """

    def __init__(
        self,
        client: _Client,
        *,
        ignore_subscribe_messages: bool = False,
        encoder: Encoder | None = None,
        push_handler_func: Callable[[Any], Any] | None = None,
        shard_hint: Any = None,
        event_dispatcher: Any = None,
    ) -> None:
        self._client = client
        self.ignore_subscribe_messages = ignore_subscribe_messages
        self.encoder = encoder if encoder is not None else client.get_encoder()
        self.push_handler_func = push_handler_func
        self._queue: asyncio.Queue[tuple[_Link | None, Any]] = asyncio.Queue()
        self._lock = asyncio.Lock()  # sends and connection changes; reads take none
        self._readers = 0
        self._classic: _Link | None = None
        self._shard_links: dict[str, _Link] = {}
        # shard channel -> the link it was subscribed on; a channel whose link is closed or
        # replaced is lost, and _heal() re-subscribes it where its slot is now
        self._shard_home: dict[Any, _Link] = {}
        self._dirty = False  # a shard link or channel may need re-subscribing
        self._forget_subscriptions()

    async def __aenter__(self) -> AsyncPubSub:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close every connection and forget all subscriptions (the object stays usable)."""
        async with self._lock:
            links = {self._classic, *self._shard_links.values(), *self._shard_home.values()}
            self._classic = None
            self._shard_links, self._shard_home = {}, {}
            self._dirty = False
            self._forget_subscriptions()
            while not self._queue.empty():
                self._queue.get_nowait()
            for link in links:
                if link is not None:
                    await link.aclose()
            for _ in range(self._readers):
                self._queue.put_nowait((None, _WAKE))

    async def reset(self) -> None:
        """Same as :meth:`aclose`."""
        await self.aclose()

    async def close(self) -> None:
        """Same as :meth:`aclose`."""
        await self.aclose()

    @property
    def subscribed(self) -> bool:
        """True while subscribed to any channel, pattern or shard channel."""
        return self._has_subscriptions

    @property
    def connection(self) -> AsyncConnection | None:
        """The connection for channels and patterns, if open."""
        return None if self._classic is None else self._classic.conn

    # -- subscribing ----------------------------------------------------------------------
    async def subscribe(self, *args: Any, **kwargs: Handler) -> None:
        """Subscribe to channels; ``name=handler`` keyword arguments register handlers."""
        await self._add("SUBSCRIBE", args, kwargs)

    async def psubscribe(self, *args: Any, **kwargs: Handler) -> None:
        """Subscribe to channel patterns; ``pattern=handler`` registers a handler."""
        await self._add("PSUBSCRIBE", args, kwargs)

    async def ssubscribe(self, *args: Any, target_node: Any = None, **kwargs: Handler) -> None:
        """Subscribe to shard channels (on a cluster: at the primary owning each slot)."""
        await self._add("SSUBSCRIBE", args, kwargs)

    async def unsubscribe(self, *args: Any) -> None:
        """Unsubscribe from the given channels, or from all channels when none is given."""
        await self._remove("UNSUBSCRIBE", args)

    async def punsubscribe(self, *args: Any) -> None:
        """Unsubscribe from the given patterns, or from all patterns when none is given."""
        await self._remove("PUNSUBSCRIBE", args)

    async def sunsubscribe(self, *args: Any, target_node: Any = None) -> None:
        """Unsubscribe from the given shard channels, or from all of them."""
        await self._remove("SUNSUBSCRIBE", args)

    async def ping(self, message: Any = None) -> None:
        """Send PING on the pub/sub connection; the reply arrives as a ``pong`` message."""
        await self.execute_command(*(("PING",) if message is None else ("PING", message)))

    async def execute_command(self, *args: Any) -> None:
        """Send a raw command on the pub/sub connection (its reply arrives as a message)."""
        await self._ready()
        async with self._lock:
            await self._send_classic(args)

    async def connect(self) -> None:
        """Open the connection for channels and patterns now (subscribing opens it anyway)."""
        await self._ready()
        async with self._lock:
            await self._classic_link()

    async def _add(self, command: str, args: tuple[Any, ...], kwargs: dict[str, Handler]) -> None:
        new = parse_pubsub_subscriptions(args, kwargs)
        router = await self._ready()
        async with self._lock:
            if command == "SSUBSCRIBE" and router is not None:
                await self._ssubscribe_at(list(new), None)
            else:
                await self._send_classic((command, *new), home=next(iter(new), None))
            self._registered(command, new)

    async def _remove(self, command: str, args: tuple[Any, ...]) -> None:
        names = list_or_args(args[0], args[1:]) if args else []
        router = await self._ready()
        async with self._lock:
            targets = self._leaving(command, names)
            if command != "SUNSUBSCRIBE" or router is None:
                await self._send_classic((command, *names))
                return
            home = self._shard_home
            for address, group in group_by_slot(
                targets, lambda c: home[c].address if c in home else None, self._slot
            ):
                link = self._shard_links.get(address)
                if link is not None and link is home[group[0]] and link.alive:
                    await _send(link, (command, *group))

    # -- connections (callers hold the lock) ------------------------------------------------
    async def _ready(self) -> AsyncClusterRouter | None:
        """The cluster router, or None on a standalone server (topology detected first)."""
        await self._client._ensure_ready()
        return self._client._router

    async def _open(self, address: str | None, *, shard: bool) -> _Link:
        """A new dedicated connection to ``address`` (None: any primary), feeding the queue."""
        client = self._client
        if client._pool is not None:
            pool = client._pool
        else:
            router = client._router
            assert router is not None
            pool = router.state.pool(address or random.choice(router.primaries()))
        conn = await pool.acquire_dedicated()
        link = _Link(pool, conn, shard)
        conn.push_handler = functools.partial(self._on_push, link)
        proto = conn._proto  # the wire layer has no public "lost" hook yet
        if proto is None:
            self._on_push(link, _LOST)
        else:
            proto.lost.add_done_callback(lambda _: self._on_push(link, _LOST))
        return link

    def _on_push(self, link: _Link, reply: Any) -> None:
        if not link.retired:
            self._queue.put_nowait((link, reply))

    async def _send_classic(self, args: tuple[Any, ...], home: Any = None) -> None:
        link = await self._classic_link(home)
        try:
            await _send(link, args)
        except _NET:
            await _send(await self._classic_link(home), args)  # reopened and replayed; once more

    async def _classic_link(self, home: Any = None) -> _Link:
        """The classic link, (re)opened with its subscriptions replayed if needed.

        On a cluster it opens at the primary of ``home``'s slot (the first channel
        subscribed), as redis-py's ClusterPubSub does, so ``publish()`` to that channel,
        which goes to the same node, counts this subscriber.
        """
        link = self._classic
        if link is not None and link.alive:
            return link
        self._classic = None
        if link is not None:
            link.retire()
        router = self._client._router
        address = None
        if router is not None and home is not None:
            address = self._address_for_slot(self._slot(home))
        try:
            link = await self._open(address, shard=False)
        except _NET:
            if router is None:
                raise
            await router.try_refresh()  # the node may be gone: try one of the current map
            link = await self._open(None, shard=False)
        self._classic = link
        kinds = _CLASSIC if router is not None else (*_CLASSIC, "SSUBSCRIBE")
        for command in self._replay(kinds):
            await _send(link, command)
        return link

    async def _shard_link(self, address: str) -> _Link:
        link = self._shard_links.get(address)
        if link is None or not link.alive:
            if link is not None:  # replaced, not reopened: its channels are lost, for _heal()
                self._dirty = True
                link.retire()
            link = await self._open(address, shard=True)
            self._shard_links[address] = link
        return link

    async def _ssubscribe_at(self, channels: Iterable[Any], address: str | None) -> None:
        """SSUBSCRIBE each channel at ``address``, or at its slot's primary when None."""

        def where(channel: Any) -> str:
            return address or self._address_for_slot(self._slot(channel))

        for target, group in group_by_slot(channels, where, self._slot):
            link = await self._shard_link(target)
            await _send(link, ("SSUBSCRIBE", *group))
            for channel in self._normalize_keys(dict.fromkeys(group)):
                self._shard_home[channel] = link

    def _address_for_slot(self, slot: int) -> str:
        router = self._client._router
        assert router is not None
        slot_map = router.state.slot_map
        address = None if slot_map is None else slot_map.primary_for_slot(slot)
        if address is None:
            raise ClusterUnavailableError(f"slot {slot} is not served by any node", slot=slot)
        return address

    def _needs_heal(self) -> bool:
        classic = self._classic
        standalone = self._client._router is None
        wanted = self.channels or self.patterns or (standalone and self.shard_channels)
        lost = bool(wanted) and (classic is None or not classic.alive)
        return lost or (self._dirty and not standalone)

    async def _heal(self) -> None:
        """Reopen lost connections and re-subscribe what they carried, at the owner now."""
        if not self._needs_heal():
            return
        async with self._lock:
            if not self._needs_heal():
                return
            router = self._client._router
            if self.channels or self.patterns or (router is None and self.shard_channels):
                await self._classic_link()  # a no-op when it is alive
            if router is None or not self._dirty:
                return
            self._dirty = False
            try:
                await self._heal_shards(router)
            except BaseException:
                self._dirty = True
                raise

    async def _heal_shards(self, router: AsyncClusterRouter) -> None:
        """Re-subscribe shard channels whose connection died or that the server dropped."""
        links = self._shard_links
        for address, link in list(links.items()):
            if not link.alive:
                del links[address]
                link.retire()
        lost = [ch for ch, link in self._shard_home.items() if links.get(link.address) is not link]
        lost += [ch for ch in self.shard_channels if ch not in self._shard_home]
        if not lost:
            return
        for channel in lost:
            self._shard_home.pop(channel, None)
            if channel in self.pending_unsubscribe_shard_channels:
                self.pending_unsubscribe_shard_channels.discard(channel)
                self.shard_channels.pop(channel, None)
        await router.try_refresh()  # the node may be gone or its slots moved
        await self._ssubscribe_at([ch for ch in lost if ch in self.shard_channels], None)

    # -- reading ------------------------------------------------------------------------------
    async def get_message(
        self, ignore_subscribe_messages: bool = False, timeout: float | None = 0.0
    ) -> dict[str, Any] | None:
        """Return the next message, or None if none arrives within ``timeout`` seconds.

        ``timeout=None`` waits until a message arrives. A message a handler took also
        returns None.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        queue = self._queue
        while True:
            await self._heal()
            if queue.empty():
                if deadline is None and self._classic is None and not self._shard_links:
                    raise RuntimeError(
                        "pubsub connection not set: "
                        "did you forget to call subscribe() or psubscribe()?"
                    )
                self._readers += 1
                try:
                    async with asyncio.timeout_at(deadline):
                        link, reply = await queue.get()
                except TimeoutError:
                    return None
                finally:
                    self._readers -= 1
            else:
                link, reply = queue.get_nowait()
            if reply is _WAKE or link is None:
                return None
            if reply is _LOST:
                self._dirty |= link.shard  # the classic link is checked by _heal() anyway
                continue
            consumed, message = await self._on_reply(link, reply, ignore_subscribe_messages)
            if consumed:
                return message

    async def get_sharded_message(
        self,
        ignore_subscribe_messages: bool = False,
        timeout: float | None = 0.0,
        target_node: Any = None,
    ) -> dict[str, Any] | None:
        """As :meth:`get_message` (all connections share one queue of messages)."""
        return await self.get_message(ignore_subscribe_messages, timeout)

    async def listen(self) -> AsyncIterator[dict[str, Any]]:
        """Yield messages as they arrive, while subscribed to anything."""
        while self.subscribed:
            message = await self.get_message(timeout=None)
            if message is not None:
                yield message

    async def _on_reply(
        self, link: _Link, reply: Any, ignore: bool
    ) -> tuple[bool, dict[str, Any] | None]:
        """Handle one reply; ``(False, None)`` when it was ours alone (a redirect, an OK)."""
        if isinstance(reply, rx.RedisError):
            redirect = resolve_redirect(reply, link.conn.address)
            if redirect is None or not link.shard:
                raise reply
            target = redirect.address
            async with self._lock:
                moved = [c for c, home in self._shard_home.items() if home is link]
                moved = [c for c in moved if self._slot(c) == redirect.slot]
                if redirect.kind == "ASK":
                    await _send(await self._shard_link(target), ("ASKING",))
                await self._ssubscribe_at(moved, target)
                self._drop_if_idle(link)
            return False, None
        if link.shard:
            if not isinstance(reply, list):
                return False, None  # the +OK of an ASKING
            if str_if_bytes(reply[0]) == "sunsubscribe":
                self._on_sunsubscribe(link, reply[1])
        if self.push_handler_func is not None and type(reply) is hiredis.PushNotification:
            result = self.push_handler_func(reply)
            if inspect.isawaitable(result):
                await result
            return True, None
        return True, await self.handle_message(reply, ignore)

    def _on_sunsubscribe(self, link: _Link, channel: Any) -> None:
        if self._shard_home.get(channel) is link:
            del self._shard_home[channel]  # if unasked, the slot moved: _heal() follows it
            self._dirty = True
        self._drop_if_idle(link)

    def _drop_if_idle(self, link: _Link) -> None:
        """Close a shard link that no longer carries any of our channels."""
        if not any(home is link for home in self._shard_home.values()):
            if self._shard_links.get(link.address) is link:
                del self._shard_links[link.address]
            link.retire()

    async def handle_message(
        self, response: Any, ignore_subscribe_messages: bool = False
    ) -> dict[str, Any] | None:
        """Turn a raw pub/sub reply into a message dict, or call its handler (redis-py's)."""
        if response is None:
            return None
        message, handler = self._read(response, ignore_subscribe_messages)
        if handler and message is not None:
            result = handler(message)
            if inspect.isawaitable(result):
                await result
            return None
        return message

    async def run(
        self,
        *,
        exception_handler: Callable[[BaseException, AsyncPubSub], Any] | None = None,
        poll_timeout: float = 1.0,
        pubsub: AsyncPubSub | None = None,
    ) -> None:
        """Call handlers for every message until cancelled (redis.asyncio's ``run``).

        Start it with ``asyncio.create_task(p.run())``, stop it with ``task.cancel()``.
        Every channel, pattern and shard channel must have a handler.
        """
        self._require_handlers()
        await self.connect()
        source = self if pubsub is None else pubsub
        while True:
            try:
                await source.get_message(ignore_subscribe_messages=True, timeout=poll_timeout)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                if exception_handler is None:
                    raise
                result = exception_handler(exc, self)
                if inspect.isawaitable(result):
                    await result
            await asyncio.sleep(0)  # let other tasks run when messages keep coming


async def _send(link: _Link, command: tuple[Any, ...]) -> None:
    """Send on ``link``, which must be alive: a lost one is replaced, never silently reopened."""
    if not link.alive:
        raise SmartConnectionError(
            f"pub/sub connection to {link.address} was lost", node=link.address
        )
    await link.conn.send(*command)
