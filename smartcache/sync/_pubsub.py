"""Pub/sub for SmartClient: redis-py's ``PubSub`` API over dedicated connections.

Routing: SUBSCRIBE/PSUBSCRIBE (and, on a standalone server, SSUBSCRIBE) share one dedicated
connection; on a cluster it goes to any node, since the cluster bus carries PUBLISH to all.
SSUBSCRIBE on a cluster goes to the primary owning each channel's slot, one connection per
node. A connection that is lost is reopened and its subscriptions replayed; a shard channel
the server drops (``MOVED``, or an unasked ``sunsubscribe`` after resharding or failover) is
re-subscribed on its owner now. Replies are read with ``Connection.read_next``, so RESP2
arrays and RESP3 push messages arrive as the same lists and are handled alike.
Reads are not locked (one reader at a time, as in redis-py); sends and state changes are.
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import hiredis
import redis.exceptions as rx
from redis.client import PubSubWorkerThread
from redis.commands.helpers import list_or_args, parse_pubsub_subscriptions
from redis.utils import str_if_bytes

from smartcache._pubsub_messages import Handler, Subscriptions, group_by_slot
from smartcache.core.redirect import resolve_redirect

if TYPE_CHECKING:
    from types import TracebackType

    from redis._parsers.encoders import Encoder

    from smartcache.sync._connection import Connection

__all__ = ["PubSub"]

_LOST = (rx.ConnectionError, rx.TimeoutError, OSError)


class _Client(Protocol):
    """What a pub/sub needs of its client (``SmartClient``): a Protocol, so this module
    does not import the client's, which imports this one."""

    @property
    def is_cluster(self) -> bool: ...
    def get_encoder(self) -> Encoder: ...
    def _address_for_slot(self, slot: int) -> str: ...
    def _new_dedicated_connection(self, address: str | None = None) -> Connection: ...
    def _try_refresh(self) -> None: ...


