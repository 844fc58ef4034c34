"""SCAN on a cluster: one int cursor over every primary (smartcache.core.scan), so code
written for one server (``while cursor != 0``) sees every key, on both clients."""

from __future__ import annotations

from typing import Any

import pytest

from smartcache.exceptions import InvalidArgumentError
from smartcache.testing import Cluster

pytestmark = pytest.mark.dropin


@pytest.fixture
def cluster_client(client_factory: Any, redis_cluster: Cluster) -> Any:
    client = client_factory(startup_nodes=redis_cluster.startup_nodes)
    client.flushall()
    yield client
    client.flushall()


def _scan_all(client: Any, **kwargs: Any) -> tuple[list[Any], int]:
    cursor, seen, calls = 0, [], 0
    while True:
        cursor, keys = client.scan(cursor, **kwargs)
        seen.extend(keys)
        calls += 1
        if cursor == 0:
            return seen, calls


def test_a_scan_loop_visits_every_key_on_every_primary(cluster_client: Any) -> None:
    keys = [f"scan:{i}" for i in range(300)]
    cluster_client.mset_nonatomic(dict.fromkeys(keys, 1))
    seen, calls = _scan_all(cluster_client, count=10)
    assert sorted(k.decode() for k in seen) == sorted(keys)  # each key once, none missed
    assert calls > 3  # it really walked cursors, not one call per primary
    matched, _ = _scan_all(cluster_client, match="scan:1*", count=50)
    assert sorted(matched) == sorted(k.encode() for k in keys if k.startswith("scan:1"))


def test_one_call_with_a_large_count_answers_like_one_server(cluster_client: Any) -> None:
    cluster_client.mset_nonatomic({"alpha": 1, "bravo": 2, "echo": 3, "charlie": 4})
    cursor, keys = cluster_client.scan(0, count=1000)
    assert (cursor, sorted(keys)) == (0, [b"alpha", b"bravo", b"charlie", b"echo"])
    assert cluster_client.scan(0, _type="hash") == (0, [])


def test_a_cursor_naming_a_primary_the_cluster_lacks_is_refused(cluster_client: Any) -> None:
    with pytest.raises(InvalidArgumentError, match="topology changed"):
        cluster_client.scan(7)  # primary #7 of 3


def test_scan_iter_over_the_nodes_it_is_given(cluster_client: Any, redis_cluster: Cluster) -> None:
    keys = [f"it:{i}" for i in range(60)]
    cluster_client.mset_nonatomic(dict.fromkeys(keys, 1))
    every = sorted(k.decode() for k in cluster_client.scan_iter(match="it:*", count=7))
    assert every == sorted(keys)
    primaries = cluster_client.get_primaries()
    per_node = [
        sorted(k.decode() for k in cluster_client.scan_iter(match="it:*", target_nodes=[node]))
        for node in primaries
    ]
    assert sorted(k for part in per_node for k in part) == sorted(keys)  # each key once
    assert all(part for part in per_node)  # the keys really were split over the nodes
