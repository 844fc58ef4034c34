"""SentinelState against real Sentinel groups: discovery, ROLE confirmation, following failovers.

Tests that fail over or kill nodes use private groups (``redis_topologies.sentinel()``); the
shared ``redis_sentinel`` group is only read. Timings are measured from the sentinels' own
events (a recorder subscribed to every sentinel) and the state's listener, never by sleeping.
"""

from __future__ import annotations

import gc
import os
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
import redis.exceptions as rx

from smartcache import NoReachableNodeError
from smartcache.sync._pool import ConnectionPool
from smartcache.sync._sentinel import SentinelState
from smartcache.testing import SentinelGroup
from smartcache.testing.pytest_plugin import TopologyFactory
from smartcache.wire import ConnectionSettings
from tests.integration._sentinel_helpers import (
    Changes,
    EventRecorder,
    FakeSentinel,
    dead_address,
    pool_role,
    role_of,
)

Address = tuple[str, int]


@pytest.fixture
def make_state() -> Iterator[Callable[..., SentinelState]]:
    states: list[SentinelState] = []

    def make(
        sentinels: list[Address],
        service: str = "mymaster",
        *,
        data: ConnectionSettings | None = None,
        sentinel: ConnectionSettings | None = None,
        **kwargs: Any,
    ) -> SentinelState:
        state = SentinelState(
            sentinels,
            service,
            data or ConnectionSettings(),
            sentinel or ConnectionSettings(),
            lambda settings: ConnectionPool(settings, max_connections=8, timeout=5.0),
            **kwargs,
        )
        states.append(state)
        return state

    yield make
    for state in states:
        state.close()


@pytest.fixture
def record_events() -> Iterator[Callable[[SentinelGroup], EventRecorder]]:
    recorders: list[EventRecorder] = []

    def record(group: SentinelGroup) -> EventRecorder:
        recorders.append(EventRecorder(group.sentinel_addresses))
        return recorders[-1]

    yield record
    for recorder in recorders:
        recorder.close()


def start_watching(state: SentinelState, group: SentinelGroup) -> Changes:
    """Start the watcher and wait until it hears every sentinel of ``group``."""
    changes = Changes(state)
    state.start_watcher()
    for host, port in group.sentinel_addresses:
        changes.wait("subscribed", lambda v, a=f"{host}:{port}": v == a, timeout=10)
    return changes


# -- discovery -------------------------------------------------------------------------------


def test_discovers_the_primary_from_the_full_list(
    redis_sentinel: SentinelGroup, make_state: Callable[..., SentinelState]
) -> None:
    state = make_state(redis_sentinel.sentinel_addresses)
    assert state.discover() == redis_sentinel.primary().address
    assert state.primary_address == redis_sentinel.primary().address
    assert pool_role(state.primary_pool()) == "master"
    assert sorted(state.sentinels) == sorted(redis_sentinel.sentinel_addresses)


def test_one_sentinel_is_enough_to_learn_the_others(
    redis_sentinel: SentinelGroup, make_state: Callable[..., SentinelState]
) -> None:
    first = redis_sentinel.sentinel_addresses[1]
    state = make_state([first])
    state.discover()
    assert state.sentinels[0] == first
    assert sorted(state.sentinels) == sorted(redis_sentinel.sentinel_addresses)
    state.discover()  # again: still deduplicated
    assert len(state.sentinels) == 3


def test_a_dead_sentinel_first_in_the_list_is_skipped(
    redis_sentinel: SentinelGroup, make_state: Callable[..., SentinelState]
) -> None:
    dead = dead_address()
    live = redis_sentinel.sentinel_addresses[0]
    state = make_state([dead, live])
    assert state.discover() == redis_sentinel.primary().address
    assert state.sentinels[0] == live  # the one that answered moves to the front
    assert dead in state.sentinels


def test_nothing_reachable_lists_every_address_tried(
    make_state: Callable[..., SentinelState],
) -> None:
    dead = [dead_address(), dead_address()]
    state = make_state(dead)
    with pytest.raises(NoReachableNodeError) as info:
        state.discover()
    assert set(info.value.addresses) == {f"{h}:{p}" for h, p in dead}
    assert isinstance(info.value, redis.ConnectionError)


def test_unknown_service_is_refused(
    redis_sentinel: SentinelGroup, make_state: Callable[..., SentinelState]
) -> None:
    state = make_state(redis_sentinel.sentinel_addresses[:1], "no-such-service")
    with pytest.raises(NoReachableNodeError, match="does not monitor"):
        state.discover()


