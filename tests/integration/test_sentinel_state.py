"""The Sentinel state and executor against real Sentinel groups, in both worlds.

Every scenario runs for ``SentinelState`` / ``SentinelExecutor`` (``[sync]``) and for
``AsyncSentinelState`` / ``AsyncSentinelExecutor`` (``[async]``, driven through
:class:`~tests.integration._sentinel_helpers.OnLoop` on a private event loop): the
``world`` fixture. A scenario that exists in one world only says why.

Tests that fail over or kill nodes use private groups (``redis_topologies.sentinel()``); the
shared ``redis_sentinel`` group is only read. Timings are measured from the sentinels' own
events (a recorder subscribed to every sentinel) and the state's listener, never by sleeping.
"""

from __future__ import annotations

import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.exceptions as rx

from smartcache import DurabilityError, NoReachableNodeError
from smartcache.testing import SentinelGroup
from smartcache.testing.pytest_plugin import TopologyFactory
from smartcache.wire import ConnectionSettings
from tests.integration._sentinel_helpers import (
    KINDS,
    Changes,
    EventRecorder,
    FakeSentinel,
    Load,
    World,
    dead_address,
    make_world,
    role,
    role_of,
    run_concurrently,
    unwrap,
)

Address = tuple[str, int]
MakeState = Callable[..., Any]

#: For a scenario of one world only (with the reason next to it).
sync_only = pytest.mark.parametrize("world", ["sync"], indirect=True)


@pytest.fixture(params=KINDS)
def world(request: pytest.FixtureRequest) -> Iterator[World]:
    made = make_world(request.param)
    yield made
    made.stop()


@pytest.fixture
def make_state(world: World) -> Iterator[MakeState]:
    states: list[Any] = []

    def make(
        sentinels: list[Address],
        service: str = "mymaster",
        *,
        data: ConnectionSettings | None = None,
        sentinel: ConnectionSettings | None = None,
        **kwargs: Any,
    ) -> Any:
        state = world.state(
            sentinels,
            service,
            data or ConnectionSettings(),
            sentinel or ConnectionSettings(),
            world.pool,
            **kwargs,
        )
        states.append(state)
        return state

    yield make
    for state in states:
        world.close(state)


@pytest.fixture
def record_events() -> Iterator[Callable[[SentinelGroup], EventRecorder]]:
    recorders: list[EventRecorder] = []

    def record(group: SentinelGroup) -> EventRecorder:
        recorders.append(EventRecorder(group.sentinel_addresses))
        return recorders[-1]

    yield record
    for recorder in recorders:
        recorder.close()


def start_watching(state: Any, group: SentinelGroup) -> Changes:
    """Start the watcher and wait until it hears every sentinel of ``group``."""
    changes = Changes(state)
    state.start_watcher()
    for host, port in group.sentinel_addresses:
        changes.wait("subscribed", lambda v, a=f"{host}:{port}": v == a, timeout=10)
    return changes


def switch_address(data: str) -> str:
    """The new primary of a ``+switch-master`` event's data."""
    return "{}:{}".format(*data.split()[3:5])


# -- discovery -------------------------------------------------------------------------------


def test_discovers_the_primary_from_the_full_list(
    redis_sentinel: SentinelGroup, world: World, make_state: MakeState
) -> None:
    state = make_state(redis_sentinel.sentinel_addresses)
    expected_class = {"sync": "SentinelState", "async": "AsyncSentinelState"}[world.kind]
    assert type(unwrap(state)).__name__ == expected_class  # each world drives its own state
    assert state.discover() == redis_sentinel.primary().address
    assert state.primary_address == redis_sentinel.primary().address
    assert role(state.primary_pool()) == "master"
    assert sorted(state.sentinels) == sorted(redis_sentinel.sentinel_addresses)


