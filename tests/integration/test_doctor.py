"""``smartcache doctor`` on real deployments made by the launcher, healthy and broken on
purpose: each broken thing is found, named, and given its fix; healthy settings pass.

Broken on purpose: no maxmemory, a 50 KB value, KEYS called, an uncovered slot, a slot
left migrating, a replica down, a sentinel down. Each destructive case runs on a private
topology (``redis_topologies``), never on the shared ones.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from typing import Any

import pytest

from smartcache import SmartClient
from smartcache.ops import Finding, Report, Status, diagnose
from smartcache.testing import Cluster, SentinelGroup, Standalone

pytestmark = pytest.mark.timeout(180)

GOOD = {
    "maxmemory": "64mb",
    "maxmemory-policy": "allkeys-lru",
    "appendonly": "yes",
    "aof-use-rdb-preamble": "yes",
    "lazyfree-lazy-eviction": "yes",
    "lazyfree-lazy-expire": "yes",
    "lazyfree-lazy-server-del": "yes",
}


def found(report: Report, check: str, node: str | None = None) -> list[Finding]:
    return [f for f in report.findings if f.check == check and (node is None or f.node == node)]


def one(report: Report, check: str, node: str | None = None) -> Finding:
    (finding,) = found(report, check, node)
    return finding


def test_a_well_configured_server_passes_its_configuration_checks(
    redis_topologies: Any,
) -> None:
    server: Standalone = redis_topologies.standalone(password="s3cret-pw", extra_settings=GOOD)
    report = diagnose(f"redis://:s3cret-pw@127.0.0.1:{server.port}/0")
    node = f"127.0.0.1:{server.port}"
    for check in ("config.maxmemory", "config.persistence", "config.auth", "config.lazyfree"):
        assert one(report, check, node).status is Status.PASS, one(report, check, node)
    assert one(report, "config.maxmemory", node).value == "64.0 MB, policy allkeys-lru"
    assert one(report, "commands.blocking", node).status is Status.PASS
    assert one(report, "topology.shape").status is Status.WARN  # one server: no failover
    assert "s3cret-pw" not in json.dumps(report.as_dict())  # the password never shows
    assert report.facts.target == f"redis://:***@127.0.0.1:{server.port}/0"


def test_no_maxmemory_a_big_value_keys_and_json_strings_are_found(redis_topologies: Any) -> None:
    server: Standalone = redis_topologies.standalone()
    c = SmartClient.from_url(server.url)
    try:
        for i in range(200):
            c.set(
                f"user:{i}",
                json.dumps({"id": i, "name": f"user-{i}", "email": f"u{i}@example.com", "age": 30}),
            )
        c.set("report:big", "x" * 50_000)
        c.keys("user:*")
    finally:
        c.close()
    report = diagnose(server.url)
    node = f"127.0.0.1:{server.port}"
    maxmemory = one(report, "config.maxmemory", node)
    assert maxmemory.status is Status.FAIL and maxmemory.value.startswith("0 (no limit)")
    assert "maxmemory" in maxmemory.fix
    big = one(report, "data.big_values")
    assert big.status is Status.WARN and "report:big string 49 KB" in big.value
    blocking = one(report, "commands.blocking", node)
    assert blocking.status is Status.FAIL and blocking.value == "KEYS x1"
    assert "SCAN" in blocking.fix
    as_json = one(report, "data.json_strings")
    assert as_json.value.startswith("200 sampled keys hold flat JSON objects")
    assert one(report, "keys.ttl").value == "100% of keys have no TTL"
    assert report.facts.sampled == 201 and report.facts.keys_total == 201
    assert report.exit_code() == 2


def test_the_hash_estimate_is_close_to_what_the_server_stores(redis_standalone: Any) -> None:
    """The saving the doctor promises for JSON strings is measured against real hashes."""
    from smartcache.ops._collect import _json_shape
    from smartcache.ops._facts import KeySample

    c = SmartClient.from_url(redis_standalone.url)
    try:
        obj = {
            "id": 123456,
            "name": "user-123456",
            "email": "user-123456@example.com",
            "age": 41,
            "created_at": "2026-12-06T10:00:00Z",
        }
        raw = json.dumps(obj).encode()
        c.set("doctor:json", raw)
        c.hset("doctor:hash", mapping={k: str(v) for k, v in obj.items()})
        sample = KeySample("doctor:json", "", "string", int(c.memory_usage("doctor:json")), -1)
        _json_shape(sample, raw)
        real = int(c.memory_usage("doctor:hash"))
        assert sample.hash_estimate is not None
        assert abs(sample.hash_estimate - real) <= 0.25 * real, (sample.hash_estimate, real)
    finally:
        c.delete("doctor:json", "doctor:hash")
        c.close()


def test_a_healthy_cluster_then_an_uncovered_and_a_stuck_slot(redis_topologies: Any) -> None:
    cluster: Cluster = redis_topologies.cluster(3, 1)
    report = diagnose(cluster.url, sample=0)
    assert report.facts.kind == "cluster" and len(report.facts.nodes) == 6
    assert one(report, "topology.shape").status is Status.PASS
    assert one(report, "cluster.slots").value == "16384 of 16384"
    assert one(report, "cluster.open_slots").status is Status.PASS
    assert all(f.status is Status.PASS for f in found(report, "replication.link"))
    assert {f.status for f in found(report, "config.cluster_node_timeout")} == {Status.PASS}

    source, target = cluster.primaries()[:2]
    stuck = cluster.slots_of(source)[0]
    with source.client() as c:  # a resharding interrupted after its first step
        c.execute_command("CLUSTER", "SETSLOT", stuck, "MIGRATING", cluster.node_id(target))
    lost = cluster.slots_of(target)[-1]
    for proc in cluster.processes:  # a slot nobody serves, in every node's view
        with proc.client() as c:
            c.execute_command("CLUSTER", "DELSLOTS", lost)
    report = diagnose(cluster.url, sample=0)
    slots = one(report, "cluster.slots")
    assert slots.status is Status.FAIL and slots.value == f"1 slot(s) not served: {lost}"
    assert "ADDSLOTSRANGE" in slots.fix
    opened = one(report, "cluster.open_slots")
    assert opened.status is Status.FAIL
    assert opened.value == (
        f"{stuck} migrating {source.address} -> {target.address} (target not importing)"
    )
    assert "SETSLOT <slot> STABLE" in opened.fix
    assert report.exit_code() == 2


def test_a_replica_down_in_a_cluster(redis_topologies: Any) -> None:
    cluster: Cluster = redis_topologies.cluster(3, 1)
    replica = cluster.replicas()[0]
    cluster.kill(replica)
    report = diagnose(cluster.url, sample=0)
    down = one(report, "topology.reachable", replica.address)
    assert down.status is Status.FAIL and down.value.startswith("unreachable: ")
    assert report.exit_code() == 2


def test_a_sentinel_group_healthy_then_a_sentinel_down(redis_topologies: Any) -> None:
    group: SentinelGroup = redis_topologies.sentinel(replicas=1, sentinels=3)
    report = diagnose(group.url, sample=0)
    assert report.facts.kind == "sentinel"
    assert len(report.facts.sentinels) == 3 and len(report.facts.nodes) == 2
    assert one(report, "sentinel.count").status is Status.PASS
    assert one(report, "sentinel.agree").value == f"all name {group.primary().address}"
    assert one(report, "sentinel.quorum").status is Status.PASS
    assert one(report, "topology.shape").value == "1 primary, 1 connected replica(s)"
    (link,) = found(report, "replication.link")
    assert link.status is Status.PASS and link.node == group.replicas()[0].address

    gone = group.sentinels[-1]
    group.kill(gone)
    report = diagnose(group.url, sample=0)
    count = one(report, "sentinel.count")
    assert count.status is Status.FAIL
    assert count.value == f"2 of 3 reachable: down {gone.address}"
    assert one(report, "sentinel.quorum").status is Status.PASS  # 2 of 3 still authorize


def test_cli_json_and_exit_codes(redis_topologies: Any) -> None:
    server: Standalone = redis_topologies.standalone(extra_settings=GOOD)
    run = [sys.executable, "-m", "smartcache", "doctor", server.url]
    out = subprocess.run([*run, "--json"], check=False, capture_output=True, text=True, timeout=60)
    document = json.loads(out.stdout)
    assert document["kind"] == "standalone" and document["status"] == "fail"
    assert out.returncode == 2  # no password: config.auth fails
    checks = {f["check"] for f in document["findings"]}
    assert {"config.maxmemory", "config.auth", "topology.shape"} <= checks
    table = subprocess.run(
        [*run, "--color", "never"], check=False, capture_output=True, text=True, timeout=60
    )
    assert table.returncode == 2
    assert "Password required" in table.stdout and "Overall: FAIL" in table.stdout


def test_top_once_through_sentinel(redis_topologies: Any) -> None:
    group: SentinelGroup = redis_topologies.sentinel(replicas=1, sentinels=3)
    out = subprocess.run(
        [sys.executable, "-m", "smartcache", "top", group.url, "--once", "--interval", "0.2"],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line.split() for line in out.stdout.splitlines()[2:] if line}
    assert lines[group.primary().address][1] == "primary"
    replica = group.replicas()[0].address
    assert lines[replica][1] == "replica"
    assert re.search(rf"{replica} +replica .* \d+ B +\d+", out.stdout)  # its lag in bytes
    assert out.stdout.startswith("smartcache top: sentinel ")