def test_role_confirmation_refuses_a_replica(
    redis_sentinel: SentinelGroup, make_state: Callable[..., SentinelState]
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
    redis_sentinel: SentinelGroup, make_state: Callable[..., SentinelState]
) -> None:
    state = make_state(redis_sentinel.sentinel_addresses)
    pools = state.replica_pools()
    expected = sorted(r.address for r in redis_sentinel.replicas())
    assert sorted(p.settings.address for p in pools) == expected
    assert all(pool_role(p) == "slave" for p in pools)
    assert state.primary_address not in state.replica_addresses


@pytest.mark.parametrize(("protocol", "decode"), [(2, False), (2, True), (3, False), (3, True)])
def test_resp2_resp3_and_decoded_replies(
    redis_sentinel: SentinelGroup,
    make_state: Callable[..., SentinelState],
    protocol: int,
    decode: bool,
) -> None:
    settings = ConnectionSettings(protocol=protocol, decode_responses=decode)
    state = make_state(
        redis_sentinel.sentinel_addresses[:1], data=settings, sentinel=settings, check_interval=0.1
    )
    assert state.discover() == redis_sentinel.primary().address
    assert sorted(state.refresh_replicas()) == sorted(r.address for r in redis_sentinel.replicas())
    changes = start_watching(state, redis_sentinel)
    since = changes.mark()
    time.sleep(0.6)  # several check intervals: PINGs on the subscriptions must be answered
    assert [kind for _, kind, _ in changes.calls[since:]] == []
    assert state.watcher_running


