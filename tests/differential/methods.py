"""Which methods redis-py has: enumerated from the installed redis-py, never hand-listed.

The universe is every public callable of the command mixins ``redis.Redis`` and
``redis.cluster.RedisCluster`` are made of: ``CoreCommands`` (and its mixins),
``RedisClusterCommands`` (the cluster-only ones), ``RedisModuleCommands`` and
``SentinelCommands``. The client classes' own plumbing (``pipeline``, ``pubsub``, ``lock``,
``transaction``, ``monitor``, ``from_url`` ...) is not a command mixin and is covered by the
hand-written drop-in tests; ``CLIENT_PLUMBING`` lists it for the report.
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import redis
from redis.commands.cluster import RedisClusterCommands
from redis.commands.core import CoreCommands
from redis.commands.redismodules import RedisModuleCommands
from redis.commands.sentinel import SentinelCommands

#: where a method comes from (the report's categories)
CORE, CLUSTER, MODULE, SENTINEL = "core", "cluster", "module", "sentinel"


@dataclasses.dataclass(frozen=True)
class Method:
    name: str
    category: str
    signature: inspect.Signature


def _public_callables(cls: type) -> dict[str, Any]:
    out = {}
    for name in dir(cls):
        if name.startswith("_"):
            continue
        attr = inspect.getattr_static(cls, name, None)
        if isinstance(attr, staticmethod | classmethod):
            attr = attr.__func__
        if inspect.isfunction(attr):
            out[name] = attr
    return out


def command_methods() -> dict[str, Method]:
    """Every public command method of redis-py's mixins, by name."""
    found: dict[str, Method] = {}
    layers = (
        (CORE, CoreCommands),
        (MODULE, RedisModuleCommands),
        (SENTINEL, SentinelCommands),
        # last: RedisClusterCommands also inherits the core and module mixins
        (CLUSTER, RedisClusterCommands),
    )
    for category, cls in layers:
        for name, func in _public_callables(cls).items():
            found.setdefault(name, Method(name, category, inspect.signature(func)))
    return dict(sorted(found.items()))


def client_plumbing() -> list[str]:
    """Public callables of ``redis.Redis`` that are no command mixin's (not enumerated)."""
    mixins = command_methods()
    return sorted(n for n in _public_callables(redis.Redis) if n not in mixins)