def test_one_sentinel_is_enough_to_learn_the_others(
    redis_sentinel: SentinelGroup, make_state: MakeState
) -> None:
    first = redis_sentinel.sentinel_addresses[1]
    state = make_state([first])
    assert state.discover() == redis_sentinel.primary().address
    assert state.primary_address == redis_sentinel.primary().address
    assert state.sentinels[0] == first
    assert sorted(state.sentinels) == sorted(redis_sentinel.sentinel_addresses)
    assert role(state.primary_pool()) == "master"
    pools = state.replica_pools()
    expected = sorted(r.address for r in redis_sentinel.replicas())
    assert sorted(p.settings.address for p in pools) == expected
    assert all(role(p) == "slave" for p in pools)
    state.discover()  # again: still deduplicated
    assert len(state.sentinels) == 3


def test_a_dead_sentinel_first_in_the_list_is_skipped(
    redis_sentinel: SentinelGroup, make_state: MakeState
) -> None:
    dead = dead_address()
    live = redis_sentinel.sentinel_addresses[0]
    state = make_state([dead, live])
    assert state.discover() == redis_sentinel.primary().address
    assert state.sentinels[0] == live  # the one that answered moves to the front
    assert dead in state.sentinels


def test_nothing_reachable_lists_every_address_tried(make_state: MakeState) -> None:
    dead = [dead_address(), dead_address()]
    state = make_state(dead)
    with pytest.raises(NoReachableNodeError) as info:
        state.discover()
    assert set(info.value.addresses) == {f"{h}:{p}" for h, p in dead}
    assert isinstance(info.value, redis.ConnectionError)


def test_unknown_service_is_refused(redis_sentinel: SentinelGroup, make_state: MakeState) -> None:
    state = make_state(redis_sentinel.sentinel_addresses[:1], "no-such-service")
    with pytest.raises(NoReachableNodeError, match="does not monitor"):
        state.discover()


def test_role_confirmation_refuses_a_replica(
    redis_sentinel: SentinelGroup, make_state: MakeState
) -> None:
    replica = redis_sentinel.replicas()[0]
    fake = FakeSentinel((replica.host, replica.port))
    try:
        proto2 = ConnectionSettings(protocol=2)
        alone = make_state([fake.address], sentinel=proto2, discover_timeout=0.3)
        with pytest.raises(NoReachableNodeError, match="ROLE says it is a replica") as info:
            alone.discover()
        assert replica.address in info.value.addresses
        assert alone.primary_address is None

        both = make_state([fake.address, redis_sentinel.sentinel_addresses[0]], sentinel=proto2)
        asked = fake.questions
        assert both.discover() == redis_sentinel.primary().address
        assert fake.questions > asked  # it was asked first, and its answer refused
        assert both.sentinels[0] == redis_sentinel.sentinel_addresses[0]
    finally:
        fake.close()


def test_replica_pools_list_the_replicas(
    redis_sentinel: SentinelGroup, make_state: MakeState
) -> None:
    state = make_state(redis_sentinel.sentinel_addresses)
    pools = state.replica_pools()
    expected = sorted(r.address for r in redis_sentinel.replicas())
    assert sorted(p.settings.address for p in pools) == expected
    assert all(role(p) == "slave" for p in pools)
    assert state.primary_address not in state.replica_addresses


@pytest.mark.parametrize(("protocol", "decode"), [(2, False), (2, True), (3, False), (3, True)])
def test_resp2_resp3_and_decoded_replies(
    redis_sentinel: SentinelGroup, make_state: MakeState, protocol: int, decode: bool
) -> None:
    settings = ConnectionSettings(protocol=protocol, decode_responses=decode)
    state = make_state(
        redis_sentinel.sentinel_addresses[:1], data=settings, sentinel=settings, check_interval=0.1
    )
    assert state.discover() == redis_sentinel.primary().address
    assert sorted(state.refresh_replicas()) == sorted(r.address for r in redis_sentinel.replicas())
    changes = start_watching(state, redis_sentinel)
    since = changes.mark()
    # Not a synchronisation: a window of several check intervals in which nothing may go
    # wrong (the PINGs on the subscriptions must be answered).
    time.sleep(0.6)
    assert [kind for _, kind, _ in changes.calls[since:]] == []
    assert state.watcher_running


