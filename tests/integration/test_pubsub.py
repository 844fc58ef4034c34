"""Pub/sub on SmartClient and AsyncSmartClient, one suite for both (``client_factory``, see
``tests/integration/_dual.py``): redis-py's messages, handlers, listen(), sharding,
recovery after a killed connection, after resharding and after a failover, and Sentinel.

The tests at the end run in one world only, because the API they test is that world's:
``run_in_thread()`` (sync), ``run()`` and ``aclose()`` waking the readers (asyncio).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import pytest_asyncio
import redis
import redis.asyncio

from smartcache import key_slot
from smartcache.asyncio._pool import AsyncConnectionPool
from smartcache.asyncio._pubsub import AsyncPubSub
from smartcache.asyncio.client import AsyncSmartClient
from smartcache.sync._pubsub import PubSub
from smartcache.sync.client import SmartClient
from smartcache.testing import Cluster, SentinelGroup, Standalone
from smartcache.testing.pytest_plugin import TopologyFactory
from tests.integration._dual import SyncProxy

pytestmark = pytest.mark.dropin

DATA = ("message", "pmessage", "smessage")
TOPOLOGIES = [("standalone", 2), ("standalone", 3), ("cluster", 2), ("cluster", 3)]


def _topology_id(param: tuple[str, int]) -> str:
    return f"{param[0]}-resp{param[1]}"


@pytest.fixture(params=TOPOLOGIES, ids=_topology_id)
def client(
    request: pytest.FixtureRequest,
    client_factory: Any,
    redis_standalone: Standalone,
    redis_cluster: Cluster,
) -> Any:
    """A SmartClient, or an AsyncSmartClient behind a SyncProxy, on each topology."""
    kind, protocol = request.param
    url = redis_standalone.url if kind == "standalone" else redis_cluster.url
    return client_factory(url=url, protocol=protocol)


@pytest.fixture
def ns() -> str:
    """A fresh channel prefix: on a cluster, a PUBLISH from an earlier test can still be
    crossing the cluster bus when the next test subscribes to the same name."""
    return f"{uuid.uuid4().hex[:8]}:"


def _is_async(obj: Any) -> bool:
    return isinstance(obj, SyncProxy)


def _target(obj: Any) -> Any:
    """The object itself (the AsyncSmartClient or AsyncPubSub behind a SyncProxy)."""
    return obj._target if _is_async(obj) else obj


def _take(p: Any, count: int, *, sharded: bool = False) -> list[dict[str, Any]]:
    """The next ``count`` messages, each awaited for up to 5 s."""
    get = p.get_sharded_message if sharded else p.get_message
    out: list[dict[str, Any]] = []
    for _ in range(count):
        message = get(timeout=5.0)
        assert message is not None, f"message {len(out) + 1} of {count} never came: {out}"
        out.append(message)
    return out


def _owner(client: Any, name: str) -> str:
    """The address of the primary serving ``name``'s slot (the server, when standalone)."""
    router = _target(client)._router
    if router is None:
        kwargs = client.get_connection_kwargs()
        return f"{kwargs['host']}:{kwargs['port']}"
    slot_map = router.state.slot_map
    assert slot_map is not None
    return str(slot_map.primary_for_slot(key_slot(name)))


def _channels_on_distinct_nodes(client: Any, count: int, prefix: str = "") -> list[str]:
    """Channels whose slots are served by ``count`` different primaries (one when standalone)."""
    by_node: dict[str, str] = {}
    for i in range(10_000):
        name = f"{prefix}shard:{i}"
        by_node.setdefault(_owner(client, name), name)
        if len(by_node) == count:
            break
    return sorted(by_node.values())


