"""SmartClient on a Sentinel-managed primary: discovery, failover, durability."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import redis

from smartcache import ConfigurationError, DurabilityError, NoReachableNodeError
from smartcache.sync.client import SmartClient
from smartcache.testing import SentinelGroup, Standalone
from smartcache.testing.pytest_plugin import TopologyFactory


def test_discovers_primary_and_speaks_redis(
    redis_sentinel: SentinelGroup, client_factory: Any
) -> None:
    c = client_factory(sentinels=redis_sentinel.sentinel_addresses[:1], service_name="mymaster")
    c.set("sn:key", "v")
    assert c.get("sn:key") == b"v"
    pipe = c.pipeline()
    pipe.incr("sn:n").incr("sn:n")
    assert pipe.execute() == [1, 2]
    assert c.mget(["sn:key", "sn:none"]) == [b"v", None]
    c.delete("sn:key", "sn:n")
    assert not c.is_cluster
    assert [n.name for n in c.get_primaries()] == [redis_sentinel.primary().address]


def test_from_url(redis_sentinel: SentinelGroup) -> None:
    with SmartClient.from_url(redis_sentinel.url, decode_responses=True) as c:
        c.set("sn:url", "é")
        assert c.get("sn:url") == "é"
        c.delete("sn:url")


def test_bad_sentinel_input(redis_sentinel: SentinelGroup) -> None:
    with pytest.raises(ConfigurationError, match="service_name"):
        SmartClient(sentinels=redis_sentinel.sentinel_addresses)
    with pytest.raises(ConfigurationError, match="need sentinels"):
        SmartClient(service_name="mymaster")
    with pytest.raises(NoReachableNodeError):
        SmartClient(
            sentinels=[("127.0.0.1", 1)],
            service_name="mymaster",
            sentinel_kwargs={"socket_connect_timeout": 0.2},
        )
    with pytest.raises(NoReachableNodeError):
        SmartClient(sentinels=redis_sentinel.sentinel_addresses, service_name="nosuch")


def test_reads_from_replicas(redis_sentinel: SentinelGroup, client_factory: Any) -> None:
    c = client_factory(
        sentinels=redis_sentinel.sentinel_addresses,
        service_name="mymaster",
        read_from="replica",
        wait_replicas=2,
    )
    c.set("sn:rr", "v")  # acknowledged by both replicas (WAIT 2)
    for proc in redis_sentinel.data_nodes:
        with proc.client() as admin:
            admin.config_resetstat()
    replicas = {p.address for p in redis_sentinel.replicas()}
    hits = set()
    for _ in range(20):
        assert c.get("sn:rr") == b"v"
    for proc in redis_sentinel.data_nodes:
        with proc.client() as admin:
            stats = admin.info("commandstats").get("cmdstat_get", {})
            if stats.get("calls", 0):
                hits.add(proc.address)
    assert hits and hits <= replicas
    c.delete("sn:rr")


def test_wait_replicas_raises_when_too_few_acknowledge(
    redis_sentinel: SentinelGroup, client_factory: Any
) -> None:
    c = client_factory(
        sentinels=redis_sentinel.sentinel_addresses,
        service_name="mymaster",
        wait_replicas=3,
        wait_timeout_ms=100,
    )
    with pytest.raises(DurabilityError) as err:
        c.set("sn:dur", "v")
    assert err.value.replicas == 2 and err.value.wanted == 3
    assert c.get("sn:dur") == b"v"  # applied, just not as durable as asked
    with redis_sentinel.primary().client() as admin:
        admin.delete("sn:dur")


def test_wait_replicas_waits_after_scripts_too(
    redis_sentinel: SentinelGroup, client_factory: Any
) -> None:
    c = client_factory(
        sentinels=redis_sentinel.sentinel_addresses,
        service_name="mymaster",
        wait_replicas=3,
        wait_timeout_ms=100,
    )
    script = "return redis.call('SET', KEYS[1], ARGV[1])"
    with pytest.raises(DurabilityError) as err:  # a script that writes is a write
        c.eval(script, 1, "sn:dur-eval", "v")
    assert err.value.replicas == 2 and err.value.wanted == 3
    assert c.eval_ro("return redis.call('GET', KEYS[1])", 1, "sn:dur-eval") == b"v"
    with redis_sentinel.primary().client() as admin:
        admin.delete("sn:dur-eval")


def test_wait_replicas_on_a_plain_server(redis_standalone: Standalone, client_factory: Any) -> None:
    c = client_factory(port=redis_standalone.port, wait_replicas=1, wait_timeout_ms=50)
    with pytest.raises(DurabilityError, match="reached only 0 of 1"):
        c.set("plain:dur", "v")
    assert c.get("plain:dur") == b"v"
    with redis.Redis(port=redis_standalone.port) as admin:
        admin.delete("plain:dur")


def test_wait_replicas_on_a_primary_given_by_address(
    redis_sentinel: SentinelGroup, client_factory: Any
) -> None:
    """A client pointed at a primary (no Sentinel) waits for its real replicas: both
    acknowledge; asking for one more raises, the write applied."""
    primary = redis_sentinel.primary()
    ok = client_factory(port=primary.port, wait_replicas=2, wait_timeout_ms=2000)
    assert ok.set("plain:dur2", "v") is True
    assert ok.incr("plain:dur2:n") == 1
    short = client_factory(port=primary.port, wait_replicas=3, wait_timeout_ms=100)
    with pytest.raises(DurabilityError) as err:
        short.set("plain:dur2", "w")
    assert err.value.replicas == 2 and err.value.wanted == 3
    assert short.get("plain:dur2") == b"w"
    with primary.client() as admin:
        admin.delete("plain:dur2", "plain:dur2:n")


def _writer(
    client: SmartClient,
    prefix: str,
    stop: threading.Event,
    acked: list[tuple[float, int]],
    errors: list[BaseException],
    unconfirmed: list[tuple[float, DurabilityError]],
) -> None:
    """SET ``prefix:i`` in a loop: an acknowledged write goes to ``acked``, a
    DurabilityError (applied, not confirmed by the replicas) to ``unconfirmed`` and the
    loop goes on; any other error ends it."""
    i = 0
    while not stop.is_set():
        i += 1
        try:
            client.set(f"{prefix}:{i}", i)
        except DurabilityError as exc:
            unconfirmed.append((time.monotonic(), exc))
            continue
        except BaseException as exc:
            errors.append(exc)
            return
        acked.append((time.monotonic(), i))


def test_primary_sigkill_zero_errors_nothing_lost(
    redis_topologies: TopologyFactory, client_factory: Any
) -> None:
    """SIGKILL the primary under two writers. The plain one measures the client's own
    recovery: no error, and its first write after +switch-master within 500 ms. The one
    with ``wait_replicas=1`` proves durability: no acknowledged write lost. Its WAIT also
    waits for the surviving replica to re-attach to the promoted primary: Sentinel's and
    the server's time, not the client's. Under load a Sentinel that fell behind may even
    fail the new primary over a second time, leaving the first one without replicas until
    it is made a replica (seen here: ten seconds). A write the client could not confirm
    raises DurabilityError; that is the client keeping its promise, so it is counted, not
    failed."""
    group = redis_topologies.sentinel()
    plain = client_factory(sentinels=group.sentinel_addresses, service_name="mymaster")
    durable = client_factory(
        sentinels=group.sentinel_addresses,
        service_name="mymaster",
        wait_replicas=1,
        wait_timeout_ms=2000,
    )
    watcher = group.sentinels[0].client(decode_responses=True, socket_timeout=30)
    pubsub = watcher.pubsub()
    pubsub.subscribe("+switch-master")
    stop = threading.Event()
    runs: dict[str, tuple[list[Any], list[BaseException], list[Any]]] = {
        name: ([], [], []) for name in ("fo", "fd")
    }  # acked, errors, unconfirmed
    threads = [
        threading.Thread(target=_writer, args=(client, name, stop, *runs[name]))
        for client, name in ((plain, "fo"), (durable, "fd"))
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.3)  # load running
    old = group.primary()
    killed_at = time.monotonic()
    group.kill(old)
    deadline = time.monotonic() + 30
    switched = False
    while not switched and time.monotonic() < deadline:
        message = pubsub.get_message(timeout=1.0)
        switched = bool(message and message["type"] == "message")
    switch_at = time.monotonic()
    at_switch = {name: len(run[0]) for name, run in runs.items()}
    deadline = switch_at + 30
    while time.monotonic() < deadline and not any(run[1] for run in runs.values()):
        if all(len(runs[name][0]) >= at_switch[name] + 50 for name in runs):
            break  # writes resumed: 50 more acknowledged on each writer
        time.sleep(0.01)
    resumed_at = time.monotonic()
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    pubsub.close()
    watcher.close()
    assert switched
    for _, errors, _ in runs.values():
        assert errors == [], [f"{type(e).__name__}: {e}" for e in errors[:1]]
    assert runs["fo"][2] == []  # no WAIT: nothing to confirm
    first = {name: next(t for t, _ in run[0] if t >= switch_at) for name, run in runs.items()}
    unconfirmed = runs["fd"][2]
    print(
        f"sentinel failover {switch_at - killed_at:.2f}s after the kill; first write "
        f"{(first['fo'] - switch_at) * 1000:.0f} ms after +switch-master "
        f"({(first['fd'] - switch_at) * 1000:.0f} ms with WAIT 1); "
        f"{len(runs['fo'][0])} + {len(runs['fd'][0])} writes, 0 errors, "
        f"{len(unconfirmed)} unconfirmed"
        + (f" ({unconfirmed[0][0] - switch_at:+.2f}s: {unconfirmed[0][1]})" if unconfirmed else "")
    )
    assert first["fo"] - switch_at < 0.5, first["fo"] - switch_at
    assert resumed_at > max(first.values())
    acked = [i for _, i in runs["fd"][0]]
    values = durable.mget([f"fd:{i}" for i in acked])
    lost = [i for i, v in zip(acked, values, strict=True) if v != str(i).encode()]
    assert lost == []  # wait_replicas=1: every acknowledged write reached a replica


def _incr_through_failover(group: SentinelGroup, incr: Callable[[], int]) -> tuple[int, int]:
    """INCR in a loop while SENTINEL FAILOVER runs; return (acknowledged, lost)."""
    stop = threading.Event()
    acked: list[int] = []

    def loop() -> None:
        while not stop.is_set():
            try:
                acked.append(incr())
            except redis.RedisError:
                time.sleep(0.01)  # an application would retry later; keep going

    thread = threading.Thread(target=loop)
    thread.start()
    time.sleep(0.2)  # the load is running
    new = group.failover()  # the old primary keeps running, and answering, for a while
    time.sleep(1.0)  # keep writing through and after the switch
    stop.set()
    thread.join(timeout=30)
    with new.client() as admin:
        final = int(admin.get("ff:counter") or 0)
    return len(acked), max(acked[-1] - final, 0) if acked else 0


def test_forced_failover_loses_nothing_redis_py_loses_most(
    redis_topologies: TopologyFactory, client_factory: Any
) -> None:
    ours_group = redis_topologies.sentinel()
    client = client_factory(sentinels=ours_group.sentinel_addresses, service_name="mymaster")
    client.set("ff:counter", 0)
    ours_acked, ours_lost = _incr_through_failover(
        ours_group, lambda: int(client.incr("ff:counter"))
    )

    theirs_group = redis_topologies.sentinel()
    sentinel = redis.Sentinel(theirs_group.sentinel_addresses, socket_timeout=1)
    primary = sentinel.master_for("mymaster", socket_timeout=1)
    primary.set("ff:counter", 0)
    theirs_acked, theirs_lost = _incr_through_failover(
        theirs_group, lambda: int(primary.incr("ff:counter"))
    )
    primary.close()
    print(
        f"forced failover, INCR load: smartcache {ours_acked} acknowledged, {ours_lost} "
        f"lost; redis-py Sentinel.master_for {theirs_acked} acknowledged, {theirs_lost} lost"
    )
    assert ours_acked > 100
    assert ours_lost == 0
    assert ours_lost <= 0.01 * theirs_lost


def test_data_node_credentials_are_separate_from_sentinels(
    redis_topologies: TopologyFactory,
) -> None:
    group = redis_topologies.sentinel(password="s3cret")  # data nodes only; sentinels open
    with SmartClient(
        sentinels=group.sentinel_addresses, service_name="mymaster", password="s3cret"
    ) as c:
        c.set("cred:key", "v")
        assert c.get("cred:key") == b"v"
        assert "s3cret" not in repr(c)
    with pytest.raises(redis.AuthenticationError) as err:
        SmartClient(
            sentinels=group.sentinel_addresses, service_name="mymaster", password="wrong"
        ).get("cred:key")
    assert "wrong" not in str(err.value)
    url = group.url.replace("redis+sentinel://", "redis+sentinel://:s3cret@")
    with SmartClient.from_url(url) as c:
        assert c.get("cred:key") == b"v"


def test_wait_aof(redis_topologies: TopologyFactory, client_factory: Any) -> None:
    group = redis_topologies.sentinel(extra_settings={"appendonly": "yes"})
    with group.primary().client() as admin:
        try:
            admin.execute_command("WAITAOF", 0, 0, 0)
        except redis.ResponseError as exc:
            pytest.skip(f"this server has no WAITAOF: {exc}")
    c = client_factory(
        sentinels=group.sentinel_addresses,
        service_name="mymaster",
        wait_replicas=2,
        wait_aof=True,
        wait_timeout_ms=2000,
    )
    assert c.set("aof:key", "v") is True  # both replicas fsynced it to their AOF
    strict = client_factory(
        sentinels=group.sentinel_addresses,
        service_name="mymaster",
        wait_replicas=3,
        wait_aof=True,
        wait_timeout_ms=100,
    )
    with pytest.raises(DurabilityError) as err:
        strict.set("aof:key", "w")  # only 2 replicas exist (and fsync once a second)
    assert err.value.replicas < 3 and err.value.wanted == 3
