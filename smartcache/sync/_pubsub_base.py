# Generated from smartcache/asyncio/_pubsub_base.py by scripts/unasync.py: do not edit.
"""What the asyncio and sync pub/subs share: routing, recovery and redis-py's messages.

Routing: SUBSCRIBE/PSUBSCRIBE (and, on a standalone server, SSUBSCRIBE) share one dedicated
connection (the classic link), opened on a cluster at the primary of its first channel's
slot, as redis-py's ClusterPubSub does; the cluster bus carries PUBLISH to all nodes.
SSUBSCRIBE on a cluster goes to the primary owning each channel's slot, one connection per
node. A lost connection is reopened and its subscriptions replayed; a shard channel the
server drops (``MOVED``, or an unasked ``sunsubscribe`` after resharding or failover) is
re-subscribed at its slot's owner now. Sends and connection changes take the lock, reads
take none. The registries and message dicts are :mod:`smartcache._pubsub_messages`'s.

What differs by world is left to the subclass in each world's ``_pubsub.py``: how a
dedicated connection is opened (``_open``), how the next reply is read (``_next_reply``:
one queue fed by every connection's push handler in asyncio, ``poll`` over the connections
in sync), and the API only one world has (asyncio's ``run`` and ``aclose``, sync's
``run_in_thread`` and ``subscribed_event``). Never uses a node's shared, auto-pipelined
connection; starts no task, no thread.

Generated from ``smartcache/asyncio/_pubsub_base.py`` by ``scripts/unasync.py``: edit that file.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from threading import Lock
from typing import TYPE_CHECKING, Any, Final, Protocol, Self

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

    from smartcache.sync._cluster import ClusterRouter
    from smartcache.sync._connection import Connection
    from smartcache.sync._pool import ConnectionPool

__all__ = ["LOST", "NET_ERRORS", "BasePubSub", "Link", "PubSubClient"]

NET_ERRORS: Final = (rx.ConnectionError, rx.TimeoutError, OSError)
#: the reply ``_next_reply`` gives for a lost link (with no link: nothing read, look again)
LOST: Final = object()
_CLASSIC: Final = ("SUBSCRIBE", "PSUBSCRIBE")


class PubSubClient(Protocol):
    """What a pub/sub needs of its client: a Protocol, so this module does not import the
    client's, which imports this one."""

    _router: ClusterRouter | None

    def get_encoder(self) -> Encoder: ...
    def _ensure_ready(self) -> None: ...


class Link:
    """One dedicated connection of a pub/sub, and the pool it is given back to (if any)."""

    __slots__ = ("conn", "pool", "retired", "shard")

    def __init__(self, pool: ConnectionPool | None, conn: Connection, shard: bool) -> None:
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
            if self.pool is not None:
                self.pool.release(self.conn)

    def close(self) -> None:
        """:meth:`retire`, once the socket is really closed."""
        if not self.retired:
            self.retired = True  # from now on its loss is ours, not news
            try:
                self.conn.close()
            finally:
                if self.pool is not None:
                    self.pool.release(self.conn)


