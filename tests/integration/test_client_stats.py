"""``client.stats()`` and the topology log on real servers, sync and async: redirects
followed during a real slot migration, a refresh caused by MOVED, retries by reason, an
ambiguous failure, a Sentinel failover followed."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
import redis

from smartcache.core.stats import ClientStats
from smartcache.exceptions import AmbiguousCommandError

pytestmark = pytest.mark.timeout(120)


def events(caplog: pytest.LogCaptureFixture, name: str) -> list[dict[str, Any]]:
    return [
        r.smartcache  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "smartcache.topology" and r.smartcache["event"] == name  # type: ignore[attr-defined]
    ]


def test_a_new_client_counts_nothing(redis_standalone: Any, client_factory: Any) -> None:
    c = client_factory(url=redis_standalone.url)
    c.set("stats:fresh", 1)
    stats = c.stats()
    assert isinstance(stats, ClientStats)
    assert (stats.moved, stats.ask, stats.retries, stats.ambiguous) == (0, 0, {}, 0)
    assert stats.near_cache is None


def test_ask_moved_and_the_refresh_moved_caused(
    redis_topologies: Any, client_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smartcache.topology")
    cluster = redis_topologies.cluster(primaries=3, replicas=0)
    c = client_factory(startup_nodes=cluster.startup_nodes)
    k = "{stats-move}k"
    c.set(k, "v")
    slot = c.keyslot(k)
    source = cluster.primary_of_slot(slot)
    target = next(p for p in cluster.primaries() if p is not source)
    src, dst = source.client(), target.client()
    try:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", cluster.node_id(source))
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", cluster.node_id(target))
        src.execute_command("MIGRATE", target.host, target.port, "", 0, 5000, "KEYS", k)
        assert c.get(k) == b"v"  # the source answers ASK; the target serves it after ASKING
        assert (c.stats().ask, c.stats().moved) == (1, 0)
        for proc in cluster.primaries():
            with proc.client() as each:
                each.execute_command("CLUSTER", "SETSLOT", slot, "NODE", cluster.node_id(target))
        time.sleep(0.15)  # past the refresh rate limit (100 ms), so MOVED's refresh runs now
        assert c.get(k) == b"v"  # MOVED, followed; the map is refreshed
    finally:
        src.close()
        dst.close()
    stats = c.stats()
    assert (stats.ask, stats.moved) == (1, 1)
    assert stats.refreshes.get("startup") == 1 and stats.refreshes.get("moved") == 1
    assert stats.retries == {} and stats.ambiguous == 0
    refreshes = events(caplog, "cluster.refresh")
    assert [e["cause"] for e in refreshes][:2] == ["startup", "moved"]
    assert refreshes[1]["primaries"] == 3 and refreshes[1]["nodes"] == 3


def test_retries_by_reason_and_an_ambiguous_failure(
    redis_topologies: Any, client_factory: Any
) -> None:
    server = redis_topologies.standalone()
    admin = redis.Redis(host="127.0.0.1", port=server.port)
    c = client_factory(host="127.0.0.1", port=server.port, socket_timeout=0.3)
    try:
        c.set("stats:k", "v")
        admin.client_pause(700, all=True)  # reads wait too: the first GET times out
        assert c.get("stats:k") == b"v"  # GET is idempotent: retried after the timeout
        assert c.stats().retries.get("timeout", 0) >= 1
        admin.client_pause(5000, all=False)  # writes wait
        try:
            with pytest.raises(AmbiguousCommandError):
                c.incr("stats:n")  # written, no reply: not sent again
        finally:
            admin.client_unpause()
        assert c.stats().ambiguous == 1
    finally:
        admin.close()


def test_a_sentinel_failover_followed_is_counted_and_logged(
    redis_topologies: Any, client_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="smartcache.topology")
    group = redis_topologies.sentinel(replicas=1, sentinels=3)
    c = client_factory(sentinels=group.sentinel_addresses, service_name=group.service_name)
    c.set("stats:fo", 0)
    old = group.primary().address
    new = group.failover().address
    deadline = time.monotonic() + 30
    while c.stats().failovers == 0 and time.monotonic() < deadline:
        c.set("stats:fo", 1)  # rides the switch: the client follows the new primary
        time.sleep(0.01)
    stats = c.stats()
    assert stats.failovers == 1
    (first,) = events(caplog, "sentinel.primary")
    assert first["address"] == old and first["service"] == group.service_name
    (followed,) = events(caplog, "sentinel.failover")
    assert (followed["old"], followed["new"]) == (old, new)