def _publish_until(
    p: Any, publish: Callable[[], Any], channel: bytes, seconds: float = 15.0
) -> dict[str, Any]:
    """Publish and read until a message on ``channel`` arrives (it may be re-subscribing)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        publish()
        message = p.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None and message["type"] in DATA and message["channel"] == channel:
            return message
    raise AssertionError(f"no message arrived on {channel!r}")


def _read_until(
    p: Any, publish: Callable[[bytes], Any], wanted: set[bytes], seconds: float = 20.0
) -> list[dict[str, Any]]:
    """Publish and read (tolerating connection errors) until each wanted channel delivered."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while wanted and time.monotonic() < deadline:
        try:
            for channel in wanted:
                publish(channel)
            message = p.get_message(timeout=0.2)
        except redis.exceptions.ConnectionError:
            continue  # a node is down and not yet replaced: users see this error too
        if message is not None:
            seen.append(message)
            if message["type"] in DATA:
                wanted.discard(message["channel"])
    assert not wanted, f"no message on {wanted}; saw {[m['type'] for m in seen][:20]}"
    return seen


def _sequence(p: Any, publisher: Any, ping: bool) -> list[dict[str, Any]]:
    p.subscribe("cmp:a", "cmp:b")
    p.psubscribe("cmp:p*")
    first = _take(p, 3)
    publisher.publish("cmp:a", "one")
    publisher.publish("cmp:pX", "two")
    second = _take(p, 2)
    p.unsubscribe("cmp:a")
    p.punsubscribe()
    third = _take(p, 2)
    pongs = []
    if ping:
        p.ping()
        p.ping("hi")
        pongs = _take(p, 2)
    p.unsubscribe()
    last = _take(p, 1)
    assert p.get_message(timeout=0.05) is None and not p.subscribed
    return first + second + third + pongs + last


@pytest.mark.parametrize("decode", [False, True])
@pytest.mark.parametrize("protocol", [2, 3])
def test_messages_match_redis_py(
    redis_standalone: Standalone,
    client_factory: Any,
    redis_py_factory: Any,
    protocol: int,
    decode: bool,
) -> None:
    # redis-py cannot parse a RESP3 PING reply when decoding ("PONG"[0] becomes the type).
    redis_py_pings = not (protocol == 3 and decode)
    url = redis_standalone.url
    r = redis_py_factory(url=url, protocol=protocol, decode_responses=decode)
    with r.pubsub() as rp:
        theirs = _sequence(rp, r, redis_py_pings)
    c = client_factory(url=url, protocol=protocol, decode_responses=decode)
    with c.pubsub() as p:
        ours = _sequence(p, c, True)
    pongs = [m for m in ours if m["type"] == "pong"]
    assert [m["data"] for m in pongs] == (["", "hi"] if decode else [b"", b"hi"])
    if not redis_py_pings:
        ours = [m for m in ours if m["type"] != "pong"]
    assert ours == theirs
    assert ours[3]["data"] == ("one" if decode else b"one")


def test_subscribe_publish_unsubscribe(client: Any, ns: str) -> None:
    with client.pubsub() as p:
        assert not p.subscribed
        assert p.get_message() is None
        p.subscribe(f"{ns}news")
        assert p.subscribed
        assert _take(p, 1) == [
            {"type": "subscribe", "pattern": None, "channel": f"{ns}news".encode(), "data": 1}
        ]
        client.publish(f"{ns}news", "hello")  # on a cluster it counts local receivers only
        assert _take(p, 1) == [
            {"type": "message", "pattern": None, "channel": f"{ns}news".encode(), "data": b"hello"}
        ]
        p.psubscribe(f"{ns}sport.*")
        assert _take(p, 1)[0]["type"] == "psubscribe"  # subscribed before we publish
        client.publish(f"{ns}sport.chess", "e4")
        assert _take(p, 1)[0] == {
            "type": "pmessage",
            "pattern": f"{ns}sport.*".encode(),
            "channel": f"{ns}sport.chess".encode(),
            "data": b"e4",
        }
        assert set(p.channels) == {f"{ns}news".encode()} and set(p.patterns) == {
            f"{ns}sport.*".encode()
        }
        conn = p.connection
        assert conn is not None
        if _is_async(client):
            # pub/sub has a dedicated connection, never the node's shared auto-pipelined one
            assert all(pool._shared is not conn for pool in _pools(_target(client)))
        p.unsubscribe(f"{ns}news")
        p.punsubscribe(f"{ns}sport.*")
        assert [(m["type"], m["data"]) for m in _take(p, 2)] == [
            ("unsubscribe", 1),
            ("punsubscribe", 0),
        ]
        assert not p.subscribed and p.channels == {} and p.patterns == {}


