"""Cluster features beyond routing: replicas, node introspection, blocking, construction."""

from __future__ import annotations

import os
import threading
import time
from typing import Any

import pytest
import redis
from redis.cluster import ClusterNode

from smartcache import ClusterUnavailableError, ConfigurationError, key_slot
from smartcache.sync.client import SmartClient
from smartcache.testing import Cluster, Standalone
from smartcache.testing.pytest_plugin import TopologyFactory


def test_node_introspection(redis_cluster: Cluster) -> None:
    with SmartClient.from_url(redis_cluster.url) as c:
        primaries = c.get_primaries()
        replicas = c.get_replicas()
        assert len(primaries) == 3 and len(replicas) == 3
        assert all(isinstance(n, ClusterNode) for n in c.get_nodes())
        assert {n.name for n in primaries} == {p.address for p in redis_cluster.primaries()}
        first = primaries[0]
        assert c.get_node(first.host, first.port).name == first.name
        assert c.get_node(node_name="127.0.0.1:1") is None
        key = "intro:key"
        owner = redis_cluster.primary_of_slot(key_slot(key))
        assert c.get_node_from_key(key).name == owner.address
        assert c.keyslot(key) == key_slot(key)
        description = c.nodes()
        assert sum(d["slots"] for d in description) == 16384
        # target_nodes= with node objects and with the RedisCluster constants
        assert c.ping(target_nodes=first) is True
        sizes = c.dbsize(target_nodes=SmartClient.PRIMARIES)
        assert isinstance(sizes, int)
        with pytest.raises(ConfigurationError, match="target_nodes"):
            c.ping(target_nodes="everywhere")


def test_reads_from_replicas(redis_cluster: Cluster) -> None:
    with SmartClient.from_url(redis_cluster.url, read_from="replica") as c:
        c.set("rr:key", "v", ex=60)
        c.wait(1, 1000, target_nodes=c.get_node_from_key("rr:key"))
        assert c.get("rr:key") == b"v"
        # The replica connection answered: its READONLY flag is set on the serving node.
        replica = c.get_node_from_key("rr:key", replica=True)
        proc = redis_cluster.node(replica.name)
        with proc.client(decode_responses=True) as admin:
            clients = admin.client_list()
        assert any("r" in entry["flags"] for entry in clients), clients
        with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
            c.lpop("rr:key")  # writes still go to the primary, errors surface
    with pytest.raises(ConfigurationError, match="read_from"):
        SmartClient.from_url(redis_cluster.url, read_from="nearest")


def test_replica_preferred_falls_back_to_primary(redis_topologies: TopologyFactory) -> None:
    cluster = redis_topologies.cluster(primaries=3, replicas=1)
    client = SmartClient(startup_nodes=cluster.startup_nodes, read_from="replica_preferred")
    client.set("rp:key", "v")
    for replica in cluster.replicas():
        cluster.kill(replica)
    assert client.get("rp:key") == b"v"
    client.close()


def test_blocking_command_outlives_socket_timeout(
    redis_cluster: Cluster, redis_standalone: Standalone
) -> None:
    for url in (redis_cluster.url, redis_standalone.url):
        with SmartClient.from_url(url, socket_timeout=0.3) as c:
            c.delete("{bl}q")

            def push_later(client: SmartClient = c) -> None:
                time.sleep(0.8)  # the point of the test: outlast the 0.3 s socket timeout
                client.rpush("{bl}q", "item")

            t = threading.Thread(target=push_later)
            t.start()
            assert c.blpop(["{bl}q"], timeout=5) == (b"{bl}q", b"item")
            t.join()


