"""Commands answered by several cluster nodes, on both clients.

- SLOWLOG GET asks every node (its COMMAND DOCS tip); with ``decode_responses=True`` redis-py
  reads the entries undecoded (``NEVER_DECODE``) and its parser joins bytes: the fan-out
  must read them undecoded too (it raised TypeError).
- Nodes the caller names (``target_node="primaries"``, ``target_nodes=[...]``) answer a dict
  ``'host:port' -> reply`` as RedisCluster does (CLUSTER MYID returned one node's id), except
  the commands RedisCluster itself merges (DBSIZE, PING...); broadcasts nobody targeted
  keep redis.Redis's single reply.
- CLUSTER MYSHARDID with ``decode_responses=True`` returns the shard id as str.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import pytest
import redis.exceptions as rx

from smartcache.testing import Cluster


@contextlib.contextmanager
def _slow_log_entry(cluster: Cluster) -> Iterator[None]:
    """One ``ECHO slow`` entry in every primary's slow log; the threshold restored after."""
    admins = [proc.client() for proc in cluster.primaries()]
    try:
        for admin in admins:
            admin.slowlog_reset()
            admin.config_set("slowlog-log-slower-than", 0)
            admin.echo("slow")
            admin.config_set("slowlog-log-slower-than", 10000)
        yield
    finally:
        for admin in admins:
            admin.config_set("slowlog-log-slower-than", 10000)
            admin.slowlog_reset()
            admin.close()


@pytest.mark.parametrize("protocol", [2, 3])
def test_slowlog_get_with_decode_responses(
    redis_cluster: Cluster, client_factory: Any, protocol: int
) -> None:
    client = client_factory(
        startup_nodes=redis_cluster.startup_nodes, decode_responses=True, protocol=protocol
    )
    with _slow_log_entry(redis_cluster):
        entries = client.slowlog_get()
    echoes = [entry for entry in entries if entry["command"] == b"ECHO slow"]
    assert len(echoes) == len(redis_cluster.primaries()), entries  # every node's entry
    assert all(isinstance(entry["client_address"], bytes) for entry in echoes)
    # the client itself still decodes
    assert client.echo("after") == "after"


def test_nodes_named_by_the_caller_answer_by_node(
    redis_cluster: Cluster, client_factory: Any
) -> None:
    client = client_factory(startup_nodes=redis_cluster.startup_nodes, decode_responses=True)
    primaries = {proc.address: proc for proc in redis_cluster.primaries()}
    ids = client.cluster_myid("primaries")
    assert ids == {address: redis_cluster.node_id(proc) for address, proc in primaries.items()}
    links = client.cluster_links("primaries")
    assert set(links) == set(primaries) and all(isinstance(v, list) for v in links.values())
    info = client.info("server", target_nodes=client.get_primaries())
    assert set(info) == set(primaries) and all("redis_version" in v for v in info.values())
    # one named node: its bare reply, as RedisCluster answers
    first = client.get_primaries()[0]
    assert client.cluster_myid(first) == redis_cluster.node_id(primaries[first.name])
    # commands RedisCluster merges stay merged
    assert client.ping(target_nodes="all") is True
    assert isinstance(client.dbsize(target_nodes="primaries"), int)
    # broadcasts nobody targeted keep redis.Redis's shape
    assert isinstance(client.dbsize(), int)
    assert isinstance(client.slowlog_len(), int)


def test_cluster_myshardid_is_str_with_decode_responses(
    redis_cluster: Cluster, client_factory: Any
) -> None:
    client = client_factory(startup_nodes=redis_cluster.startup_nodes, decode_responses=True)
    try:
        shard = client.cluster_myshardid()
    except rx.ResponseError as exc:  # Redis < 7.2
        pytest.skip(f"the server lacks CLUSTER MYSHARDID: {exc}")
    assert isinstance(shard, str) and len(shard) == 40
    by_node = client.cluster_myshardid(target_nodes="primaries")
    assert {proc.address for proc in redis_cluster.primaries()} == set(by_node)
    assert all(isinstance(v, str) for v in by_node.values())