class BasePubSub(Subscriptions):
    """Publish/subscribe with redis-py's ``PubSub`` API, less what only one world has.

    Messages are dicts ``{'type', 'pattern', 'channel', 'data'}``; a channel or pattern
    subscribed with a handler (``subscribe(news=handler)``) calls the handler instead.
    """

    def __init__(
        self,
        client: PubSubClient,
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
        self._lock = Lock()  # sends and connection changes; reads take none
        self._classic: Link | None = None
        self._shard_links: dict[str, Link] = {}
        # shard channel -> the link it was subscribed on; a channel whose link is closed or
        # replaced is lost, and _heal() re-subscribes it where its slot is now
        self._shard_home: dict[Any, Link] = {}
        self._dirty = False  # a shard link or channel may need re-subscribing
        self._forget_subscriptions()
        self._setup()

    # -- what each world does its own way (see the subclasses) ------------------------------
    def _setup(self) -> None:
        """Set up the world's own state (called last by ``__init__``)."""

    def _open(self, address: str | None, *, shard: bool) -> Link:
        """A new dedicated connection to ``address`` (None: any primary), whose replies
        ``_next_reply`` will read."""
        raise NotImplementedError

    def _next_reply(self, links: list[Link], deadline: float | None) -> tuple[Link | None, Any]:
        """The next reply of one of ``links`` (``time.monotonic()`` deadline, None: no limit):
        ``(link, reply)``, ``(link, LOST)`` when that link was lost, ``(None, LOST)`` to look
        again after healing, ``(None, None)`` when ``get_message`` should return None."""
        raise NotImplementedError

    def _inbox_reset(self) -> None:
        """Drop the replies not read yet and wake the readers (all links are closing)."""

    def _subscriptions_changed(self, subscribing: bool = False) -> None:
        """Called when the registries may have changed (``subscribing``: by a subscribe)."""

    def _wait_subscribed(self, timeout: float | None) -> bool:
        """Whether to read at all (sync waits up to ``timeout`` for a subscription)."""
        return True

    def _call(self, function: Callable[..., Any], *args: Any) -> None:
        """Call a handler (awaiting what it returns, in asyncio)."""
        function(*args)

    # -- life cycle -------------------------------------------------------------------------
    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.reset()

    def reset(self) -> None:
        """Close every connection and forget all subscriptions (the object stays usable)."""
        with self._lock:
            links = {self._classic, *self._shard_links.values(), *self._shard_home.values()}
            self._classic = None
            self._shard_links, self._shard_home = {}, {}
            self._dirty = False
            self._forget_subscriptions()
            self._subscriptions_changed()
            self._inbox_reset()
            for link in links:
                if link is not None:
                    link.close()

    @property
    def subscribed(self) -> bool:
        """True while subscribed to any channel, pattern or shard channel."""
        return self._has_subscriptions

    @property
    def connection(self) -> Connection | None:
        """The connection for channels and patterns, if open."""
        return None if self._classic is None else self._classic.conn

    # -- subscribing ------------------------------------------------------------------------
    def subscribe(self, *args: Any, **kwargs: Handler) -> None:
        """Subscribe to channels; ``name=handler`` keyword arguments register handlers."""
        self._add("SUBSCRIBE", args, kwargs)

    def psubscribe(self, *args: Any, **kwargs: Handler) -> None:
        """Subscribe to channel patterns; ``pattern=handler`` registers a handler."""
        self._add("PSUBSCRIBE", args, kwargs)

    def ssubscribe(self, *args: Any, target_node: Any = None, **kwargs: Handler) -> None:
        """Subscribe to shard channels (on a cluster: at the primary owning each slot)."""
        self._add("SSUBSCRIBE", args, kwargs)

    def unsubscribe(self, *args: Any) -> None:
        """Unsubscribe from the given channels, or from all channels when none is given."""
        self._remove("UNSUBSCRIBE", args)

    def punsubscribe(self, *args: Any) -> None:
        """Unsubscribe from the given patterns, or from all patterns when none is given."""
        self._remove("PUNSUBSCRIBE", args)

    def sunsubscribe(self, *args: Any, target_node: Any = None) -> None:
        """Unsubscribe from the given shard channels, or from all of them."""
        self._remove("SUNSUBSCRIBE", args)

    def ping(self, message: Any = None) -> None:
        """Send PING on the pub/sub connection; the reply arrives as a ``pong`` message."""
        self.execute_command(*(("PING",) if message is None else ("PING", message)))

    def execute_command(self, *args: Any) -> None:
        """Send a raw command on the pub/sub connection (its reply arrives as a message)."""
        self._ready()
        with self._lock:
            self._send_classic(args)

    def _add(self, command: str, args: tuple[Any, ...], kwargs: dict[str, Handler]) -> None:
        new = parse_pubsub_subscriptions(args, kwargs)
        router = self._ready()
        with self._lock:
            if command == "SSUBSCRIBE" and router is not None:
                self._ssubscribe_at(list(new), None)
            else:
                self._send_classic((command, *new), home=next(iter(new), None))
            self._registered(command, new)
            self._subscriptions_changed(subscribing=True)

    def _remove(self, command: str, args: tuple[Any, ...]) -> None:
        names = list_or_args(args[0], args[1:]) if args else []
        router = self._ready()
        with self._lock:
            targets = self._leaving(command, names)
            if command != "SUNSUBSCRIBE" or router is None:
                self._send_classic((command, *names))
                return
            home = self._shard_home
            for address, group in group_by_slot(
                targets, lambda c: home[c].address if c in home else None, self._slot
            ):
                link = self._shard_links.get(address)
                if link is not None and link is home[group[0]] and link.alive:
                    _send(link, (command, *group))

    # -- connections (callers hold the lock) ------------------------------------------------
    def _ready(self) -> ClusterRouter | None:
        """The cluster router, or None on a standalone server (topology detected first)."""
        self._client._ensure_ready()
        return self._client._router

    def _send_classic(self, args: tuple[Any, ...], home: Any = None) -> None:
        link = self._classic_link(home)
        try:
            _send(link, args)
        except NET_ERRORS:
            _send(self._classic_link(home), args)  # reopened and replayed; once more

    def _classic_link(self, home: Any = None) -> Link:
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
            link = self._open(address, shard=False)
        except NET_ERRORS:
            if router is None:
                raise
            router.try_refresh()  # the node may be gone: try one of the current map
            link = self._open(None, shard=False)
        self._classic = link
        kinds = _CLASSIC if router is not None else (*_CLASSIC, "SSUBSCRIBE")
        for command in self._replay(kinds):
            _send(link, command)
        self._subscriptions_changed()
        return link

    def _shard_link(self, address: str) -> Link:
        link = self._shard_links.get(address)
        if link is None or not link.alive:
            if link is not None:  # replaced, not reopened: its channels are lost, for _heal()
                self._dirty = True
                link.retire()
            link = self._open(address, shard=True)
            self._shard_links[address] = link
        return link

    def _ssubscribe_at(self, channels: Iterable[Any], address: str | None) -> None:
        """SSUBSCRIBE each channel at ``address``, or at its slot's primary when None."""

        def where(channel: Any) -> str:
            return address or self._address_for_slot(self._slot(channel))

        for target, group in group_by_slot(channels, where, self._slot):
            link = self._shard_link(target)
            _send(link, ("SSUBSCRIBE", *group))
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

    def _heal(self) -> None:
        """Reopen lost connections and re-subscribe what they carried, at the owner now."""
        if not self._needs_heal():
            return
        with self._lock:
            if not self._needs_heal():
                return
            router = self._client._router
            if self.channels or self.patterns or (router is None and self.shard_channels):
                self._classic_link()  # a no-op when it is alive
            if router is None or not self._dirty:
                return
            self._dirty = False
            try:
                self._heal_shards(router)
            except BaseException:
                self._dirty = True
                raise

    def _heal_shards(self, router: ClusterRouter) -> None:
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
        router.try_refresh()  # the node may be gone or its slots moved
        self._ssubscribe_at([ch for ch in lost if ch in self.shard_channels], None)
        self._subscriptions_changed()

    # -- reading ------------------------------------------------------------------------------
    def get_message(
        self, ignore_subscribe_messages: bool = False, timeout: float | None = 0.0
    ) -> dict[str, Any] | None:
        """Return the next message, or None if none arrives within ``timeout`` seconds.

        ``timeout=None`` waits until a message arrives. A message a handler took also
        returns None.
        """
        return self._get(ignore_subscribe_messages, timeout, sharded=False)

    def get_sharded_message(
        self,
        ignore_subscribe_messages: bool = False,
        timeout: float | None = 0.0,
        target_node: Any = None,
    ) -> dict[str, Any] | None:
        """As :meth:`get_message`, reading only shard-channel connections on a cluster
        (asyncio's connections all feed one queue: there, it is :meth:`get_message`)."""
        return self._get(ignore_subscribe_messages, timeout, sharded=True)

    def listen(self) -> Iterator[dict[str, Any]]:
        """Yield messages as they arrive, while subscribed to anything."""
        while self.subscribed:
            message = self.get_message(timeout=None)
            if message is not None:
                yield message

    def _links(self, sharded: bool) -> list[Link]:
        """The links to read: all of them, or (``sharded`` on a cluster) the shard links."""
        links = list(self._shard_links.values())
        classic = self._classic
        if classic is not None and not (sharded and self._client._router is not None):
            links.append(classic)
        return links

    def _get(self, ignore: bool, timeout: float | None, *, sharded: bool) -> dict[str, Any] | None:
        start = time.monotonic()
        if not self._wait_subscribed(timeout):
            return None
        deadline = None if timeout is None else start + timeout
        while True:
            self._heal()
            link, reply = self._next_reply(self._links(sharded), deadline)
            if reply is LOST:
                if link is not None:
                    self._dirty |= link.shard  # the classic link is checked by _heal() anyway
                continue
            if link is None:
                return None
            consumed, message = self._on_reply(link, reply, ignore)
            if consumed:
                return message

    def _on_reply(self, link: Link, reply: Any, ignore: bool) -> tuple[bool, dict[str, Any] | None]:
        """Handle one reply; ``(False, None)`` when it was ours alone (a redirect, an OK)."""
        if isinstance(reply, rx.RedisError):
            redirect = resolve_redirect(reply, link.conn.address)
            if redirect is None or not link.shard:
                raise reply
            target = redirect.address
            with self._lock:
                moved = [c for c, home in self._shard_home.items() if home is link]
                moved = [c for c in moved if self._slot(c) == redirect.slot]
                if redirect.kind == "ASK":
                    _send(self._shard_link(target), ("ASKING",))
                self._ssubscribe_at(moved, target)
                self._drop_if_idle(link)
            return False, None
        if link.shard:
            if not isinstance(reply, list):
                return False, None  # the +OK of an ASKING
            if str_if_bytes(reply[0]) == "sunsubscribe":
                with self._lock:
                    self._on_sunsubscribe(link, reply[1])
        if self.push_handler_func is not None and type(reply) is hiredis.PushNotification:
            self._call(self.push_handler_func, reply)
            return True, None
        return True, self.handle_message(reply, ignore)

    def _on_sunsubscribe(self, link: Link, channel: Any) -> None:
        if self._shard_home.get(channel) is link:
            del self._shard_home[channel]  # if unasked, the slot moved: _heal() follows it
            self._dirty = True
        self._drop_if_idle(link)

    def _drop_if_idle(self, link: Link) -> None:
        """Close a shard link that no longer carries any of our channels."""
        if not any(home is link for home in self._shard_home.values()):
            if self._shard_links.get(link.address) is link:
                del self._shard_links[link.address]
            link.retire()

    def handle_message(
        self, response: Any, ignore_subscribe_messages: bool = False
    ) -> dict[str, Any] | None:
        """Turn a raw pub/sub reply into a message dict, or call its handler (redis-py's)."""
        if response is None:
            return None
        with self._lock:
            message, handler = self._read(response, ignore_subscribe_messages)
            self._subscriptions_changed()
        if handler and message is not None:
            self._call(handler, message)
            return None
        return message


def _send(link: Link, command: tuple[Any, ...]) -> None:
    """Send on ``link``, which must be alive: a lost one is replaced, never silently reopened."""
    if not link.alive:
        raise SmartConnectionError(
            f"pub/sub connection to {link.address} was lost", node=link.address
        )
    link.conn.send(*command)
