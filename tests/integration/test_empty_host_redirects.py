"""``MOVED 3999 :6381`` (no host: "the host that answered") in pipelines and transactions.

With ``cluster-preferred-endpoint-type unknown-endpoint`` a real server sends redirects
with an empty host. Pipelines used to take ``":6381"`` as the new node's address; now
every redirect goes through :func:`smartcache.core.redirect.resolve_redirect`, like a
single command's. The client's slot-map updates are recorded (a spy that only records)
to see which addresses the redirects were resolved to.
"""

from __future__ import annotations

from typing import Any

from smartcache import key_slot
from smartcache.testing.pytest_plugin import TopologyFactory


def _record_moves(client: Any) -> list[tuple[int, str]]:
    state = getattr(client, "_target", client)._cluster
    moves: list[tuple[int, str]] = []
    apply_moved = state.apply_moved

    def record(slot: int, address: str) -> None:
        moves.append((slot, address))
        apply_moved(slot, address)

    state.apply_moved = record
    return moves


def test_pipelines_resolve_an_empty_host_to_the_node_that_answered(
    redis_topologies: TopologyFactory, client_factory: Any
) -> None:
    cluster = redis_topologies.cluster(primaries=2, replicas=0)
    for proc in cluster.processes:
        with proc.client() as r:
            r.config_set("cluster-preferred-endpoint-type", "unknown-endpoint")
    source, target = cluster.primaries()
    # Two clients, each with the map from before the migration: one meets the MOVED in a
    # pipeline, the other in a transaction (a client refreshes its map after a MOVED).
    piped = client_factory(startup_nodes=cluster.startup_nodes)
    transacted = client_factory(startup_nodes=cluster.startup_nodes)
    transacted.ping()  # a client loads its map when first used: before the migration here
    moving = cluster.slots_of(source)[:20]
    wanted = set(moving)
    keys = [k for k in (f"eh:{i}" for i in range(20000)) if key_slot(k) in wanted][:40]
    assert len(keys) >= 20
    for k in keys:
        piped.set(k, k)
    cluster.migrate_slots(source, target, slots=moving)
    with source.client() as r:  # the server really sends the empty-host form
        try:
            r.get(keys[0])
        except Exception as exc:
            assert str(exc) == f"{key_slot(keys[0])} :{target.port}"
        else:
            raise AssertionError("the source still served a migrated slot")

    moves = _record_moves(piped)
    pipe = piped.pipeline(transaction=False)
    for k in keys:
        pipe.get(k)
    assert pipe.execute() == [k.encode() for k in keys]
    assert moves, "no MOVED reached the pipeline: the test proves nothing"
    assert {slot for slot, _ in moves} <= wanted
    assert {address for _, address in moves} == {target.address}

    moves = _record_moves(transacted)
    transaction = transacted.pipeline()  # MULTI/EXEC
    transaction.set(keys[0], "t").get(keys[0])
    assert transaction.execute() == [True, b"t"]
    assert moves == [(key_slot(keys[0]), target.address)]
