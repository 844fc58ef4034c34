"""Where reads land on a cluster with replicas, counted by the servers themselves.

The single-key fast path (a plain ``client.get``) and the general path (the same GET with
an option, ``target_nodes=None``, which skips the fast path) must reach the same node
kind: a replica under ``read_from="replica"``/``"replica_preferred"``/
``read_from_replicas=True``, the primary by default. ``INFO commandstats`` on every node
says where each GET was executed.
"""

from __future__ import annotations

from typing import Any

import pytest

from smartcache import key_slot
from smartcache.testing import Cluster, ServerProcess

GETS = 300


def _get_calls(proc: ServerProcess) -> int:
    with proc.client() as r:
        stats = r.info("commandstats").get("cmdstat_get")
    return int(stats["calls"]) if stats else 0


def _count(cluster: Cluster, run: Any) -> tuple[int, int]:
    """GETs executed by primaries and by replicas while ``run()`` ran."""
    before = {p.address: _get_calls(p) for p in cluster.processes}
    run()
    after = {p.address: _get_calls(p) for p in cluster.processes}
    primaries = {p.address for p in cluster.primaries()}
    on_primaries = sum(after[a] - before[a] for a in after if a in primaries)
    on_replicas = sum(after[a] - before[a] for a in after if a not in primaries)
    return on_primaries, on_replicas


@pytest.mark.parametrize(
    ("options", "to_replicas"),
    [
        ({}, False),
        ({"read_from": "primary"}, False),
        ({"read_from": "replica"}, True),
        ({"read_from": "replica_preferred"}, True),
        ({"read_from_replicas": True}, True),  # redis-py RedisCluster's spelling
    ],
    ids=["default", "primary", "replica", "replica_preferred", "read_from_replicas"],
)
def test_fast_and_general_paths_read_from_the_same_node_kind(
    redis_cluster: Cluster, client_factory: Any, options: dict[str, Any], to_replicas: bool
) -> None:
    assert redis_cluster.replicas(), "the session cluster has replicas"
    client = client_factory(startup_nodes=redis_cluster.startup_nodes, **options)
    key = f"replica-reads:{client_factory.kind}:{'-'.join(map(str, options.values()))}"
    client.set(key, "v")
    replica = redis_cluster.replicas_of(redis_cluster.primary_of_slot(key_slot(key)))[0]
    with replica.client() as r:
        r.execute_command("READONLY")
        replica.wait_for(lambda: r.get(key) == b"v", 10, what="replicate the key")

    def fast() -> None:
        for _ in range(GETS):
            assert client.get(key) == b"v"

    def general() -> None:
        for _ in range(GETS):
            # Any option sends a command down the general path, which routes it afresh.
            assert client.execute_command("GET", key, target_nodes=None) == b"v"

    expected = (0, GETS) if to_replicas else (GETS, 0)
    assert _count(redis_cluster, general) == expected
    assert _count(redis_cluster, fast) == expected