def test_publish_and_pubsub_counts_are_the_clusters(client: Any) -> None:
    """PUBLISH counts the subscriber and PUBSUB answers for the whole cluster, for channels
    on every primary (a pub/sub subscribes where redis-py's ClusterPubSub does: at the
    node of its first channel's slot, where PUBLISH to that channel is sent)."""
    ns = f"{uuid.uuid4().hex[:8]}:"
    channels = [f"{ns}{name}" for name in ("alpha", "bravo", "echo", "charlie")]
    for channel in channels:
        with client.pubsub() as p:
            p.subscribe(channel)
            _take(p, 1)
            assert client.publish(channel, "m") == 1, channel
            assert [m["type"] for m in _take(p, 1)] == ["message"]
            assert client.pubsub_numsub(channel) == [(channel.encode(), 1)]
            assert channel.encode() in client.pubsub_channels(f"{ns}*")
            p.psubscribe(f"{ns}pattern*")
            # the server has the pattern once its confirmation arrived
            assert [m["type"] for m in _take(p, 1)] == ["psubscribe"]
            assert client.pubsub_numpat() >= 1


def test_handlers_and_ignore_subscribe_messages(client: Any, ns: str) -> None:
    received: list[dict[str, Any]] = []

    async def async_handler(message: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        received.append(message)

    # asyncio's handlers may be coroutine functions too
    pattern_handler: Any = async_handler if _is_async(client) else received.append
    with client.pubsub(ignore_subscribe_messages=True) as p:
        p.subscribe(**{f"{ns}h:chan": received.append})
        p.psubscribe(**{f"{ns}h:pat*": pattern_handler})
        p.subscribe(f"{ns}h:plain")
        p.ping()  # its pong (never ignored) comes after the three ignored confirmations
        pong = [p.get_message(timeout=5.0) for _ in range(4)][-1]
        assert pong is not None and pong["type"] == "pong"
        client.publish(f"{ns}h:chan", "1")
        client.publish(f"{ns}h:pattern", "2")
        client.publish(f"{ns}h:plain", "3")
        messages = [p.get_message(timeout=5.0) for _ in range(3)]
        plain = [m for m in messages if m is not None]
        assert plain == [
            {"type": "message", "pattern": None, "channel": f"{ns}h:plain".encode(), "data": b"3"}
        ]
    # On a cluster the two PUBLISHes may run on different nodes: no order between them.
    assert sorted((m["type"], m["channel"], m["data"]) for m in received) == [
        ("message", f"{ns}h:chan".encode(), b"1"),
        ("pmessage", f"{ns}h:pattern".encode(), b"2"),
    ]


def test_listen_and_decode_responses(client: Any, client_factory: Any, ns: str) -> None:
    kwargs = client.get_connection_kwargs()
    protocol = kwargs.get("protocol")
    url = f"redis://{kwargs['host']}:{kwargs['port']}"
    c = client_factory(url=url, protocol=protocol, decode_responses=True)
    with c.pubsub() as p:
        p.subscribe(f"{ns}dec:ch")
        stream = p.listen()
        assert next(stream) == {
            "type": "subscribe",
            "pattern": None,
            "channel": f"{ns}dec:ch",
            "data": 1,
        }
        c.publish(f"{ns}dec:ch", "é")
        assert next(stream) == {
            "type": "message",
            "pattern": None,
            "channel": f"{ns}dec:ch",
            "data": "é",
        }
        assert set(p.channels) == {f"{ns}dec:ch"}
        p.unsubscribe()
        assert next(stream)["type"] == "unsubscribe"
        assert list(stream) == []  # listen() ends once nothing is subscribed


@pytest.mark.parametrize("sharded", [True, False], ids=["get_sharded_message", "get_message"])
def test_sharded_pubsub(client: Any, ns: str, sharded: bool) -> None:
    channels = [
        *_channels_on_distinct_nodes(client, 3, ns),
        f"{ns}shard:{{same}}a",
        f"{ns}shard:{{same}}b",
    ]
    with client.pubsub() as p:
        p.ssubscribe(*channels)
        confirmations = _take(p, len(channels), sharded=sharded)
        assert {m["type"] for m in confirmations} == {"ssubscribe"}
        assert {m["channel"] for m in confirmations} == {c.encode() for c in channels}
        if client.is_cluster:
            assert len({_owner(client, c) for c in channels}) >= 2
            assert len({link.address for link in p._shard_links.values()}) == 3
        for i, channel in enumerate(channels):
            assert client.spublish(channel, str(i)) == 1
        got = _take(p, len(channels), sharded=sharded)
        assert sorted((m["type"], m["channel"], m["data"]) for m in got) == sorted(
            ("smessage", c.encode(), str(i).encode()) for i, c in enumerate(channels)
        )
        assert p.get_sharded_message(timeout=0.05) is None
        p.sunsubscribe(channels[0])
        assert _take(p, 1, sharded=sharded)[0]["type"] == "sunsubscribe"
        assert set(p.shard_channels) == {c.encode() for c in channels[1:]}
        p.sunsubscribe()
        got = _take(p, len(channels) - 1, sharded=sharded)
        assert {m["type"] for m in got} == {"sunsubscribe"}
        assert not p.subscribed and p.shard_channels == {}


def _kill_pubsub_clients(addresses: list[tuple[str, int]]) -> int:
    killed = 0
    for host, port in addresses:
        with redis.Redis(host=host, port=port) as admin:
            killed += int(admin.client_kill_filter(_type="pubsub"))
    return killed


def test_resubscribes_after_connection_loss(
    client: Any, ns: str, redis_standalone: Standalone, redis_cluster: Cluster
) -> None:
    addresses = (
        redis_cluster.startup_nodes
        if client.is_cluster
        else [(redis_standalone.host, redis_standalone.port)]
    )
    shard = _channels_on_distinct_nodes(client, 2, ns)
    with client.pubsub() as p:
        p.subscribe(f"{ns}rs:chan")
        p.psubscribe(f"{ns}rs:pat*")
        p.ssubscribe(*shard)
        _take(p, 2 + len(shard))
        assert _kill_pubsub_clients(addresses) >= 1 + len(shard) - (not client.is_cluster)
        # Subscribing on a node whose connection just died must not lose its other channels.
        node = _owner(client, shard[0])
        extra = next(
            n
            for n in (f"{ns}rs:extra:{i}" for i in range(10_000))
            if _owner(client, n) == node and key_slot(n) != key_slot(shard[0])
        )
        p.ssubscribe(extra)
        data = [
            _publish_until(
                p, lambda: client.publish(f"{ns}rs:chan", "back"), f"{ns}rs:chan".encode()
            )
        ]
        assert (data[0]["type"], data[0]["data"]) == ("message", b"back")
        data.append(
            _publish_until(
                p, lambda: client.publish(f"{ns}rs:pattern", "x"), f"{ns}rs:pattern".encode()
            )
        )
        assert (data[1]["type"], data[1]["pattern"]) == ("pmessage", f"{ns}rs:pat*".encode())
        for channel in [*shard, extra]:
            message = _publish_until(
                p, lambda ch=channel: client.spublish(ch, "s"), channel.encode()
            )
            assert message["type"] == "smessage"
            data.append(message)
        assert {m["type"] for m in data} == {"message", "pmessage", "smessage"}
        assert set(p.channels) == {f"{ns}rs:chan".encode()}
        assert set(p.patterns) == {f"{ns}rs:pat*".encode()}
        assert set(p.shard_channels) == {c.encode() for c in [*shard, extra]}


@pytest.mark.parametrize("protocol", [2, 3])
def test_shard_channels_follow_slot_migration(
    redis_topologies: TopologyFactory, client_factory: Any, protocol: int
) -> None:
    cluster = redis_topologies.cluster(primaries=2, replicas=0)
    source, target = cluster.primaries()
    owned = set(cluster.slots_of(source))
    tag = next(t for t in (f"{{mig{i}}}" for i in range(10_000)) if key_slot(t) in owned)
    first, second = f"{tag}a", f"{tag}b"
    c = client_factory(startup_nodes=cluster.startup_nodes, protocol=protocol)
    with c.pubsub() as p:
        p.ssubscribe(first)
        assert _take(p, 1, sharded=True)[0]["type"] == "ssubscribe"
        cluster.migrate_slots(source, target, slots=[key_slot(tag)])
        # The client's slot map is stale: this SSUBSCRIBE goes to the old owner, gets MOVED.
        assert _owner(c, tag) == source.address
        p.ssubscribe(second)

        # The old owner drops `first` (an unasked sunsubscribe); we follow the slot.
        seen = _read_until(p, lambda ch: c.spublish(ch, "x"), {first.encode(), second.encode()})
        assert "sunsubscribe" in [m["type"] for m in seen]
        assert set(p.shard_channels) == {first.encode(), second.encode()}
        assert set(p._shard_links) == {target.address}


def test_subscriptions_survive_primary_failover(
    redis_topologies: TopologyFactory, client_factory: Any
) -> None:
    cluster = redis_topologies.cluster(primaries=3, replicas=1, node_timeout_ms=1000)
    victim = cluster.primaries()[0]
    victim_slots = set(cluster.slots_of(victim))
    channel = next(n for n in (f"fo:{i}" for i in range(10_000)) if key_slot(n) in victim_slots)
    c = client_factory(startup_nodes=cluster.startup_nodes)
    with c.pubsub() as p:
        p.subscribe("fo:classic")
        p.ssubscribe(channel)
        _take(p, 2)
        cluster.kill(victim)
        cluster.wait_for_failover(victim)

        def publish(name: bytes) -> None:
            if name == b"fo:classic":
                c.publish(name, "1")
            else:
                c.spublish(name, "2")

        _read_until(p, publish, {b"fo:classic", channel.encode()}, seconds=30.0)
        assert victim.address not in p._shard_links


def test_push_handler_func_receives_resp3_pushes(
    redis_standalone: Standalone, client_factory: Any, ns: str
) -> None:
    pushes: list[list[Any]] = []
    c = client_factory(url=redis_standalone.url, protocol=3)
    with c.pubsub(push_handler_func=pushes.append) as p:
        p.subscribe(f"{ns}push")
        assert p.get_message(timeout=5.0) is None  # went to the handler instead
        c.publish(f"{ns}push", "x")
        assert p.get_message(timeout=5.0) is None
    assert pushes == [
        [b"subscribe", f"{ns}push".encode(), 1],
        [b"message", f"{ns}push".encode(), b"x"],
    ]


def test_client_pubsub_method(
    redis_standalone: Standalone, redis_cluster: Cluster, client_factory: Any
) -> None:
    for url in (redis_standalone.url, redis_cluster.url):
        client = client_factory(url=url)
        p = client.pubsub(ignore_subscribe_messages=True)
        assert isinstance(_target(p), AsyncPubSub if _is_async(client) else PubSub)
        p.subscribe("wired:channel")
        client.publish("wired:channel", "hello")
        deadline = time.monotonic() + 5
        message = None
        while message is None and time.monotonic() < deadline:
            message = p.get_message(timeout=0.5)
        assert message is not None and message["data"] == b"hello"
        p.close()


def test_pubsub_on_sentinel_follows_the_primary(
    redis_sentinel: SentinelGroup, client_factory: Any, ns: str
) -> None:
    c = client_factory(sentinels=redis_sentinel.sentinel_addresses, service_name="mymaster")
    with c.pubsub() as p:
        p.subscribe(f"{ns}sentinel")
        assert _take(p, 1)[0]["type"] == "subscribe"
        assert c.publish(f"{ns}sentinel", "m") == 1  # the same server as the subscriber
        assert _take(p, 1)[0]["data"] == b"m"


# -- one world only: the API tested here is only that world's -------------------------------


@pytest.fixture(params=TOPOLOGIES, ids=_topology_id)
def sync_client(
    request: pytest.FixtureRequest, redis_standalone: Standalone, redis_cluster: Cluster
) -> Iterator[SmartClient]:
    kind, protocol = request.param
    url = redis_standalone.url if kind == "standalone" else redis_cluster.url
    with SmartClient.from_url(url, protocol=protocol) as c:
        yield c


@pytest_asyncio.fixture(params=TOPOLOGIES, ids=_topology_id)
async def async_client(
    request: pytest.FixtureRequest, redis_standalone: Standalone, redis_cluster: Cluster
) -> AsyncIterator[AsyncSmartClient]:
    kind, protocol = request.param
    url = redis_standalone.url if kind == "standalone" else redis_cluster.url
    async with AsyncSmartClient.from_url(url, protocol=protocol) as c:
        yield c


def test_sync_only_run_in_thread(sync_client: SmartClient, ns: str) -> None:
    client = sync_client
    got: list[dict[str, Any]] = []
    arrived = threading.Event()

    def handler(message: dict[str, Any]) -> None:
        got.append(message)
        arrived.set()

    p = PubSub(client)
    with pytest.raises(redis.exceptions.PubSubError):
        p.subscribe(f"{ns}t:bare")
        p.run_in_thread()
    p.reset()
    p.subscribe(**{f"{ns}t:chan": handler})
    thread = p.run_in_thread(sleep_time=0.05, daemon=True)
    try:
        deadline = time.monotonic() + 10
        while not arrived.wait(0.1) and time.monotonic() < deadline:
            client.publish(f"{ns}t:chan", "ping")
        assert arrived.is_set()
        assert got[0]["channel"] == f"{ns}t:chan".encode() and got[0]["data"] == b"ping"
    finally:
        thread.stop()
        thread.join(timeout=5)
    assert not thread.is_alive()
    assert p.connection is None  # the worker closed the pubsub on its way out


@pytest.mark.asyncio
async def test_async_only_run_calls_handlers_until_cancelled(
    async_client: AsyncSmartClient, ns: str
) -> None:
    client = async_client
    got: list[dict[str, Any]] = []
    arrived = asyncio.Event()

    async def handler(message: dict[str, Any]) -> None:
        got.append(message)
        arrived.set()

    async with AsyncPubSub(client) as p:
        await p.subscribe(f"{ns}r:bare")
        with pytest.raises(redis.exceptions.PubSubError):
            await p.run()
        await p.aclose()
        await p.subscribe(**{f"{ns}r:chan": handler})
        task = asyncio.create_task(p.run(poll_timeout=0.1))
        async with asyncio.timeout(10):
            while not arrived.is_set():
                await client.publish(f"{ns}r:chan", "ping")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(arrived.wait(), 0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert got[0]["channel"] == f"{ns}r:chan".encode() and got[0]["data"] == b"ping"


@pytest.mark.asyncio
async def test_async_only_aclose_releases_everything_and_wakes_readers(
    async_client: AsyncSmartClient, ns: str
) -> None:
    client = async_client
    p = AsyncPubSub(client)
    shard = _channels_on_distinct_nodes(client, 2, ns)
    await p.subscribe(f"{ns}lc:chan")
    await p.ssubscribe(*shard)
    for _ in range(1 + len(shard)):
        assert await p.get_message(timeout=5.0) is not None
    tasks_before = asyncio.all_tasks()
    reader = asyncio.create_task(p.get_message(timeout=None))
    stream = asyncio.create_task(_collect(p.listen()))
    async with asyncio.timeout(5):
        while p._readers < 2:  # both wait on the queue
            await asyncio.sleep(0)
        await p.aclose()
        assert await reader is None
        assert await stream == []  # listen() ends: nothing is subscribed any more
    assert p.connection is None and not p.subscribed and not p._shard_links
    assert sum(pool._in_use for pool in _pools(client)) == 0
    assert asyncio.all_tasks() == tasks_before  # no task of ours outlives aclose()
    # still usable after aclose(), as redis.asyncio's
    await p.subscribe(f"{ns}lc:again")
    message = await p.get_message(timeout=5.0)
    assert message is not None and message["type"] == "subscribe"
    await p.aclose()


def _pools(client: AsyncSmartClient) -> list[AsyncConnectionPool]:
    if client._pool is not None:
        return [client._pool]
    assert client._router is not None
    return list(client._router.state.pools.values())


async def _collect(stream: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m async for m in stream]