def test_concurrent_discoveries_and_on_error_calls_collapse(
    redis_sentinel: SentinelGroup,
    world: World,
    make_state: MakeState,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state = make_state(redis_sentinel.sentinel_addresses)
    pools = run_concurrently(20, state.primary_pool)  # 20 first uses: one discovery
    assert len({id(p) for p in pools}) == 1
    asks: list[str] = []
    monkeypatch.setattr(world.module, "ask_sentinel", world.slow_ask_sentinel(0.05, asks))
    results = run_concurrently(8, lambda: state.on_error(rx.ConnectionError("lost")))
    assert results == [False] * 8  # the primary did not change
    assert 1 <= len(asks) <= 2  # one discovery (two if a caller arrived after it ended)
    assert state.primary_pool() is pools[0]


def test_separate_credentials_for_sentinels_and_data_nodes(
    redis_topologies: TopologyFactory, make_state: MakeState
) -> None:
    group = redis_topologies.sentinel(replicas=1, sentinels=1, password="data-secret")
    state = make_state(group.sentinel_addresses, data=ConnectionSettings(password="data-secret"))
    assert state.discover() == group.primary().address
    assert role(state.primary_pool()) == "master"
    assert [p.settings.address for p in state.replica_pools()] == [group.replicas()[0].address]

    no_password = make_state(group.sentinel_addresses, discover_timeout=0.3)
    with pytest.raises(redis.AuthenticationError):  # at once: no other node would do better
        no_password.discover()


# -- the executor on a stable group ----------------------------------------------------------


def test_executor_commands_replica_reads_and_wait(
    redis_sentinel: SentinelGroup, world: World, make_state: MakeState
) -> None:
    state = make_state(redis_sentinel.sentinel_addresses)
    run = world.executor(state)
    assert run.execute(("SET", "asn:k", "v")) == b"OK"
    assert run.execute(("GET", "asn:k")) == b"v"
    with pytest.raises(rx.ResponseError, match="WRONGTYPE"):
        run.execute(("LPUSH", "asn:k", "x"))

    durable = world.executor(state, wait_replicas=2, read_from="replica")
    assert durable.execute(("SET", "asn:r", "v")) == b"OK"  # both replicas have it
    for proc in redis_sentinel.data_nodes:
        with proc.client() as admin:
            admin.config_resetstat()
    for _ in range(20):
        assert durable.execute(("GET", "asn:r")) == b"v"
    hits = set()
    for proc in redis_sentinel.data_nodes:
        with proc.client() as admin:
            if admin.info("commandstats").get("cmdstat_get", {}).get("calls", 0):
                hits.add(proc.address)
    assert hits and hits <= {r.address for r in redis_sentinel.replicas()}

    too_many = world.executor(state, wait_replicas=3, wait_timeout_ms=100)
    with pytest.raises(DurabilityError) as err:
        too_many.execute(("SET", "asn:d", "v"))
    assert err.value.replicas == 2 and err.value.wanted == 3
    assert run.execute(("DEL", "asn:k", "asn:r", "asn:d")) == 3


# -- following failovers ----------------------------------------------------------------------


def test_watcher_follows_a_forced_failover(
    redis_topologies: TopologyFactory,
    world: World,
    make_state: MakeState,
    record_events: Callable[[SentinelGroup], EventRecorder],
) -> None:
    group = redis_topologies.sentinel()
    recorder = record_events(group)
    state = make_state(group.sentinel_addresses[:1])
    state.discover()
    old_pool = state.primary_pool()
    changes = start_watching(state, group)
    since = changes.mark()
    # One sentinel dies and one hangs (SIGSTOP): the watcher still hears the third, and
    # its reconnect attempts to the other two never stall it.
    group.kill(group.sentinels[2])
    group.pause(group.sentinels[1])
    new = group.failover()
    t_state, address = changes.wait("switch", since=since, timeout=15)
    t_switch, _, data = recorder.first("+switch-master")
    assert address == new.address == state.primary_address
    assert address == switch_address(data)
    assert t_state <= t_switch + 0.5
    world.drain_retired(state)  # async: retired once its in-flight commands are answered
    assert old_pool.closed
    assert state.primary_pool() is not old_pool
    assert role(state.primary_pool()) == "master"
    assert state.writable
    assert state.wait_until_writable(0)
    print(f"\n{world.kind} forced failover: state {t_state - t_switch:+.3f}s from +switch-master")


def test_writes_are_held_during_a_forced_failover(
    redis_topologies: TopologyFactory,
    make_state: MakeState,
    record_events: Callable[[SentinelGroup], EventRecorder],
) -> None:
    group = redis_topologies.sentinel()
    recorder = record_events(group)
    state = make_state(group.sentinel_addresses)
    state.discover()
    changes = start_watching(state, group)
    old = group.primary()
    assert state.wait_until_writable(0)

    def write(n: int, i: int) -> int:
        if not state.wait_until_writable(10):
            raise rx.ConnectionError("still held")  # (not asserted) the writer tries again
        state.primary_pool().execute("RPUSH", "held-writes", i)
        return i

    load = Load(write, 1)  # a writer straight on the primary's pool, held by the state only
    try:
        load.wait_for(lambda load: len(load.acked) >= 10)  # the load is running
        since = changes.mark()
        with redis.Redis(*group.sentinel_addresses[0]) as s:
            s.execute_command("SENTINEL", "FAILOVER", group.service_name)
        t_try, _, _ = recorder.first("+try-failover")
        t_hold, _ = changes.wait("failover", lambda v: not v.writable, since=since, timeout=10)
        assert not state.wait_until_writable(0.05)
        released: list[tuple[float, bool]] = []

        def wait_writable() -> None:
            ok = state.wait_until_writable(20)
            released.append((time.monotonic(), ok))

        waiter = threading.Thread(target=wait_writable)
        waiter.start()
        waiter.join(25)
        t_noone, _, _ = recorder.first("+failover-state-send-slaveof-noone")
        t_promoted, _, promoted = recorder.first("+promoted-slave")
        t_switch, _, switch = recorder.first("+switch-master")
    finally:
        load.stop()
    ((t_release, ok),) = released
    assert ok
    # Writes stopped before the replica was told to stop replicating, and resumed only
    # after the promotion, at most 0.5 s after the first sentinel announced the switch.
    assert t_hold - t_try < 0.5
    assert t_hold < t_noone
    assert t_release >= t_promoted
    assert t_release <= t_switch + 0.5
    new_address = switch_address(switch)
    assert state.primary_address == new_address
    assert promoted.split()[1] == new_address
    assert role_of(new_address) == "master"
    group.wait_for_failover(old)
    # Nothing acknowledged was lost: every acked write is on the new primary.
    host, port = new_address.split(":")
    with redis.Redis(host, int(port)) as c:
        stored = {int(x) for x in c.lrange("held-writes", 0, -1)}
    acked = [i for _, i in load.acked]
    assert acked and set(acked) <= stored
    print(
        f"\nforced failover: hold {t_hold - t_try:.3f}s after +try-failover, released "
        f"{t_release - t_switch:+.3f}s from first +switch-master, held {t_release - t_hold:.3f}s"
    )


def test_executor_writes_during_a_forced_failover_lose_nothing(
    redis_topologies: TopologyFactory,
    world: World,
    make_state: MakeState,
    record_events: Callable[[SentinelGroup], EventRecorder],
) -> None:
    group = redis_topologies.sentinel()
    recorder = record_events(group)
    state = make_state(group.sentinel_addresses)
    state.discover()
    changes = start_watching(state, group)
    run = world.executor(state)
    run.execute(("SET", "ff:counter", 0))
    load = Load(lambda n, i: int(run.execute(("INCR", "ff:counter"))), 8)
    try:
        load.wait_for(lambda load: len(load.acked) >= 20)  # the load is running
        since = changes.mark()
        new = group.failover()  # the old primary keeps running
        t_release, _ = changes.wait("switch", since=since)
        # keep writing through and after the switch
        load.wait_for(lambda load: load.acked_after(t_release) >= 100 or bool(load.errors))
    finally:
        load.stop()
    with new.client() as admin:
        final = int(admin.get("ff:counter") or 0)
    t_try, _, _ = recorder.first("+try-failover")
    t_noone, _, _ = recorder.first("+failover-state-send-slaveof-noone")
    t_switch, _, _ = recorder.first("+switch-master")
    t_hold, _ = changes.wait("failover", lambda v: not v.writable, since=since)
    acked = [value for _, value in load.acked]
    assert load.errors == [], [f"{type(e).__name__}: {e}" for e in load.errors[:3]]
    assert len(acked) == len(set(acked)) > 100
    assert max(acked) == final  # every acknowledged INCR is on the new primary
    assert t_hold < t_noone
    assert t_release <= t_switch + 0.5
    print(
        f"\n{world.kind} forced failover, 8 INCR writers: {len(acked)} acknowledged, "
        f"{max(acked) - final} lost; hold {t_hold - t_try:.3f}s after +try-failover, "
        f"released {t_release - t_switch:+.3f}s from +switch-master"
    )


def _writer(key: str) -> int:
    """The writer number ``n`` in a ``sk:{n}:{i}`` key."""
    return int(key.split(":")[1])


def test_primary_sigkill_switch_follows_the_sentinels_with_zero_errors(
    redis_topologies: TopologyFactory,
    world: World,
    make_state: MakeState,
    record_events: Callable[[SentinelGroup], EventRecorder],
) -> None:
    group = redis_topologies.sentinel()
    recorder = record_events(group)
    state = make_state(group.sentinel_addresses, check_interval=0.5)
    state.discover()
    changes = start_watching(state, group)
    # Even writers measure the executor's own recovery (no WAIT). Odd writers prove
    # durability with WAIT 1; it also waits for the surviving replica to re-attach to the
    # promoted primary (Sentinel's and the server's time, not ours), and a write it cannot
    # confirm in time raises DurabilityError: counted as unconfirmed, not failed.
    plain = world.executor(state)
    durable = world.executor(state, wait_replicas=1, wait_timeout_ms=2000)
    unconfirmed: list[DurabilityError] = []

    def write(n: int, i: int) -> str | None:
        key = f"sk:{n}:{i}"
        try:
            (durable if n % 2 else plain).execute(("SET", key, key))  # idempotent: retried
        except DurabilityError as exc:
            unconfirmed.append(exc)
            return None
        return key

    load = Load(write, 4, stop_on_error=True)
    try:
        load.wait_for(lambda load: len(load.acked) >= 20)  # the load is running
        old = group.primary()
        since = changes.mark()
        t_kill = time.monotonic()
        group.kill(old)
        t_state, address = changes.wait("switch", since=since, timeout=30)
        t_switch, _, data = recorder.first("+switch-master")
        load.wait_for(lambda load: load.acked_after(t_switch) >= 50 or bool(load.errors), 10)
    finally:
        load.stop()
    assert load.errors == [], [f"{type(e).__name__}: {e}" for e in load.errors[:3]]
    assert address == switch_address(data)
    assert t_state <= t_switch + 0.5
    assert state.primary_address == address
    assert role(state.primary_pool()) == "master"
    assert state.wait_until_writable(0)
    done = [(t, key) for t, key in load.acked if key is not None]
    first_after = min(t for t, key in done if t > t_switch and _writer(key) % 2 == 0)
    assert first_after - t_switch < 0.5
    keys = [key for _, key in done if _writer(key) % 2]
    values = [durable.execute(("GET", key)) for key in keys]
    assert [k for k, v in zip(keys, values, strict=True) if v != k.encode()] == []
    print(
        f"\n{world.kind} SIGKILL: sentinels switched {t_switch - t_kill:.2f}s after the kill, "
        f"state {t_state - t_switch:+.3f}s from +switch-master, first write "
        f"{(first_after - t_switch) * 1000:.0f} ms after it; {len(done)} writes "
        f"({len(keys)} with WAIT 1), 0 errors, {len(unconfirmed)} unconfirmed"
    )


def test_killed_replica_leaves_replica_pools_once_sdown(
    redis_topologies: TopologyFactory,
    make_state: MakeState,
    record_events: Callable[[SentinelGroup], EventRecorder],
) -> None:
    group = redis_topologies.sentinel()
    recorder = record_events(group)
    state = make_state(group.sentinel_addresses)
    assert len(state.replica_pools()) == 2
    changes = start_watching(state, group)
    victim = group.replicas()[0]
    since = changes.mark()
    group.kill(victim)
    t_sdown, _, _ = recorder.first("+sdown", contains=f"slave {victim.address}")
    t_gone, _ = changes.wait("replicas", lambda v: victim.address not in v, since=since)
    assert victim.address not in state.replica_addresses
    assert len(state.replica_pools()) == 1
    assert t_gone - t_sdown < 0.5 or t_gone < t_sdown  # on +sdown, or earlier (disconnected)


# -- lifecycle -------------------------------------------------------------------------------


def test_watcher_never_outlives_a_collected_state(
    redis_sentinel: SentinelGroup, world: World
) -> None:
    pools: list[Any] = []

    def factory(settings: ConnectionSettings) -> Any:
        pools.append(world.pool(settings))
        return pools[-1]

    before = world.background()
    state = world.state(
        redis_sentinel.sentinel_addresses,
        "mymaster",
        ConnectionSettings(),
        ConnectionSettings(),
        factory,
    )
    assert state.discover() == redis_sentinel.primary().address
    changes = start_watching(state, redis_sentinel)
    assert changes.calls
    units = world.background() - before
    assert units
    watcher = world.watcher_units(state, before)
    assert len(watcher) == 1 + world.watcher_units_per_sentinel * 3
    del state
    assert world.wait_ended(units | watcher, 5, collect=True)
    for pool in pools:
        world.close(pool)


def test_close_stops_the_watcher_and_everything_it_started(
    redis_sentinel: SentinelGroup, world: World
) -> None:
    before = world.background()
    state = world.state(
        redis_sentinel.sentinel_addresses,
        "mymaster",
        ConnectionSettings(),
        ConnectionSettings(),
        world.pool,
        check_interval=0.2,
    )
    changes = start_watching(state, redis_sentinel)
    world.executor(state).execute(("PING",))
    watcher = world.watcher_units(state, before)
    n = len(redis_sentinel.sentinel_addresses)
    assert len(watcher) == 1 + world.watcher_units_per_sentinel * n
    assert len(world.background() - before) >= len(watcher)
    world.close(state)
    assert world.wait_ended(watcher, 0)  # ended by the time close returned
    assert world.wait_ended(world.background() - before, 1)
    assert not state.watcher_running
    assert state.wait_until_writable(0)
    with pytest.raises(redis.ConnectionError, match="closed"):
        state.primary_pool()
    assert not any(kind == "error" for _, kind, _ in changes.calls)
    world.close(state)  # idempotent


def test_close_leaves_no_pool_open(redis_sentinel: SentinelGroup, world: World) -> None:
    # The watcher's first check discovers on its own; a close() racing with it must not
    # leave a pool behind.
    for _ in range(10):
        pools: list[Any] = []

        def factory(settings: ConnectionSettings, pools: list[Any] = pools) -> Any:
            pools.append(world.pool(settings))
            return pools[-1]

        state = world.state(
            redis_sentinel.sentinel_addresses,
            "mymaster",
            ConnectionSettings(),
            ConnectionSettings(),
            factory,
        )
        state.start_watcher()
        world.close(state)
        assert all(p.closed for p in pools)
        with pytest.raises(redis.ConnectionError, match="closed"):
            state.primary_pool()


@sync_only  # fork() is for threads and blocking sockets; asyncio code is not fork-safe
def test_forked_child_runs_its_own_watcher(
    redis_sentinel: SentinelGroup, world: World, make_state: MakeState
) -> None:
    state = make_state(redis_sentinel.sentinel_addresses)
    state.discover()
    changes = start_watching(state, redis_sentinel)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with threads running
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            inherited = state.watcher_running
            pool = state.primary_pool()  # restarts this process's own watcher
            ok = role(pool) == "master" and state.watcher_running and not inherited
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's watcher and subscriptions were not disturbed by the child.
    assert state.watcher_running
    assert not any(kind == "error" for _, kind, _ in changes.calls)
    assert state.discover() == redis_sentinel.primary().address