def test_periodic_refresh_sees_topology_change(
    redis_topologies: TopologyFactory, client_factory: Any
) -> None:
    """Slots migrated behind the client's back (no command meets a MOVED) show up in its
    map within the refresh interval, on both clients."""
    cluster = redis_topologies.cluster(primaries=2, replicas=0)
    client = client_factory(startup_nodes=cluster.startup_nodes, refresh_interval=0.2)
    client.ping()  # connect (AsyncSmartClient initialises on its first command)
    source, target = cluster.primaries()
    moved = cluster.migrate_slots(source, target, count=10)
    assert client._cluster is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        client.ping()  # a command lets the pending refresh run
        current = client._cluster.slot_map
        assert current is not None
        if current.primary_for_slot(moved[0]) == target.address:
            break
        time.sleep(0.05)  # waiting for a timer we configured, no event to await
    assert client._cluster.slot_map.primary_for_slot(moved[0]) == target.address


def test_uncovered_slots_give_a_clear_error_after_the_deadline(
    redis_topologies: TopologyFactory,
) -> None:
    from tenacity import stop_after_delay, wait_fixed

    from smartcache.core.retry import RetryPolicy

    cluster = redis_topologies.cluster(primaries=2, replicas=0)
    key = "uncovered:key"
    slot = key_slot(key)
    owner = cluster.primary_of_slot(slot)
    client = SmartClient(
        startup_nodes=cluster.startup_nodes,
        retry_policy=RetryPolicy(stop=stop_after_delay(1.0), wait=wait_fixed(0.1)),
    )
    with owner.client() as admin:
        admin.execute_command("CLUSTER", "DELSLOTS", slot)
    client._try_refresh()
    started = time.monotonic()
    with pytest.raises(ClusterUnavailableError) as err:
        client.get(key)
    assert 0.9 <= time.monotonic() - started < 5
    assert err.value.command == "GET"
    assert isinstance(err.value, redis.exceptions.ClusterDownError)
    client.close()


def test_constructors(redis_standalone: Standalone, redis_cluster: Cluster) -> None:
    pool = redis.ConnectionPool(
        host="127.0.0.1", port=redis_standalone.port, db=2, decode_responses=True, max_connections=5
    )
    with SmartClient(connection_pool=pool) as c:
        c.set("ctor", "x")
        assert c.get("ctor") == "x"
        assert c.connection_pool.max_connections == 5
    with redis.Redis(host="127.0.0.1", port=redis_standalone.port, db=2) as plain:
        assert plain.get("ctor") == b"x"
        plain.delete("ctor")
    pool.disconnect()
    for url in (redis_standalone.url, redis_cluster.url):
        with (
            SmartClient.from_url(url, protocol=3) as c3,
            redis.Redis.from_url(redis_standalone.url, protocol=3) as r3,
        ):
            c3.hset("{p3}h", mapping={"a": "1"})
            r3.hset("{p3}h", mapping={"a": "1"})
            assert c3.hgetall("{p3}h") == r3.hgetall("{p3}h")
            assert c3.zadd("{p3}z", {"m": 1.5}) in (0, 1)
            r3.zadd("{p3}z", {"m": 1.5})
            assert c3.zrange("{p3}z", 0, -1, withscores=True) == r3.zrange(
                "{p3}z", 0, -1, withscores=True
            )
            c3.delete("{p3}h", "{p3}z")
            r3.delete("{p3}h", "{p3}z")
    with pytest.raises(ConfigurationError, match="startup_nodes is empty"):
        SmartClient(startup_nodes=[])


def test_fork_safety(redis_cluster: Cluster, redis_standalone: Standalone) -> None:
    for url in (redis_cluster.url, redis_standalone.url):
        client = SmartClient.from_url(url)
        client.set("fork:key", "parent")
        parent_id = client.client_id() if not client.is_cluster else None
        pid = os.fork()
        if pid == 0:  # child: must not touch the parent's sockets
            code = 0
            try:
                if client.get("fork:key") != b"parent":
                    code = 3
                client.set("fork:key", "child")
                if parent_id is not None and client.client_id() == parent_id:
                    code = 4
            except BaseException:
                code = 5
            os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert client.get("fork:key") == b"child"  # parent's connections still work
        client.delete("fork:key")
        client.close()