class PubSub(Subscriptions):
    """Publish/subscribe on a SmartClient, with redis-py's ``PubSub`` API and messages.

    Messages are dicts ``{'type', 'pattern', 'channel', 'data'}``; a channel or pattern
    subscribed with a handler (``subscribe(news=handler)``) calls the handler instead.
    ``get_message`` reads every connection (classic and sharded);
    ``get_sharded_message`` only the shard-channel connections of a cluster.
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
        self._cluster = client.is_cluster
        self.ignore_subscribe_messages = ignore_subscribe_messages
        self.encoder = encoder if encoder is not None else client.get_encoder()
        self.push_handler_func = push_handler_func
        #: the connection for channels and patterns (and shard channels when standalone)
        self.connection: Connection | None = None
        self.subscribed_event = threading.Event()
        self._lock = threading.RLock()
        self._shard_conns: dict[str, Connection] = {}
        # shard channel -> the connection it was subscribed on; a channel whose connection
        # is closed or replaced is lost, and _heal() re-subscribes it where its slot is now
        self._shard_home: dict[Any, Connection] = {}
        self._dirty = False  # a shard connection or channel may need re-subscribing
        self._turn = 0
        self.reset()

    def __enter__(self) -> PubSub:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.reset()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # e.g. at interpreter shutdown
            self.reset()

    def reset(self) -> None:
        """Close every connection and forget all subscriptions."""
        with self._lock:
            conns = [self.connection, *self._shard_conns.values()]
            self.connection = None
            self._shard_conns = {}
            self._shard_home = {}
            for conn in conns:
                if conn is not None:
                    conn.close()
            self._forget_subscriptions()
            self.subscribed_event.clear()

    def close(self) -> None:
        """Same as :meth:`reset`."""
        self.reset()

    @property
    def subscribed(self) -> bool:
        """True while subscribed to any channel, pattern or shard channel."""
        return self.subscribed_event.is_set()

    # -- subscribing ------------------------------------------------------------------
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
        with self._lock:
            self._send_classic(("PING",) if message is None else ("PING", message))

    def execute_command(self, *args: Any) -> None:
        """Send a raw command on the pub/sub connection (its reply arrives as a message)."""
        with self._lock:
            self._send_classic(args)

    def _add(self, command: str, args: tuple[Any, ...], kwargs: dict[str, Handler]) -> None:
        new = parse_pubsub_subscriptions(args, kwargs)
        with self._lock:
            if command == "SSUBSCRIBE" and self._cluster:
                self._ssubscribe_at(list(new), None)
            else:
                self._send_classic((command, *new), home=next(iter(new), None))
            self._registered(command, new)
            self.subscribed_event.set()

    def _remove(self, command: str, args: tuple[Any, ...]) -> None:
        names = list_or_args(args[0], args[1:]) if args else []
        with self._lock:
            targets = self._leaving(command, names)
            if command != "SUNSUBSCRIBE" or not self._cluster:
                self._send_classic((command, *names))
                return
            home = self._shard_home
            for address, group in group_by_slot(
                targets, lambda c: home[c].address if c in home else None, self._slot
            ):
                conn = self._shard_conns.get(address)
                if conn is not None and conn is home[group[0]] and conn.is_connected:
                    conn.send_command(command, *group)

    # -- connections ------------------------------------------------------------------
    def _send_classic(self, args: tuple[Any, ...], home: Any = None) -> None:
        conn = self._classic(home)
        try:
            conn.send_command(*args)
        except _LOST:
            self._classic(home).send_command(*args)  # reconnected and replayed; one more try

    def _classic(self, home: Any = None) -> Connection:
        """The classic connection, (re)opened with its subscriptions replayed if needed.

        On a cluster it opens at the primary of ``home``'s slot (the first channel
        subscribed), as redis-py's ClusterPubSub does, so ``publish()`` to that channel,
        which goes to the same node, counts this subscriber.
        """
        conn = self.connection
        if conn is not None and conn.is_connected:
            return conn
        self.connection = None
        address = None
        if self._cluster and home is not None:
            address = self._client._address_for_slot(self._slot(home))
        conn = self._client._new_dedicated_connection(address)
        conn.connect()
        self.connection = conn
        kinds = (
            ("SUBSCRIBE", "PSUBSCRIBE")
            if self._cluster
            else ("SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE")
        )
        commands = self._replay(kinds)
        if commands:
            conn.send_many(commands)
        self._update_subscribed()
        return conn

    def _shard_conn(self, address: str) -> Connection:
        conn = self._shard_conns.get(address)
        if conn is None or not conn.is_connected:
            # A closed one is replaced, not reopened: its channels are then lost, for _heal().
            self._dirty |= conn is not None
            conn = self._client._new_dedicated_connection(address)
            conn.connect()
            self._shard_conns[address] = conn
        return conn

    def _ssubscribe_at(self, channels: Iterable[Any], address: str | None) -> None:
        """SSUBSCRIBE each channel at ``address``, or at its slot's primary when None."""

        def where(channel: Any) -> str:
            return address or self._client._address_for_slot(self._slot(channel))

        for target, group in group_by_slot(channels, where, self._slot):
            conn = self._shard_conn(target)
            conn.send_command("SSUBSCRIBE", *group)
            for channel in self._normalize_keys(dict.fromkeys(group)):
                self._shard_home[channel] = conn

    def _heal(self) -> None:
        """Reopen lost connections and re-subscribe what they carried, at the owner now."""
        with self._lock:
            if (self.channels or self.patterns or (self.shard_channels and not self._cluster)) and (
                self.connection is None or not self.connection.is_connected
            ):
                self._classic()
            if not self._cluster or not self._dirty:
                return
            self._dirty = False
            try:
                self._heal_shards()
            except BaseException:
                self._dirty = True
                raise

    def _heal_shards(self) -> None:
        """Re-subscribe shard channels whose connection died or that the server dropped."""
        conns = self._shard_conns
        for address, conn in list(conns.items()):
            if not conn.is_connected:
                del conns[address]
        lost = [
            ch
            for ch, conn in self._shard_home.items()
            if conns.get(conn.address) is not conn or not conn.is_connected
        ]
        lost += [ch for ch in self.shard_channels if ch not in self._shard_home]
        if not lost:
            return
        for channel in lost:
            self._shard_home.pop(channel, None)
            if channel in self.pending_unsubscribe_shard_channels:
                self.pending_unsubscribe_shard_channels.discard(channel)
                self.shard_channels.pop(channel, None)
        self._client._try_refresh()  # the node may be gone or its slots moved
        self._ssubscribe_at([ch for ch in lost if ch in self.shard_channels], None)
        self._update_subscribed()

    # -- reading ----------------------------------------------------------------------
    def get_message(
        self, ignore_subscribe_messages: bool = False, timeout: float | None = 0.0
    ) -> dict[str, Any] | None:
        """Return the next message, or None if none arrives within ``timeout`` seconds.

        ``timeout=None`` waits until a message arrives.
        """
        return self._get(ignore_subscribe_messages, timeout, sharded=False)

    def get_sharded_message(
        self,
        ignore_subscribe_messages: bool = False,
        timeout: float | None = 0.0,
        target_node: Any = None,
    ) -> dict[str, Any] | None:
        """As :meth:`get_message`, reading only shard-channel connections on a cluster."""
        return self._get(ignore_subscribe_messages, timeout, sharded=self._cluster)

    def listen(self) -> Iterator[dict[str, Any]]:
        """Yield messages as they arrive, while subscribed to anything."""
        while self.subscribed:
            message = self._get(False, None, sharded=False)
            if message is not None:
                yield message

    def _get(self, ignore: bool, timeout: float | None, *, sharded: bool) -> dict[str, Any] | None:
        start = time.monotonic()
        if not self.subscribed and not self.subscribed_event.wait(timeout):
            return None
        deadline = None if timeout is None else start + timeout
        while True:
            self._heal()
            with self._lock:
                conns = list(self._shard_conns.values())
                if not sharded and self.connection is not None:
                    conns.append(self.connection)
            if not conns:
                return None
            self._turn = turn = (self._turn + 1) % len(conns)
            conns = conns[turn:] + conns[:turn]  # take turns: a busy node must not starve others
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            for conn in _readable(conns, remaining):
                try:
                    reply = conn.read_next()
                except _LOST:
                    self._dirty = True  # the connection closed itself; _heal() reopens it
                    continue
                consumed, message = self._on_reply(conn, reply, ignore)
                if consumed:
                    return message
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _on_reply(
        self, conn: Connection, reply: Any, ignore: bool
    ) -> tuple[bool, dict[str, Any] | None]:
        """Handle one reply; ``(False, None)`` when it was ours alone (a redirect, an OK)."""
        if isinstance(reply, rx.RedisError):
            redirect = resolve_redirect(reply, conn.address)
            if redirect is None or conn is self.connection:
                raise reply
            target = redirect.address
            with self._lock:
                moved = [c for c, home in self._shard_home.items() if home is conn]
                moved = [c for c in moved if self._slot(c) == redirect.slot]
                if redirect.kind == "ASK":
                    self._shard_conn(target).send_command("ASKING")
                self._ssubscribe_at(moved, target)
                self._drop_if_idle(conn)
            return False, None
        if conn is not self.connection:
            if not isinstance(reply, list):
                return False, None  # the +OK of an ASKING
            if str_if_bytes(reply[0]) == "sunsubscribe":
                self._on_sunsubscribe(conn, reply[1])
        if self.push_handler_func is not None and type(reply) is hiredis.PushNotification:
            self.push_handler_func(reply)
            return True, None
        return True, self.handle_message(reply, ignore)

    def _on_sunsubscribe(self, conn: Connection, channel: Any) -> None:
        with self._lock:
            if self._shard_home.get(channel) is conn:
                del self._shard_home[channel]  # if unasked, the slot moved: _heal() follows it
                self._dirty = True
            self._drop_if_idle(conn)

    def _drop_if_idle(self, conn: Connection) -> None:
        """Close a shard connection that no longer carries any of our channels."""
        if not any(home is conn for home in self._shard_home.values()):
            if self._shard_conns.get(conn.address) is conn:
                del self._shard_conns[conn.address]
            conn.close()

    def handle_message(
        self, response: Any, ignore_subscribe_messages: bool = False
    ) -> dict[str, Any] | None:
        """Turn a raw pub/sub reply into a message dict, or call its handler (redis-py's)."""
        if response is None:
            return None
        with self._lock:
            message, handler = self._read(response, ignore_subscribe_messages)
            self._update_subscribed()
        if handler and message is not None:
            handler(message)
            return None
        return message

    def run_in_thread(
        self,
        sleep_time: float = 0.0,
        daemon: bool = False,
        exception_handler: Callable[..., None] | None = None,
        pubsub: PubSub | None = None,
        sharded_pubsub: bool = False,
    ) -> PubSubWorkerThread:
        """Start a thread calling handlers for every message; stop it with ``.stop()``.

        Every channel, pattern and shard channel must have a handler.
        """
        self._require_handlers()
        thread = PubSubWorkerThread(
            self if pubsub is None else pubsub,
            sleep_time,
            daemon=daemon,
            exception_handler=exception_handler,
            sharded_pubsub=sharded_pubsub,
        )
        thread.start()
        return thread

    # -- helpers ----------------------------------------------------------------------
    def _update_subscribed(self) -> None:
        if self.channels or self.patterns or self.shard_channels:
            self.subscribed_event.set()
        else:
            self.subscribed_event.clear()


def _readable(conns: list[Connection], timeout: float | None) -> list[Connection]:
    """The connections with a reply (or EOF) ready, waiting up to ``timeout`` for one."""
    ready = [c for c in conns if c.can_read(0.0)]
    if ready or timeout == 0 or not conns:
        return ready
    if len(conns) == 1:
        return conns if conns[0].can_read(86400.0 if timeout is None else timeout) else []
    poller = select.poll()
    fds = [fd for fd in (c.fileno() for c in conns) if fd >= 0]
    if not fds:
        return []
    for fd in fds:
        poller.register(fd, select.POLLIN)
    poller.poll(None if timeout is None else timeout * 1000)
    return [c for c in conns if c.can_read(0.0)]
