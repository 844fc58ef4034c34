"""What code written for redis-py's ``RedisCluster`` expects besides the commands.

``get_nodes()``, ``get_primaries()``, ``get_replicas()``, ``get_node()``,
``get_default_node()``, ``get_random_node()`` return redis-py ``ClusterNode`` objects (so
``isinstance`` checks and ``target_nodes=node`` keep working); ``nodes()`` describes the
topology as plain dicts. On a standalone server the one server is the only primary.
"""

from __future__ import annotations

import random
from typing import Any, Protocol

from redis.cluster import ClusterNode

from smartcache._slot_routing import SlotRouting
from smartcache.core.slotmap import parse_address
from smartcache.wire.settings import ConnectionSettings

__all__ = ["ClusterNodesMixin", "merged_by"]

PRIMARY, REPLICA = "primary", "replica"


class _HasSettings(Protocol):
    """A pool of either shell: what node introspection reads of it."""

    @property
    def settings(self) -> ConnectionSettings: ...


def merged_by(cluster_class: type) -> frozenset[str]:
    """The commands whose replies ``cluster_class`` (redis-py's ``RedisCluster`` or its
    asyncio twin, as installed) merges into one when they went to several nodes: the names
    of its ``RESULT_CALLBACKS`` (``"DBSIZE"``, ``"CONFIG SET"``...). Every other command
    sent to nodes the caller named answers a dict node -> reply
    (:func:`~smartcache.core.fanout.answers_by_node`)."""
    return frozenset(str(name).upper() for name in getattr(cluster_class, "RESULT_CALLBACKS", {}))


class ClusterNodesMixin:
    """Node introspection in redis-py ``RedisCluster`` style (mixed into SmartClient)."""

    PRIMARIES = "primaries"
    REPLICAS = "replicas"
    ALL_NODES = "all"
    RANDOM = "random"
    DEFAULT_NODE = "default-node"

    _cluster: SlotRouting[Any] | None

    def _single_node_pool(self) -> _HasSettings | None:
        raise NotImplementedError  # provided by SmartClient

    def _roles(self) -> list[tuple[str, str]]:
        if self._cluster is None:
            pool = self._single_node_pool()
            assert pool is not None
            return [(pool.settings.address, PRIMARY)]
        current = self._cluster.slot_map
        assert current is not None
        roles = [(address, PRIMARY) for address in current.primaries]
        for shard in current.shards:
            roles.extend((address, REPLICA) for address in shard.replicas)
        return roles

    @staticmethod
    def _node(address: str, role: str) -> ClusterNode:
        host, port = parse_address(address)
        return ClusterNode(host, port, server_type=role)  # type: ignore[no-untyped-call]

    def get_nodes(self) -> list[ClusterNode]:
        """Every node, primaries first."""
        return [self._node(a, r) for a, r in self._roles()]

    def get_primaries(self) -> list[ClusterNode]:
        """The primaries that serve slots."""
        return [self._node(a, r) for a, r in self._roles() if r == PRIMARY]

    def get_replicas(self) -> list[ClusterNode]:
        """The replicas."""
        return [self._node(a, r) for a, r in self._roles() if r == REPLICA]

    def get_node(
        self, host: str | None = None, port: int | None = None, node_name: str | None = None
    ) -> ClusterNode | None:
        """The node at ``host:port`` (or ``node_name``), or None when not in the topology."""
        name = node_name or (f"{host}:{port}" if host is not None and port is not None else None)
        for address, role in self._roles():
            if address == name:
                return self._node(address, role)
        return None

    def get_default_node(self) -> ClusterNode:
        """The node keyless commands without a routing rule of their own go to (CLIENT
        SETNAME, CONFIG GET...): a primary, kept while it serves slots (as RedisCluster's)."""
        if self._cluster is None:
            return self.get_primaries()[0]
        return self._node(self._cluster.default_address(), PRIMARY)

    def set_default_node(self, node: ClusterNode | None) -> bool:
        """Send keyless commands to ``node`` from now on (as ``RedisCluster.set_default_node``).

        False, and nothing changes, when ``node`` is None or not a primary serving slots.
        """
        if node is None or self._cluster is None:
            return False
        return self._cluster.set_default(str(node.name))

    def replace_default_node(self, target_node: ClusterNode | None = None) -> None:
        """Move the default node to ``target_node``, or to another primary chosen at random
        (as ``RedisCluster.replace_default_node``); unchanged when there is no other one."""
        if self._cluster is None:
            return
        if target_node is not None:
            self.set_default_node(target_node)
            return
        current = self._cluster.default_address()
        others = [n for n in self.get_primaries() if n.name != current]
        if others:
            self.set_default_node(random.choice(others))

    def get_random_node(self) -> ClusterNode:
        """A random node."""
        address, role = random.choice(self._roles())
        return self._node(address, role)

    def get_random_primary_node(self) -> ClusterNode:
        """A random primary (as ``RedisCluster.get_random_primary_node``)."""
        return random.choice(self.get_primaries())

    def get_node_from_key(self, key: Any, replica: bool = False) -> ClusterNode | None:
        """The primary (or a replica) serving ``key``."""
        from smartcache.core.slots import key_slot  # noqa: PLC0415 - keeps imports light

        if self._cluster is None:
            return self.get_default_node()
        current = self._cluster.slot_map
        assert current is not None
        shard = current.shard_for_slot(key_slot(key))
        if shard is None:
            return None
        if replica and shard.replicas:
            return self._node(random.choice(shard.replicas), REPLICA)
        return self._node(shard.primary, PRIMARY)

    def nodes(self) -> list[dict[str, Any]]:
        """The topology as dicts: address, role, and (on a cluster) slot ranges served."""
        out: list[dict[str, Any]] = []
        current = self._cluster.slot_map if self._cluster is not None else None
        for address, role in self._roles():
            entry: dict[str, Any] = {"address": address, "role": role}
            if current is not None:
                slots = current.slots_of(address) if role == PRIMARY else []
                entry["slots"] = len(slots)
                entry["slot_ranges"] = _ranges(slots)
            out.append(entry)
        return out


def _ranges(slots: list[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for slot in slots:
        if ranges and ranges[-1][1] == slot - 1:
            ranges[-1] = (ranges[-1][0], slot)
        else:
            ranges.append((slot, slot))
    return ranges
