"""What a command sent to several nodes answers: one merged reply, or one reply per node.

redis-py's ``RedisCluster`` answers a command it sent to several nodes with a dict
``'host:port' -> reply``, unless one of its result callbacks (``RESULT_CALLBACKS``: DBSIZE,
KEYS, PING, SCRIPT LOAD...) merges that command's replies. smartcache merges by the
server's response policy instead (one reply shaped like ``redis.Redis``'s), except where the
caller named the nodes itself (``target_nodes=``, a node flag such as ``"primaries"``): code
that names nodes is RedisCluster code and expects its dict.

The router returns such replies as :class:`NodeReplies`, so the client parses each node's
reply with the command's response callback (:func:`parse_each`), as RedisCluster does.

Pure: never does I/O; never imports socket, ssl, asyncio, threading or time.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

from smartcache.core.commands import CommandSpec, ResponsePolicy, merge_replies

__all__ = [
    "FinishedByCallback",
    "NodeReplies",
    "answers_by_node",
    "default_node_reply",
    "fan_out_reply",
    "parse_each",
    "result_callback",
    "unfinished",
]


class NodeReplies(dict[str, Any]):
    """One reply per node, by ``'host:port'``: a by-node fan-out's answer before parsing."""


class FinishedByCallback(dict[str, Any]):
    """The default node's reply, by ``'host:port'``, that a result callback of RedisCluster
    finishes once parsed (:func:`default_node_reply`)."""

    __slots__ = ("finish", "name")

    def __init__(self, replies: Mapping[str, Any], name: str, finish: Callable[..., Any]) -> None:
        super().__init__(replies)
        self.name = name
        self.finish = finish


def _redis_py_name(spec: CommandSpec | None, args: Sequence[Any]) -> str:
    """The name redis-py's cluster tables use: ``"CONFIG SET"``, ``"DBSIZE"``."""
    if spec is not None:
        return spec.name.replace("|", " ").upper()
    first = args[0]
    return (first.decode(errors="replace") if isinstance(first, bytes) else str(first)).upper()


#: commands whose replies smartcache merges its own way even where RedisCluster has a
#: result callback: SCAN keeps redis.Redis's int cursor (smartcache.core.scan)
_OWN_MERGE = frozenset({"SCAN"})

Finish = tuple[str, Callable[..., Any]]


def result_callback(
    spec: CommandSpec | None,
    args: Sequence[Any],
    result_callbacks: Mapping[str, Callable[..., Any]],
) -> Finish | None:
    """``(redis-py name, callback)`` when RedisCluster finishes this command's replies with
    one of its ``result_callbacks`` (CLIENT UNBLOCK, CONFIG REWRITE, DBSIZE, PING...), else
    None. The callbacks are the installed redis-py's, so the behaviour follows its release."""
    name = _redis_py_name(spec, args)
    finish = result_callbacks.get(name)
    if finish is None or name in _OWN_MERGE:
        return None
    return name, finish


def default_node_reply(reply: Any, address: str, finish: Finish | None) -> Any:
    """The answer to a keyless command the default node served, as RedisCluster gives it:
    finished by its result callback over ``{address: parsed reply}`` (``0`` where
    redis.Redis says ``False``, ``True`` where it says ``'OK'``), else ``reply`` itself."""
    if finish is None:
        return reply
    return FinishedByCallback({address: reply}, *finish)


def answers_by_node(spec: CommandSpec | None, args: Sequence[Any], merged: Collection[str]) -> bool:
    """Whether a command sent to nodes the caller named answers a reply per node: yes,
    unless its redis-py name is in ``merged`` (the commands RedisCluster merges)."""
    return _redis_py_name(spec, args) not in merged


def fan_out_reply(
    name: str,
    policy: ResponsePolicy,
    addresses: Sequence[str],
    replies: Sequence[object],
    *,
    by_node: bool,
    finish: Finish | None = None,
) -> object:
    """The answer to a command sent to ``addresses`` (replies in the same order; error
    replies as exception instances).

    ``finish`` (:func:`result_callback`, unless ``by_node``): RedisCluster's result
    callback finishes the parsed replies (:class:`FinishedByCallback`). One node: its
    reply. ``by_node``: :class:`NodeReplies` (the first error raised, as
    RedisCluster raises the first failing node's error). Otherwise the replies merged by
    ``policy`` (:func:`~smartcache.core.commands.merge_replies`); a SPECIAL policy (INFO...)
    answers the first node's reply, RANDOMKEY a key of a non-empty node.
    """
    if len(replies) != len(addresses):
        raise ValueError(f"{name}: {len(replies)} replies for {len(addresses)} nodes")
    if finish is not None and not by_node:
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return FinishedByCallback(dict(zip(addresses, replies, strict=True)), *finish)
    if len(replies) == 1 or by_node:
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        if len(replies) == 1:
            return replies[0]
        return NodeReplies(zip(addresses, replies, strict=True))
    merged = merge_replies(policy, replies, name)
    if policy is ResponsePolicy.SPECIAL and name.upper() != "RANDOMKEY":
        return replies[0]
    return merged


def parse_each(reply: Any, callback: Callable[..., Any] | None, options: Mapping[str, Any]) -> Any:
    """``callback(reply, **options)`` (``reply`` itself without a callback); for
    :class:`NodeReplies`, a plain dict of every node's reply parsed so."""
    kind = type(reply)
    if kind is NodeReplies or kind is FinishedByCallback:
        if callback is None:
            parsed = dict(reply)
        else:
            parsed = {node: callback(value, **options) for node, value in reply.items()}
        if kind is FinishedByCallback:
            return reply.finish(reply.name, parsed, **options)
        return parsed
    return reply if callback is None else callback(reply, **options)


def unfinished(reply: Any) -> Any:
    """``reply``, or the one node reply inside a :class:`FinishedByCallback`: for pipelines,
    whose replies RedisCluster's pipeline does not finish with result callbacks."""
    if type(reply) is FinishedByCallback:
        return next(iter(reply.values()))
    return reply
