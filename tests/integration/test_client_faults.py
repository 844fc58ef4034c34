"""SmartClient and AsyncSmartClient ride through live resharding, a primary kill and a hang."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import redis

from smartcache import key_slot
from smartcache.exceptions import AmbiguousCommandError
from smartcache.sync.client import SmartClient
from smartcache.testing.pytest_plugin import TopologyFactory


def _load(
    client: SmartClient,
    keys: list[str],
    stop: threading.Event,
    errors: list[BaseException],
    wrong: list[str],
    ops: list[int],
    acked: dict[str, int] | None = None,
) -> None:
    count = 0
    version: dict[str, int] = acked if acked is not None else {}
    try:
        while not stop.is_set():
            for key in keys:
                value = version.get(key, 0) + 1
                client.set(key, value)
                version[key] = value
                got = client.get(key)
                if got != str(value).encode():
                    wrong.append(f"{key}: wrote {value}, read {got!r}")
                count += 2
                if stop.is_set():
                    break
    except BaseException as exc:
        errors.append(exc)
    ops.append(count)


def test_live_resharding_under_load(redis_topologies: TopologyFactory, client_factory: Any) -> None:
    cluster = redis_topologies.cluster(primaries=3, replicas=0)
    source, target, _ = cluster.primaries()
    moving = cluster.slots_of(source)[:1000]
    moving_set = set(moving)
    candidates = (f"rs:{i}" for i in range(10**6))
    keys = [k for k in candidates if key_slot(k) in moving_set][:2000]
    client = client_factory(startup_nodes=cluster.startup_nodes)
    for k in keys:
        client.set(k, 0)
    stop = threading.Event()
    errors: list[BaseException] = []
    wrong: list[str] = []
    ops: list[int] = []
    threads = [
        threading.Thread(target=_load, args=(client, keys[t::4], stop, errors, wrong, ops))
        for t in range(4)
    ]
    for t in threads:
        t.start()
    try:
        cluster.migrate_slots(source, target, slots=moving, batch=50)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert errors == []
    assert wrong == []
    assert sum(ops) > 1000  # the load really ran during the migration
    assert moving_set <= set(cluster.slots_of(target))


def test_primary_sigkill_under_load(redis_topologies: TopologyFactory, client_factory: Any) -> None:
    cluster = redis_topologies.cluster(primaries=3, replicas=1, node_timeout_ms=1000)
    client = client_factory(startup_nodes=cluster.startup_nodes)
    victim = cluster.primaries()[0]
    victim_slots = set(cluster.slots_of(victim))
    keys = [k for k in (f"pk:{i}" for i in range(20000)) if key_slot(k) in victim_slots][:200]
    stop = threading.Event()
    errors: list[BaseException] = []
    wrong: list[str] = []
    ops: list[int] = []
    acked: list[dict[str, int]] = [{}, {}]
    threads = [
        threading.Thread(
            target=_load, args=(client, keys[t::2], stop, errors, wrong, ops, acked[t])
        )
        for t in range(2)
    ]
    for t in threads:
        t.start()
    time.sleep(0.3)  # let the load reach the victim before it dies (load, not sync)
    cluster.kill(victim)
    promoted = cluster.wait_for_failover(victim)
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline and not errors:
        time.sleep(0.05)  # keep the load running on the new primary for a while
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert errors == [], [f"{type(e).__name__}: {e}" for e in errors[:1]]
    # Every write acknowledged after the failover is readable: the final values are exactly
    # the last acknowledged ones. Writes the dead primary acknowledged but had not
    # replicated show up as reads of an older value during the run: they are counted.
    last = {k: v for part in acked for k, v in part.items()}
    assert len(last) == len(keys)
    final = client.mget_nonatomic(keys)
    assert final == [str(last[k]).encode() for k in keys]
    lost_at_failover = len(wrong)
    print(f"acknowledged writes lost with the dead primary: {lost_at_failover}")
    assert lost_at_failover <= 2 * 2, wrong  # at most the in-flight writes of each thread
    assert promoted.address in {p.address for p in cluster.primaries()}


def test_primary_hung_sigstop(redis_topologies: TopologyFactory, client_factory: Any) -> None:
    cluster = redis_topologies.cluster(primaries=3, replicas=1, node_timeout_ms=1000)
    client = client_factory(startup_nodes=cluster.startup_nodes, socket_timeout=1.0)
    victim = cluster.primaries()[0]
    victim_slots = set(cluster.slots_of(victim))
    keys = [k for k in (f"hung:{i}" for i in range(20000)) if key_slot(k) in victim_slots][:50]
    for k in keys:
        client.set(k, 0)
    stop = threading.Event()
    errors: list[BaseException] = []
    stalls: list[float] = []

    def load() -> None:
        i = 0
        try:
            while not stop.is_set():
                key = keys[i % len(keys)]
                t = time.monotonic()
                client.set(key, i)
                client.get(key)
                stalls.append(time.monotonic() - t)
                i += 1
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(0.2)  # the load is running against the victim
    paused_at = time.monotonic()
    cluster.pause(victim)
    promoted = cluster.wait_for_failover(victim)
    failover_time = time.monotonic() - paused_at
    settle = time.monotonic() + 1.5
    while time.monotonic() < settle and not errors:
        time.sleep(0.05)  # keep loading the promoted primary
    stop.set()
    thread.join(timeout=30)
    assert errors == [], [f"{type(e).__name__}: {e}" for e in errors[:1]]
    assert max(stalls) <= failover_time + 1.0 + 1.0, (max(stalls), failover_time)
    # SIGCONT: the old primary rejoins as a replica and gets no writes from the client.
    cluster.resume(victim)
    cluster.wait_ready()
    assert victim in cluster.replicas_of(promoted)
    with victim.client() as admin:
        admin.config_resetstat()
    for k in keys:
        client.set(k, "after")
    promoted_client = promoted.client()
    promoted_client.wait(1, 2000)
    promoted_client.close()
    with victim.client() as admin:
        stats = admin.info("commandstats").get("cmdstat_set", {})
    # The replica executed exactly the replicated writes; none was sent to it (a write sent
    # to a replica in a cluster is refused with MOVED and counted as rejected).
    assert stats.get("calls", 0) == len(keys)
    assert stats.get("rejected_calls", 0) == 0


def _mixed_load(
    client: Any, keys: list[str], mode: str, stop: threading.Event, errors: list[str]
) -> None:
    """GET/SET, a pipeline, a MULTI/EXEC or an MGET over ``keys``, until ``stop``."""
    i = 0
    while not stop.is_set():
        key = keys[i % len(keys)]
        batch = keys[i % len(keys) : i % len(keys) + 8] or [key]
        i += 1
        try:
            if mode == "commands":
                client.set(key, i)
                assert client.get(key) == str(i).encode()
            elif mode == "pipeline":
                pipe = client.pipeline(transaction=False)
                for k in batch:
                    pipe.set(k, i).get(k)
                assert pipe.execute() == [True, str(i).encode()] * len(batch)
            elif mode == "transaction":
                pipe = client.pipeline()  # MULTI/EXEC, one key
                pipe.set(key, i).get(key)
                assert pipe.execute() == [True, str(i).encode()]
            else:
                assert len(client.mget_nonatomic(batch)) == len(batch)
        except Exception as exc:  # every failure counts, the load goes on
            errors.append(f"{mode}: {type(exc).__module__}.{type(exc).__name__}: {exc}")


def test_resharding_under_mixed_load_follows_every_redirect(
    redis_topologies: TopologyFactory, client_factory: Any
) -> None:
    """1,000 slots move while GET/SET, pipelines, transactions and MGET run: no MOVED or
    ASK reaches the application (transactions did not follow them)."""
    # No failover belongs in this test: a long node timeout keeps a machine under load from
    # failing a primary over in the middle of the migration (seen once with four test runs
    # in parallel on two CPUs: the source had lost its slots before they were moved).
    cluster = redis_topologies.cluster(primaries=3, replicas=1, node_timeout_ms=10_000)
    source, target, _ = cluster.primaries()
    moving = set(cluster.slots_of(source)[:1000])
    keys = [k for k in (f"mx:{i}" for i in range(10**6)) if key_slot(k) in moving][:1600]
    client = client_factory(startup_nodes=cluster.startup_nodes)
    stop = threading.Event()
    errors: list[str] = []
    modes = ["commands", "pipeline", "transaction", "transaction", "mget"]
    threads = [
        threading.Thread(
            target=_mixed_load, args=(client, keys[n :: len(modes)], mode, stop, errors)
        )
        for n, mode in enumerate(modes)
    ]
    for t in threads:
        t.start()
    try:
        moved = cluster.migrate_slots(source, target, len(moving), batch=50)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert set(moved) == moving
    assert errors == [], f"{len(errors)} error(s), first: {errors[0]}"


def test_a_fresh_connection_lost_after_writing_is_ambiguous(
    redis_topologies: TopologyFactory, client_factory: Any
) -> None:
    """A command written on a connection opened for it, whose reply never came, may have run:
    INCR is not sent again (AmbiguousCommandError), however new the connection was: the
    wire says whether a request was written (``request_sent``), not the connection's age."""
    server = redis_topologies.standalone()
    admin = redis.Redis(host="127.0.0.1", port=server.port)
    try:
        client = client_factory(host="127.0.0.1", port=server.port, socket_timeout=0.3)
        admin.client_pause(5000, all=False)  # writes wait; HELLO and the handshake pass
        try:
            with pytest.raises(AmbiguousCommandError):
                client.incr("fresh:n")
        finally:
            admin.client_unpause()
        calls = admin.info("commandstats").get("cmdstat_incr", {}).get("calls", 0)
        assert calls <= 1  # sent once at most
        assert client.incr("fresh:n") in (1, 2)
    finally:
        admin.close()