def test_concurrent_on_error_calls_collapse(
    redis_sentinel: SentinelGroup,
    make_state: Callable[..., SentinelState],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import smartcache.sync._sentinel as sentinel_module

    state = make_state(redis_sentinel.sentinel_addresses)
    state.discover()
    asks = []
    real_ask = sentinel_module.ask_sentinel

    def slow_ask(settings: Any, service: str, commands: Any) -> Any:
        asks.append(settings.address)
        time.sleep(0.05)  # widen the window in which the callers overlap
        return real_ask(settings, service, commands)

    monkeypatch.setattr(sentinel_module, "ask_sentinel", slow_ask)
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def call() -> None:
        barrier.wait()
        results.append(state.on_error(rx.ConnectionError("lost")))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [False] * 8  # the primary did not change
    assert 1 <= len(asks) <= 2  # one discovery (two if a caller arrived after it ended)


def test_separate_credentials_for_sentinels_and_data_nodes(
    redis_topologies: TopologyFactory, make_state: Callable[..., SentinelState]
) -> None:
    group = redis_topologies.sentinel(replicas=1, sentinels=1, password="data-secret")
    state = make_state(group.sentinel_addresses, data=ConnectionSettings(password="data-secret"))
    assert state.discover() == group.primary().address
    assert pool_role(state.primary_pool()) == "master"
    assert [p.settings.address for p in state.replica_pools()] == [group.replicas()[0].address]

    no_password = make_state(group.sentinel_addresses, discover_timeout=0.3)
    with pytest.raises(redis.AuthenticationError):  # at once: no other node would do better
        no_password.discover()


# -- following failovers ----------------------------------------------------------------------


def test_watcher_follows_a_forced_failover(
    redis_topologies: TopologyFactory, make_state: Callable[..., SentinelState]
) -> None:
    group = redis_topologies.sentinel()
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
    _, address = changes.wait("switch", since=since, timeout=15)
    assert address == new.address == state.primary_address
    assert old_pool.closed
    assert state.primary_pool() is not old_pool
    assert pool_role(state.primary_pool()) == "master"
    assert state.wait_until_writable(0)


def test_writes_are_held_during_a_forced_failover(
    redis_topologies: TopologyFactory,
    make_state: Callable[..., SentinelState],
    record_events: Callable[[SentinelGroup], EventRecorder],
) -> None:
    group = redis_topologies.sentinel()
    recorder = record_events(group)
    state = make_state(group.sentinel_addresses)
    state.discover()
    changes = start_watching(state, group)
    old = group.primary()
    assert state.wait_until_writable(0)

    acked: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set():
            if not state.wait_until_writable(10):
                continue
            pool = state.primary_pool()
            try:
                conn = pool.get()
            except rx.ConnectionError:
                continue
            try:
                conn.execute("RPUSH", "held-writes", i)
                acked.append(i)
            except (rx.ConnectionError, rx.ResponseError):
                pass
            finally:
                pool.release(conn)
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    try:
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
        stop.set()
        thread.join(15)
    ((t_release, ok),) = released
    assert ok
    # Writes stopped before the replica was told to stop replicating, and resumed only
    # after the promotion, at most 0.5 s after the first sentinel announced the switch.
    assert t_hold - t_try < 0.5
    assert t_hold < t_noone
    assert t_release >= t_promoted
    assert t_release <= t_switch + 0.5
    new_address = "{}:{}".format(*switch.split()[3:5])
    assert state.primary_address == new_address
    assert promoted.split()[1] == new_address
    assert role_of(new_address) == "master"
    group.wait_for_failover(old)
    # Nothing acknowledged was lost: every acked write is on the new primary.
    host, port = new_address.split(":")
    with redis.Redis(host, int(port)) as c:
        stored = {int(x) for x in c.lrange("held-writes", 0, -1)}
    assert acked and set(acked) <= stored
    print(
        f"\nforced failover: hold {t_hold - t_try:.3f}s after +try-failover, released "
        f"{t_release - t_switch:+.3f}s from first +switch-master, held {t_release - t_hold:.3f}s"
    )


def test_primary_sigkill_switch_follows_the_sentinels(
    redis_topologies: TopologyFactory,
    make_state: Callable[..., SentinelState],
    record_events: Callable[[SentinelGroup], EventRecorder],
) -> None:
    group = redis_topologies.sentinel()
    recorder = record_events(group)
    state = make_state(group.sentinel_addresses, check_interval=0.5)
    state.discover()
    changes = start_watching(state, group)
    old = group.primary()
    since = changes.mark()
    t_kill = time.monotonic()
    group.kill(old)
    t_state, address = changes.wait("switch", since=since, timeout=30)
    t_switch, _, data = recorder.first("+switch-master")
    assert address == "{}:{}".format(*data.split()[3:5])
    assert t_state <= t_switch + 0.5
    assert state.primary_address == address
    assert pool_role(state.primary_pool()) == "master"
    assert state.wait_until_writable(0)
    print(
        f"\nSIGKILL: sentinels switched {t_switch - t_kill:.3f}s after the kill, state "
        f"{t_state - t_switch:+.3f}s from the first +switch-master"
    )


def test_killed_replica_leaves_replica_pools_once_sdown(
    redis_topologies: TopologyFactory,
    make_state: Callable[..., SentinelState],
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


def _watcher_threads(service: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"smartcache-sentinel-{service}"]


def test_watcher_never_outlives_its_state(redis_sentinel: SentinelGroup) -> None:
    pools: list[ConnectionPool] = []
    state = SentinelState(
        redis_sentinel.sentinel_addresses,
        "mymaster",
        ConnectionSettings(),
        ConnectionSettings(),
        lambda s: pools.append(ConnectionPool(s)) or pools[-1],
    )
    state.discover()
    before = set(_watcher_threads("mymaster"))
    state.start_watcher()
    (thread,) = set(_watcher_threads("mymaster")) - before
    del state
    gc.collect()
    thread.join(3)
    assert not thread.is_alive()

    closed = SentinelState(
        redis_sentinel.sentinel_addresses,
        "mymaster",
        ConnectionSettings(),
        ConnectionSettings(),
        ConnectionPool,
    )
    closed.start_watcher()
    (thread,) = set(_watcher_threads("mymaster")) - before
    closed.close()
    assert not thread.is_alive()
    assert closed.wait_until_writable(0)
    with pytest.raises(redis.ConnectionError, match="closed"):
        closed.primary_pool()
    for pool in pools:
        pool.close()


def test_close_leaves_no_pool_open(redis_sentinel: SentinelGroup) -> None:
    # The watcher's first check discovers in its own thread; a close() racing with it must
    # not leave a pool behind.
    for _ in range(10):
        pools: list[ConnectionPool] = []

        def factory(settings: ConnectionSettings, pools: list[ConnectionPool] = pools) -> Any:
            pools.append(ConnectionPool(settings))
            return pools[-1]

        state = SentinelState(
            redis_sentinel.sentinel_addresses,
            "mymaster",
            ConnectionSettings(),
            ConnectionSettings(),
            factory,
        )
        state.start_watcher()
        state.close()
        assert all(p.closed for p in pools)
        with pytest.raises(redis.ConnectionError, match="closed"):
            state.primary_pool()


def test_forked_child_runs_its_own_watcher(
    redis_sentinel: SentinelGroup, make_state: Callable[..., SentinelState]
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
            ok = pool_role(pool) == "master" and state.watcher_running and not inherited
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    # The parent's watcher and subscriptions were not disturbed by the child.
    assert state.watcher_running
    assert not any(kind == "error" for _, kind, _ in changes.calls)
    assert state.discover() == redis_sentinel.primary().address
