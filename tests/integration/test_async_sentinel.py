"""AsyncSentinelState and AsyncSentinelExecutor against real Sentinel groups.

Discovery and ROLE confirmation read the shared ``redis_sentinel`` group; failovers and
kills use private groups (``redis_topologies.sentinel()``). Timings are measured from the
sentinels' own events (a recorder subscribed to every sentinel) and the state's listener.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio
import redis
import redis.exceptions as rx

from smartcache import DurabilityError, NoReachableNodeError
from smartcache.asyncio._pool import AsyncConnectionPool
from smartcache.asyncio._sentinel import AsyncSentinelExecutor, AsyncSentinelState
from smartcache.core.commands import CommandTable
from smartcache.core.retry import RetryPolicy
from smartcache.testing import SentinelGroup
from smartcache.testing.pytest_plugin import TopologyFactory
from smartcache.wire import ConnectionSettings
from tests.integration._sentinel_helpers import EventRecorder, FakeSentinel, dead_address

Address = tuple[str, int]
MakeState = Callable[..., AsyncSentinelState]


class AsyncChanges:
    """Every listener call of an AsyncSentinelState, with its time; awaitable."""

    def __init__(self, state: AsyncSentinelState) -> None:
        self.calls: list[tuple[float, str, Any]] = []
        self._changed = asyncio.Event()
        state.add_listener(self)

    def __call__(self, kind: str, value: Any) -> None:
        self.calls.append((time.monotonic(), kind, value))
        self._changed.set()

    def mark(self) -> int:
        return len(self.calls)

    async def wait(
        self,
        kind: str,
        match: Callable[[Any], bool] = lambda v: True,
        *,
        since: int = 0,
        timeout: float = 30.0,
    ) -> tuple[float, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for t, k, v in self.calls[since:]:
                    if k == kind and match(v):
                        return t, v
                self._changed.clear()
                await self._changed.wait()


@pytest_asyncio.fixture
async def make_state() -> AsyncIterator[MakeState]:
    states: list[AsyncSentinelState] = []

    def make(
        sentinels: list[Address],
        service: str = "mymaster",
        *,
        data: ConnectionSettings | None = None,
        sentinel: ConnectionSettings | None = None,
        **kwargs: Any,
    ) -> AsyncSentinelState:
        state = AsyncSentinelState(
            sentinels,
            service,
            data or ConnectionSettings(),
            sentinel or ConnectionSettings(),
            lambda settings: AsyncConnectionPool(settings, max_connections=16, timeout=5.0),
            **kwargs,
        )
        states.append(state)
        return state

    yield make
    for state in states:
        await state.aclose()


@pytest.fixture
def record_events() -> Any:
    recorders: list[EventRecorder] = []

    def record(group: SentinelGroup) -> EventRecorder:
        recorders.append(EventRecorder(group.sentinel_addresses))
        return recorders[-1]

    yield record
    for recorder in recorders:
        recorder.close()


async def start_watching(state: AsyncSentinelState, group: SentinelGroup) -> AsyncChanges:
    """Start the watcher and wait until it hears every sentinel of ``group``."""
    changes = AsyncChanges(state)
    state.start_watcher()
    for host, port in group.sentinel_addresses:
        await changes.wait("subscribed", lambda v, a=f"{host}:{port}": v == a, timeout=10)
    return changes


async def role(pool: AsyncConnectionPool) -> str:
    reply = await pool.connection.execute("ROLE")
    return str(reply[0].decode() if isinstance(reply[0], bytes) else reply[0])


def executor(state: AsyncSentinelState, **kwargs: Any) -> AsyncSentinelExecutor:
    return AsyncSentinelExecutor(state, RetryPolicy(), CommandTable.fallback(), **kwargs)


# -- discovery -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_discovers_the_primary_from_one_sentinel(
    redis_sentinel: SentinelGroup, make_state: MakeState
) -> None:
    first = redis_sentinel.sentinel_addresses[1]
    state = make_state([first])
    assert await state.discover() == redis_sentinel.primary().address
    assert state.primary_address == redis_sentinel.primary().address
    assert state.sentinels[0] == first
    assert sorted(state.sentinels) == sorted(redis_sentinel.sentinel_addresses)
    assert await role(await state.primary_pool()) == "master"
    pools = await state.replica_pools()
    assert sorted(p.settings.address for p in pools) == sorted(
        r.address for r in redis_sentinel.replicas()
    )
    assert all([await role(p) == "slave" for p in pools])


@pytest.mark.asyncio
async def test_dead_or_unknown_is_refused_listing_every_address(
    redis_sentinel: SentinelGroup, make_state: MakeState
) -> None:
    dead = [dead_address(), dead_address()]
    with pytest.raises(NoReachableNodeError) as info:
        await make_state(dead).discover()
    assert set(info.value.addresses) == {f"{h}:{p}" for h, p in dead}
    unknown = make_state(redis_sentinel.sentinel_addresses[:1], "no-such-service")
    with pytest.raises(NoReachableNodeError, match="does not monitor"):
        await unknown.discover()
    live = make_state([dead[0], redis_sentinel.sentinel_addresses[0]])
    assert await live.discover() == redis_sentinel.primary().address
    assert live.sentinels[0] == redis_sentinel.sentinel_addresses[0]


@pytest.mark.asyncio
async def test_role_confirmation_refuses_a_replica(
    redis_sentinel: SentinelGroup, make_state: MakeState
) -> None:
    replica = redis_sentinel.replicas()[0]
    fake = FakeSentinel((replica.host, replica.port))
    try:
        proto2 = ConnectionSettings(protocol=2)
        alone = make_state([fake.address], sentinel=proto2, discover_timeout=0.3)
        with pytest.raises(NoReachableNodeError, match="ROLE says it is a replica") as info:
            await alone.discover()
        assert replica.address in info.value.addresses
        assert alone.primary_address is None

        both = make_state([fake.address, redis_sentinel.sentinel_addresses[0]], sentinel=proto2)
        asked = fake.questions
        assert await both.discover() == redis_sentinel.primary().address
        assert fake.questions > asked  # it was asked first, and its answer refused
        assert both.sentinels[0] == redis_sentinel.sentinel_addresses[0]
    finally:
        fake.close()


@pytest.mark.asyncio
async def test_concurrent_discoveries_collapse(
    redis_sentinel: SentinelGroup, make_state: MakeState
) -> None:
    state = make_state(redis_sentinel.sentinel_addresses)
    pools: list[AsyncConnectionPool] = await asyncio.gather(
        *(state.primary_pool() for _ in range(20))
    )
    assert len({id(p) for p in pools}) == 1
    assert (
        await asyncio.gather(*(state.on_error(rx.ConnectionError()) for _ in range(8)))
        == [False] * 8
    )
    assert await state.primary_pool() is pools[0]


@pytest.mark.asyncio
@pytest.mark.parametrize(("protocol", "decode"), [(2, False), (3, True)])
async def test_resp2_resp3_subscriptions_stay_healthy(
    redis_sentinel: SentinelGroup, make_state: MakeState, protocol: int, decode: bool
) -> None:
    settings = ConnectionSettings(protocol=protocol, decode_responses=decode)
    state = make_state(
        redis_sentinel.sentinel_addresses[:1], data=settings, sentinel=settings, check_interval=0.1
    )
    assert await state.discover() == redis_sentinel.primary().address
    assert sorted(await state.refresh_replicas()) == sorted(
        r.address for r in redis_sentinel.replicas()
    )
    changes = await start_watching(state, redis_sentinel)
    since = changes.mark()
    await asyncio.sleep(0.6)  # several check intervals: PINGs must be answered
    assert [kind for _, kind, _ in changes.calls[since:]] == []
    assert state.watcher_running


# -- executor on a stable group --------------------------------------------------------------


@pytest.mark.asyncio
async def test_executor_commands_replica_reads_and_wait(
    redis_sentinel: SentinelGroup, make_state: MakeState
) -> None:
    state = make_state(redis_sentinel.sentinel_addresses)
    run = executor(state)
    assert await run.execute(("SET", "asn:k", "v")) == b"OK"
    assert await run.execute(("GET", "asn:k")) == b"v"
    with pytest.raises(rx.ResponseError, match="WRONGTYPE"):
        await run.execute(("LPUSH", "asn:k", "x"))

    durable = executor(state, wait_replicas=2, read_from="replica")
    assert await durable.execute(("SET", "asn:r", "v")) == b"OK"  # both replicas have it
    for proc in redis_sentinel.data_nodes:
        with proc.client() as admin:
            admin.config_resetstat()
    for _ in range(20):
        assert await durable.execute(("GET", "asn:r")) == b"v"
    hits = set()
    for proc in redis_sentinel.data_nodes:
        with proc.client() as admin:
            if admin.info("commandstats").get("cmdstat_get", {}).get("calls", 0):
                hits.add(proc.address)
    assert hits and hits <= {r.address for r in redis_sentinel.replicas()}

    too_many = executor(state, wait_replicas=3, wait_timeout_ms=100)
    with pytest.raises(DurabilityError) as err:
        await too_many.execute(("SET", "asn:d", "v"))
    assert err.value.replicas == 2 and err.value.wanted == 3
    assert await run.execute(("DEL", "asn:k", "asn:r", "asn:d")) == 3


# -- following failovers ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_watcher_follows_a_forced_failover_within_half_a_second(
    redis_topologies: TopologyFactory,
    make_state: MakeState,
    record_events: Callable[[SentinelGroup], EventRecorder],
) -> None:
    group = redis_topologies.sentinel()
    recorder = record_events(group)
    state = make_state(group.sentinel_addresses[:1])
    await state.discover()
    old_pool = await state.primary_pool()
    changes = await start_watching(state, group)
    since = changes.mark()
    new = await asyncio.to_thread(group.failover)
    t_state, address = await changes.wait("switch", since=since, timeout=15)
    t_switch, _, data = recorder.first("+switch-master")
    assert address == new.address == state.primary_address
    assert address == "{}:{}".format(*data.split()[3:5])
    assert t_state <= t_switch + 0.5
    assert await role(await state.primary_pool()) == "master"
    assert state.writable
    async with asyncio.timeout(5):
        while not old_pool.closed:  # retired once its in-flight commands are answered
            await asyncio.sleep(0.01)
    print(f"\nasync forced failover: state switched {t_state - t_switch:+.3f}s from +switch-master")


@pytest.mark.asyncio
async def test_writes_held_during_a_forced_failover_lose_nothing(
    redis_topologies: TopologyFactory,
    make_state: MakeState,
    record_events: Callable[[SentinelGroup], EventRecorder],
) -> None:
    group = redis_topologies.sentinel()
    recorder = record_events(group)
    state = make_state(group.sentinel_addresses)
    await state.discover()
    changes = await start_watching(state, group)
    run = executor(state)
    await run.execute(("SET", "ff:counter", 0))
    acked: list[int] = []
    errors: list[BaseException] = []
    stop = asyncio.Event()

    async def writer() -> None:
        while not stop.is_set():
            try:
                acked.append(int(await run.execute(("INCR", "ff:counter"))))
            except rx.RedisError as exc:
                errors.append(exc)
                await asyncio.sleep(0.01)

    tasks = [asyncio.create_task(writer()) for _ in range(8)]
    await asyncio.sleep(0.2)  # the load is running
    since = changes.mark()
    new = await asyncio.to_thread(group.failover)  # the old primary keeps running
    await asyncio.sleep(1.0)  # keep writing through and after the switch
    stop.set()
    await asyncio.gather(*tasks)
    with new.client() as admin:
        final = int(admin.get("ff:counter") or 0)
    t_try, _, _ = recorder.first("+try-failover")
    t_noone, _, _ = recorder.first("+failover-state-send-slaveof-noone")
    t_switch, _, _ = recorder.first("+switch-master")
    t_hold, _ = await changes.wait("failover", lambda v: not v.writable, since=since)
    t_release, _ = await changes.wait("switch", since=since)
    assert errors == [], [f"{type(e).__name__}: {e}" for e in errors[:3]]
    assert len(acked) == len(set(acked)) > 100
    assert max(acked) == final  # every acknowledged INCR is on the new primary
    assert t_hold < t_noone
    assert t_release <= t_switch + 0.5
    print(
        f"\nasync forced failover, 8 INCR tasks: {len(acked)} acknowledged, "
        f"{max(acked) - final} lost; hold {t_hold - t_try:.3f}s after +try-failover, "
        f"released {t_release - t_switch:+.3f}s from +switch-master"
    )


@pytest.mark.asyncio
async def test_primary_sigkill_zero_errors_for_idempotent_writes(
    redis_topologies: TopologyFactory,
    make_state: MakeState,
    record_events: Callable[[SentinelGroup], EventRecorder],
) -> None:
    group = redis_topologies.sentinel()
    recorder = record_events(group)
    state = make_state(group.sentinel_addresses, check_interval=0.5)
    await state.discover()
    changes = await start_watching(state, group)
    run = executor(state, wait_replicas=1, wait_timeout_ms=500)
    acked: list[tuple[float, str]] = []
    errors: list[BaseException] = []
    stop = asyncio.Event()

    async def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            key = f"sk:{n}:{i}"
            try:
                await run.execute(("SET", key, key))
            except rx.RedisError as exc:
                errors.append(exc)
                return
            acked.append((time.monotonic(), key))

    tasks = [asyncio.create_task(writer(n)) for n in range(4)]
    await asyncio.sleep(0.3)
    since = changes.mark()
    t_kill = time.monotonic()
    group.kill(group.primary())
    t_state, _ = await changes.wait("switch", since=since, timeout=30)
    t_switch, _, _ = recorder.first("+switch-master")
    async with asyncio.timeout(10):
        while sum(t > t_switch for t, _ in acked) < 50 and not errors:
            await asyncio.sleep(0.01)
    stop.set()
    await asyncio.gather(*tasks)
    assert errors == [], [f"{type(e).__name__}: {e}" for e in errors[:3]]
    first_after = min(t for t, _ in acked if t > t_switch)
    assert first_after - t_switch < 0.5
    assert t_state <= t_switch + 0.5
    keys = [key for _, key in acked]
    values = [await run.execute(("GET", key)) for key in keys]
    assert [k for k, v in zip(keys, values, strict=True) if v != k.encode()] == []
    print(
        f"\nasync SIGKILL: sentinels switched {t_switch - t_kill:.2f}s after the kill, state "
        f"{t_state - t_switch:+.3f}s from +switch-master, first write "
        f"{(first_after - t_switch) * 1000:.0f} ms after it; {len(keys)} writes, 0 errors"
    )


# -- lifecycle -------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_aclose_cancels_every_task(redis_sentinel: SentinelGroup) -> None:
    before = asyncio.all_tasks()
    state = AsyncSentinelState(
        redis_sentinel.sentinel_addresses,
        "mymaster",
        ConnectionSettings(),
        ConnectionSettings(),
        AsyncConnectionPool,
        check_interval=0.2,
    )
    changes = await start_watching(state, redis_sentinel)
    await executor(state).execute(("PING",))
    watcher = state.watcher
    assert watcher is not None
    assert len(watcher.tasks) == 1 + len(redis_sentinel.sentinel_addresses)
    assert len(asyncio.all_tasks() - before) >= 4
    await state.aclose()
    assert all(t.done() for t in watcher.tasks)
    assert asyncio.all_tasks() - before == set()
    assert not state.watcher_running
    assert await state.wait_until_writable(0)
    with pytest.raises(redis.ConnectionError, match="closed"):
        await state.primary_pool()
    assert not any(kind == "error" for _, kind, _ in changes.calls)
    await state.aclose()  # idempotent


@pytest.mark.asyncio
async def test_watcher_never_outlives_a_collected_state(redis_sentinel: SentinelGroup) -> None:
    before = asyncio.all_tasks()
    state = AsyncSentinelState(
        redis_sentinel.sentinel_addresses,
        "mymaster",
        ConnectionSettings(),
        ConnectionSettings(),
        AsyncConnectionPool,
    )
    await state.discover()
    changes = await start_watching(state, redis_sentinel)
    assert changes.calls
    tasks = asyncio.all_tasks() - before
    assert tasks
    del state
    async with asyncio.timeout(5):
        while not all(t.done() for t in tasks):
            gc.collect()  # a task may hold it for a moment (a replica refresh under way)
            await asyncio.sleep(0.01)
