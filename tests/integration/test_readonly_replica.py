"""A write to a read-only replica the client was pointed at fails at once, in every shell.

A client given one server's address cannot reach another node by retrying, so the
core (``decide(..., reroutable=False)``) raises READONLY at once; before, the
``AsyncSmartClient(autopipeline=False)`` path retried it for the whole budget (~10.7 s).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis.exceptions as rx

from smartcache.testing import ServerBinary, Standalone

#: a correctness bound, not a benchmark: the default retry budget is 10 s
QUICK = 2.0


@pytest.fixture(scope="module")
def primary_and_replica(
    redis_server_binary: ServerBinary,
) -> Iterator[tuple[Standalone, Standalone]]:
    """A primary and a second server made its replica with REPLICAOF (stopped after the
    module)."""
    with (
        Standalone(binary=redis_server_binary) as primary,
        Standalone(binary=redis_server_binary) as replica,
    ):
        with primary.server.client() as p:
            p.set("readonly:seed", "v")
        with replica.server.client() as r:
            r.replicaof(primary.server.host, primary.server.port)
            replica.server.wait_for(
                lambda: r.get("readonly:seed") == b"v", 20, what="sync from its primary"
            )
        yield primary, replica


@pytest.mark.parametrize("autopipeline", [True, False], ids=["autopipeline", "no-autopipeline"])
def test_write_to_a_replica_raises_readonly_at_once(
    primary_and_replica: tuple[Standalone, Standalone], client_factory: Any, autopipeline: bool
) -> None:
    if client_factory.kind == "sync" and not autopipeline:
        pytest.skip("autopipeline= is an AsyncSmartClient option")
    _, replica = primary_and_replica
    options = {"autopipeline": autopipeline} if client_factory.kind == "async" else {}
    client = client_factory(url=replica.url, **options)
    assert client.get("readonly:seed") == b"v"  # reads work: it is the replica we meant
    for write in (lambda: client.set("readonly:k", "v"), lambda: client.incr("readonly:n")):
        start = time.monotonic()
        with pytest.raises(rx.ReadOnlyError):
            write()
        elapsed = time.monotonic() - start
        assert elapsed < QUICK, f"READONLY took {elapsed:.1f} s to reach the caller"
    assert client.get("readonly:seed") == b"v"  # and the client still works
