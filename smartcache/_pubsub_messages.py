"""What sync and async pub/sub share: the subscription registries and redis-py's messages.

:class:`Subscriptions` keeps what a pub/sub is subscribed to (name, as messages carry it ->
handler) and the names being left until the server confirms it, turns raw replies into
redis-py's message dicts, and says which handler, if any, takes a message. The shells
(:mod:`smartcache.sync._pubsub`, :mod:`smartcache.asyncio._pubsub`) send the commands, read
the replies, lock and call the handlers. No I/O here: never a socket, asyncio or threading.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Final

import redis.exceptions as rx
from redis.utils import str_if_bytes

from smartcache.core.slots import key_slot

if TYPE_CHECKING:
    from redis._parsers.encoders import Encoder

__all__ = [
    "PUBLISH_MESSAGE_TYPES",
    "UNSUBSCRIBE_MESSAGE_TYPES",
    "Handler",
    "Subscriptions",
    "group_by_slot",
    "shape_message",
]

Handler = Callable[[dict[str, Any]], Any]

PUBLISH_MESSAGE_TYPES: Final = ("message", "pmessage", "smessage")
UNSUBSCRIBE_MESSAGE_TYPES: Final = ("unsubscribe", "punsubscribe", "sunsubscribe")

# (un)subscribe command or message type -> index of its registry: channels, patterns, shards
_KIND: Final = {
    "subscribe": 0,
    "unsubscribe": 0,
    "psubscribe": 1,
    "punsubscribe": 1,
    "ssubscribe": 2,
    "sunsubscribe": 2,
}
_REPLAY: Final = ("SUBSCRIBE", "PSUBSCRIBE", "SSUBSCRIBE")


def shape_message(response: Any) -> dict[str, Any]:
    """A raw pub/sub reply as redis-py's message dict (a bare PING reply becomes ``pong``)."""
    if isinstance(response, bytes):
        response = [b"pong", response] if response != b"PONG" else [b"pong", b""]
    elif isinstance(response, str):  # RESP3 with decode_responses (redis-py mangles this)
        response = ["pong", response] if response != "PONG" else ["pong", ""]
    message_type = str_if_bytes(response[0])
    if message_type == "pmessage":
        pattern, channel, data = response[1], response[2], response[3]
    elif message_type == "pong":
        pattern, channel, data = None, None, response[1]
    else:
        pattern, channel, data = None, response[1], response[2]
    return {"type": message_type, "pattern": pattern, "channel": channel, "data": data}


def group_by_slot(
    channels: Iterable[Any], where: Callable[[Any], str | None], slot_of: Callable[[Any], int]
) -> Iterator[tuple[str, list[Any]]]:
    """Group channels by node and slot (a shard command must not span slots).

    ``where(channel)`` is the node's address, or None to leave the channel out.
    """
    groups: dict[tuple[str, int], list[Any]] = {}
    for channel in channels:
        address = where(channel)
        if address is not None:
            groups.setdefault((address, slot_of(channel)), []).append(channel)
    for (address, _slot), group in groups.items():
        yield address, group


class Subscriptions:
    """The registries of one pub/sub, as redis-py's ``PubSub`` exposes them.

    ``channels``, ``patterns`` and ``shard_channels`` map each name (``str`` when decoding
    responses, else bytes, as messages carry it) to its handler or None; a name being left
    stays there, listed in ``pending_unsubscribe_*``, until the server confirms it.
    """

    PUBLISH_MESSAGE_TYPES = PUBLISH_MESSAGE_TYPES
    UNSUBSCRIBE_MESSAGE_TYPES = UNSUBSCRIBE_MESSAGE_TYPES

    encoder: Encoder
    ignore_subscribe_messages: bool

    def _forget_subscriptions(self) -> None:
        self.channels: dict[Any, Handler | None] = {}
        self.patterns: dict[Any, Handler | None] = {}
        self.shard_channels: dict[Any, Handler | None] = {}
        self.pending_unsubscribe_channels: set[Any] = set()
        self.pending_unsubscribe_patterns: set[Any] = set()
        self.pending_unsubscribe_shard_channels: set[Any] = set()

    def _book(self, command: str) -> tuple[dict[Any, Handler | None], set[Any]]:
        """The registry and pending set a (un)subscribe command or message is about."""
        kind = _KIND[command.lower()]
        if kind == 0:
            return self.channels, self.pending_unsubscribe_channels
        if kind == 1:
            return self.patterns, self.pending_unsubscribe_patterns
        return self.shard_channels, self.pending_unsubscribe_shard_channels

    @property
    def _has_subscriptions(self) -> bool:
        return bool(self.channels or self.patterns or self.shard_channels)

    def _registered(self, command: str, new: dict[Any, Handler | None]) -> None:
        """Record names just subscribed (after sending, so a reconnect does not replay them)."""
        registry, pending = self._book(command)
        normalized = self._normalize_keys(new)
        registry.update(normalized)
        pending.difference_update(normalized)

    def _leaving(self, command: str, names: list[Any]) -> dict[Any, Any]:
        """Mark names (all of the kind when none given) as being left; returns them."""
        registry, pending = self._book(command)
        targets = self._normalize_keys(dict.fromkeys(names)) if names else dict(registry)
        pending.update(targets)
        return targets

    def _replay(self, commands: Iterable[str] = _REPLAY) -> list[tuple[Any, ...]]:
        """The commands re-subscribing everything of these kinds on a new connection.

        Names left while disconnected are dropped for good first.
        """
        replay = []
        for command in commands:
            registry, pending = self._book(command)
            for name in pending:
                registry.pop(name, None)
            pending.clear()
            if registry:
                replay.append((command, *registry))
        return replay

    def _read(self, response: Any, ignore: bool) -> tuple[dict[str, Any] | None, Handler | None]:
        """What a raw reply means: ``(message, handler)``; the handler, if any, takes it.

        Updates the registries on an unsubscribe confirmation. ``(None, None)``: an ignored
        subscribe/unsubscribe confirmation.
        """
        message = shape_message(response)
        message_type = message["type"]
        if message_type in UNSUBSCRIBE_MESSAGE_TYPES:
            registry, pending = self._book(message_type)
            if message["channel"] in pending:
                pending.discard(message["channel"])
                registry.pop(message["channel"], None)
        if message_type in PUBLISH_MESSAGE_TYPES:
            if message_type == "pmessage":
                handler = self.patterns.get(message["pattern"])
            elif message_type == "smessage":
                handler = self.shard_channels.get(message["channel"])
            else:
                handler = self.channels.get(message["channel"])
            return message, handler
        if message_type != "pong" and (ignore or self.ignore_subscribe_messages):
            return None, None
        return message, None

    def _require_handlers(self, shard_channels: bool = True) -> None:
        """Raise ``PubSubError`` unless every subscription has a handler (for workers)."""
        registries = [("Channel", self.channels), ("Pattern", self.patterns)]
        if shard_channels:
            registries.append(("Shard Channel", self.shard_channels))
        for kind, registry in registries:
            for name, handler in registry.items():
                if handler is None:
                    raise rx.PubSubError(f"{kind}: '{name}' has no handler registered")

    def _normalize_keys(self, data: dict[Any, Any]) -> dict[Any, Any]:
        """Channel names as messages carry them: ``str`` if decoding responses, else bytes."""
        encode, decode = self.encoder.encode, self.encoder.decode
        return {decode(encode(k)): v for k, v in data.items()}  # type: ignore[no-untyped-call]

    def _slot(self, channel: Any) -> int:
        return key_slot(self.encoder.encode(channel))  # type: ignore[no-untyped-call]
