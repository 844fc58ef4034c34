"""The launcher's topologies are real, ready when they say so, and their faults are real."""

from __future__ import annotations

import os

import pytest
import redis
from redis.cluster import ClusterNode, RedisCluster

from smartcache import ConfigurationError, TopologyNotReadyError, key_slot
from smartcache.testing import Cluster, SentinelGroup, Standalone, live_pids
from smartcache.testing._ports import BUS_OFFSET, ephemeral_range
from smartcache.testing.pytest_plugin import TopologyFactory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); read its state
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(")")[-1].split()[0] != "Z"


def test_standalone_serves_and_sits_below_ephemeral_range(redis_standalone: Standalone) -> None:
    low, _ = ephemeral_range()
    assert redis_standalone.port < low
    with redis.Redis.from_url(redis_standalone.url) as c:
        c.set("launcher:probe", "1")
        assert c.get("launcher:probe") == b"1"
        assert c.info("server")["tcp_port"] == redis_standalone.port


def test_cluster_is_ready_when_started(redis_cluster: Cluster) -> None:
    low, _ = ephemeral_range()
    assert len(redis_cluster.processes) == 6
    assert all(p.port + BUS_OFFSET < low for p in redis_cluster.processes)
    primaries = redis_cluster.primaries()
    assert len(primaries) == 3
    covered = sorted(s for p in primaries for s in redis_cluster.slots_of(p))
    assert covered == list(range(16384))
    for proc in redis_cluster.processes:
        with proc.client(decode_responses=True) as c:
            assert "cluster_state:ok" in c.execute_command("CLUSTER", "INFO")
    for primary in primaries:
        (replica,) = redis_cluster.replicas_of(primary)
        with replica.client(decode_responses=True) as c:
            assert c.info("replication")["master_link_status"] == "up"


def test_sentinel_group_is_ready(redis_sentinel: SentinelGroup) -> None:
    assert len(redis_sentinel.sentinels) == 3
    assert len(redis_sentinel.data_nodes) == 3
    primary = redis_sentinel.primary()
    with primary.client(decode_responses=True) as c:
        assert c.execute_command("ROLE")[0] == "master"
        assert c.info("replication")["connected_slaves"] == 2
    for s in redis_sentinel.sentinels:
        with s.client(decode_responses=True) as c:
            assert len(c.execute_command("SENTINEL", "SENTINELS", "mymaster")) == 2
    assert redis_sentinel.url.startswith("redis+sentinel://")


def test_standalone_kill_pause_resume_restart(redis_topologies: TopologyFactory) -> None:
    server = redis_topologies.standalone()
    pid = server.server.pid
    assert pid is not None
    server.pause()
    with pytest.raises(redis.TimeoutError), server.server.client(socket_timeout=0.3) as c:
        c.ping()
    server.resume()
    with server.server.client() as c:
        assert c.ping()
    server.kill()
    assert not _alive(pid)
    with pytest.raises(redis.ConnectionError), server.server.client() as c:
        c.ping()
    port = server.port
    server.restart()
    assert server.port == port and server.server.pid != pid
    with server.server.client() as c:
        assert c.ping()


def test_cluster_migrates_slots_with_keys_and_fails_over(redis_topologies: TopologyFactory) -> None:
    cluster = redis_topologies.cluster(primaries=3, replicas=1, node_timeout_ms=1000)
    source, target, _ = cluster.primaries()
    moving = cluster.slots_of(source)[:50]
    keys = [f"mig:{i}" for i in range(100_000)]
    keys = [k for k in keys if key_slot(k) in moving][:300]
    assert len(keys) > 100
    nodes = [ClusterNode(h, p) for h, p in cluster.startup_nodes]
    rc = RedisCluster(startup_nodes=nodes)
    try:
        for k in keys:
            rc.set(k, k)
        moved = cluster.migrate_slots(source, target, slots=moving, batch=7)
        assert moved == moving
        assert set(moving) <= set(cluster.slots_of(target))
        assert not set(moving) & set(cluster.slots_of(source))
        with target.client() as c:
            assert sum(c.execute_command("CLUSTER", "COUNTKEYSINSLOT", s) for s in moving) == len(
                keys
            )
        with source.client() as c:
            assert c.dbsize() == sum(1 for _ in c.scan_iter(count=1000))
            assert all(c.execute_command("CLUSTER", "COUNTKEYSINSLOT", s) == 0 for s in moving)

        (replica,) = cluster.replicas_of(target)
        cluster.kill(target)
        promoted = cluster.wait_for_failover(target)
        assert promoted is replica
        assert set(moving) <= set(cluster.slots_of(promoted))
        cluster.restart(target)
        assert target in cluster.replicas_of(promoted)
    finally:
        rc.close()


def test_sentinel_forced_failover_and_kill(redis_topologies: TopologyFactory) -> None:
    group = redis_topologies.sentinel()
    old = group.primary()
    new = group.failover()
    assert new is not old and new in group.data_nodes
    with new.client(decode_responses=True) as c:
        assert c.execute_command("ROLE")[0] == "master"
    group.kill(new)
    newer = group.wait_for_failover(new)
    assert newer is not new


def test_not_ready_raises_with_log_and_leaves_nothing(redis_server_binary: object) -> None:
    before = set(live_pids())
    cluster = Cluster(
        primaries=1,
        replicas=0,
        binary=redis_server_binary,  # type: ignore[arg-type]
        extra_settings={"no-such-option": "yes"},
    )
    with pytest.raises(TopologyNotReadyError) as err:
        cluster.start()
    assert "no-such-option" in err.value.log_tail
    assert "last log lines" in str(err.value)
    assert set(live_pids()) == before


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ConfigurationError, match="primaries >= 1"):
        Cluster(primaries=0)
    with pytest.raises(ConfigurationError, match="one word"):
        SentinelGroup(service_name="my master")


def test_migrate_needs_a_count(redis_cluster: Cluster) -> None:
    a, b, _ = redis_cluster.primaries()
    with pytest.raises(ConfigurationError, match="count= or slots="):
        redis_cluster.migrate_slots(a, b)


def test_sigterm_is_not_needed_for_pause_cleanup(redis_topologies: TopologyFactory) -> None:
    # A paused (SIGSTOPped) node is still stopped by PID at teardown.
    server = redis_topologies.standalone()
    pid = server.server.pid
    assert pid is not None
    server.pause()
    redis_topologies.stop_all()
    assert not _alive(pid)
