"""AsyncPubSub on AsyncSmartClient: redis.asyncio's messages, handlers, run(), sharding,
recovery after a killed connection and after resharding, and a clean close."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import pytest_asyncio
import redis
import redis.asyncio

from smartcache import key_slot
from smartcache.asyncio._pool import AsyncConnectionPool
from smartcache.asyncio._pubsub import AsyncPubSub
from smartcache.asyncio.client import AsyncSmartClient
from smartcache.testing import Cluster, Standalone
from smartcache.testing.pytest_plugin import TopologyFactory

pytestmark = [pytest.mark.asyncio, pytest.mark.dropin]

DATA = ("message", "pmessage", "smessage")


@pytest_asyncio.fixture(
    params=[("standalone", 2), ("standalone", 3), ("cluster", 2), ("cluster", 3)],
    ids=lambda p: f"{p[0]}-resp{p[1]}",
)
async def client(
    request: pytest.FixtureRequest, redis_standalone: Standalone, redis_cluster: Cluster
) -> AsyncIterator[AsyncSmartClient]:
    kind, protocol = request.param
    url = redis_standalone.url if kind == "standalone" else redis_cluster.url
    async with AsyncSmartClient.from_url(url, protocol=protocol) as c:
        yield c


@pytest.fixture
def ns() -> str:
    """A fresh channel prefix: on a cluster, a PUBLISH of an earlier test can still be
    crossing the cluster bus when the next test subscribes to the same name."""
    return f"{uuid.uuid4().hex[:8]}:"


async def _take(p: Any, count: int) -> list[dict[str, Any]]:
    """The next ``count`` messages, each awaited for up to 5 s."""
    out: list[dict[str, Any]] = []
    for _ in range(count):
        message = await p.get_message(timeout=5.0)
        assert message is not None, f"message {len(out) + 1} of {count} never came: {out}"
        out.append(message)
    return out


async def _read_until(
    p: AsyncPubSub,
    publish: Callable[[str], Awaitable[Any]],
    wanted: set[str],
    seconds: float = 20.0,
) -> list[dict[str, Any]]:
    """Publish and read (tolerating connection errors) until each wanted channel delivered."""
    seen: list[dict[str, Any]] = []
    remaining = {name.encode(): name for name in wanted}
    async with asyncio.timeout(seconds):
        while remaining:
            try:
                for name in list(remaining.values()):
                    await publish(name)
                message = await p.get_message(timeout=0.2)
            except redis.exceptions.ConnectionError:
                continue  # a node is down and not yet replaced: users see this error too
            if message is not None:
                seen.append(message)
                if message["type"] in DATA:
                    remaining.pop(message["channel"], None)
    return seen


async def _sequence(p: Any, publisher: Any, ping: bool) -> list[dict[str, Any]]:
    await p.subscribe("acmp:a", "acmp:b")
    await p.psubscribe("acmp:p*")
    first = await _take(p, 3)
    await publisher.publish("acmp:a", "one")
    await publisher.publish("acmp:pX", "two")
    second = await _take(p, 2)
    await p.unsubscribe("acmp:a")
    await p.punsubscribe()
    third = await _take(p, 2)
    pongs = []
    if ping:
        await p.ping()
        await p.ping("hi")
        pongs = await _take(p, 2)
    await p.unsubscribe()
    last = await _take(p, 1)
    assert await p.get_message(timeout=0.05) is None and not p.subscribed
    return first + second + third + pongs + last


@pytest.mark.parametrize("decode", [False, True])
@pytest.mark.parametrize("protocol", [2, 3])
async def test_messages_match_redis_asyncio(
    redis_standalone: Standalone, protocol: int, decode: bool
) -> None:
    # redis-py cannot parse a RESP3 PING reply when decoding ("PONG"[0] becomes the type).
    redis_py_pings = not (protocol == 3 and decode)
    url = redis_standalone.url
    r = redis.asyncio.Redis.from_url(url, protocol=protocol, decode_responses=decode)
    async with r, r.pubsub() as rp:
        theirs = await _sequence(rp, r, redis_py_pings)
    c = AsyncSmartClient.from_url(url, protocol=protocol, decode_responses=decode)
    async with c, AsyncPubSub(c) as p:
        ours = await _sequence(p, c, True)
    pongs = [m for m in ours if m["type"] == "pong"]
    assert [m["data"] for m in pongs] == (["", "hi"] if decode else [b"", b"hi"])
    if not redis_py_pings:
        ours = [m for m in ours if m["type"] != "pong"]
    assert ours == theirs
    assert ours[3]["data"] == ("one" if decode else b"one")


async def test_subscribe_publish_unsubscribe(client: AsyncSmartClient, ns: str) -> None:
    async with AsyncPubSub(client) as p:
        assert (p.subscribed, await p.get_message()) == (False, None)
        await p.subscribe(f"{ns}news")
        assert p.subscribed
        assert await _take(p, 1) == [
            {"type": "subscribe", "pattern": None, "channel": f"{ns}news".encode(), "data": 1}
        ]
        await client.publish(f"{ns}news", "hello")
        assert await _take(p, 1) == [
            {"type": "message", "pattern": None, "channel": f"{ns}news".encode(), "data": b"hello"}
        ]
        await p.psubscribe(f"{ns}sport.*")
        assert (await _take(p, 1))[0]["type"] == "psubscribe"
        await client.publish(f"{ns}sport.chess", "e4")
        assert (await _take(p, 1))[0] == {
            "type": "pmessage",
            "pattern": f"{ns}sport.*".encode(),
            "channel": f"{ns}sport.chess".encode(),
            "data": b"e4",
        }
        # pub/sub has a dedicated connection, never the node's shared auto-pipelined one
        conn = p.connection
        assert conn is not None
        assert all(pool._shared is not conn for pool in _pools(client))
        await p.unsubscribe(f"{ns}news")
        await p.punsubscribe(f"{ns}sport.*")
        assert [(m["type"], m["data"]) for m in await _take(p, 2)] == [
            ("unsubscribe", 1),
            ("punsubscribe", 0),
        ]
        assert (p.subscribed, p.channels, p.patterns) == (False, {}, {})


async def test_publish_and_pubsub_counts_are_the_clusters(client: AsyncSmartClient) -> None:
    """PUBLISH counts the subscriber and PUBSUB answers for the whole cluster, for channels
    on every primary (a pub/sub subscribes where redis-py's ClusterPubSub does: at the
    node of its first channel's slot, where PUBLISH to that channel is sent)."""
    ns = f"{uuid.uuid4().hex[:8]}:"
    channels = [f"{ns}{name}" for name in ("alpha", "bravo", "echo", "charlie")]
    for channel in channels:
        async with AsyncPubSub(client) as p:
            await p.subscribe(channel)
            await _take(p, 1)
            assert await client.publish(channel, "m") == 1, channel
            assert [m["type"] for m in await _take(p, 1)] == ["message"]
            assert await client.pubsub_numsub(channel) == [(channel.encode(), 1)]
            assert channel.encode() in await client.pubsub_channels(f"{ns}*")
            await p.psubscribe(f"{ns}pattern*")
            # the server has the pattern once its confirmation arrived
            assert [m["type"] for m in await _take(p, 1)] == ["psubscribe"]
            assert await client.pubsub_numpat() >= 1


async def test_handlers_and_ignore_subscribe_messages(client: AsyncSmartClient, ns: str) -> None:
    received: list[dict[str, Any]] = []

    async def async_handler(message: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        received.append(message)

    async with AsyncPubSub(client, ignore_subscribe_messages=True) as p:
        await p.subscribe(**{f"{ns}h:chan": received.append})
        await p.psubscribe(**{f"{ns}h:pat*": async_handler})
        await p.subscribe(f"{ns}h:plain")
        await p.ping()  # its pong (never ignored) comes after the three ignored confirmations
        pong = [await p.get_message(timeout=5.0) for _ in range(4)][-1]
        assert pong is not None and pong["type"] == "pong"
        await client.publish(f"{ns}h:chan", "1")
        await client.publish(f"{ns}h:pattern", "2")
        await client.publish(f"{ns}h:plain", "3")
        messages = [await p.get_message(timeout=5.0) for _ in range(3)]
        assert [m for m in messages if m is not None] == [
            {"type": "message", "pattern": None, "channel": f"{ns}h:plain".encode(), "data": b"3"}
        ]
    # On a cluster the two PUBLISHes may run on different nodes: no order between them.
    assert sorted((m["type"], m["channel"], m["data"]) for m in received) == [
        ("message", f"{ns}h:chan".encode(), b"1"),
        ("pmessage", f"{ns}h:pattern".encode(), b"2"),
    ]


async def test_run_calls_handlers_until_cancelled(client: AsyncSmartClient, ns: str) -> None:
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


async def test_listen_and_decode_responses(client: AsyncSmartClient, ns: str) -> None:
    kwargs = client.get_connection_kwargs()
    url = f"redis://{kwargs['host']}:{kwargs['port']}"
    c = AsyncSmartClient.from_url(url, protocol=kwargs.get("protocol"), decode_responses=True)
    async with c, AsyncPubSub(c) as p:
        await p.subscribe(f"{ns}dec:ch")
        stream = p.listen()
        assert await anext(stream) == {
            "type": "subscribe",
            "pattern": None,
            "channel": f"{ns}dec:ch",
            "data": 1,
        }
        await c.publish(f"{ns}dec:ch", "é")
        assert await anext(stream) == {
            "type": "message",
            "pattern": None,
            "channel": f"{ns}dec:ch",
            "data": "é",
        }
        assert set(p.channels) == {f"{ns}dec:ch"}
        await p.unsubscribe()
        assert (await anext(stream))["type"] == "unsubscribe"
        assert [m async for m in stream] == []  # listen() ends once nothing is subscribed


def _channels_on_distinct_nodes(client: AsyncSmartClient, count: int, prefix: str) -> list[str]:
    if client._router is None:
        return [f"{prefix}shard:0"]
    slot_map = client._router.state.slot_map
    assert slot_map is not None
    by_node: dict[str, str] = {}
    for i in range(10_000):
        name = f"{prefix}shard:{i}"
        by_node.setdefault(str(slot_map.primary_for_slot(key_slot(name))), name)
        if len(by_node) == count:
            break
    return sorted(by_node.values())


async def test_sharded_pubsub(client: AsyncSmartClient, ns: str) -> None:
    channels = [
        *_channels_on_distinct_nodes(client, 3, ns),
        f"{ns}shard:{{same}}a",
        f"{ns}shard:{{same}}b",
    ]
    async with AsyncPubSub(client) as p:
        await p.ssubscribe(*channels)
        confirmations = await _take(p, len(channels))
        assert {m["type"] for m in confirmations} == {"ssubscribe"}
        assert {m["channel"] for m in confirmations} == {c.encode() for c in channels}
        if client.is_cluster:
            assert len({link.address for link in p._shard_links.values()}) == 3
        for i, channel in enumerate(channels):
            assert await client.spublish(channel, str(i)) == 1
        got = await _take(p, len(channels))
        assert sorted((m["type"], m["channel"], m["data"]) for m in got) == sorted(
            ("smessage", c.encode(), str(i).encode()) for i, c in enumerate(channels)
        )
        assert await p.get_sharded_message(timeout=0.05) is None
        await p.sunsubscribe(channels[0])
        assert (await _take(p, 1))[0]["type"] == "sunsubscribe"
        assert set(p.shard_channels) == {c.encode() for c in channels[1:]}
        await p.sunsubscribe()
        assert {m["type"] for m in await _take(p, len(channels) - 1)} == {"sunsubscribe"}
        assert not p.subscribed and p.shard_channels == {}


async def _kill_pubsub_clients(addresses: list[tuple[str, int]]) -> int:
    killed = 0
    for host, port in addresses:
        async with redis.asyncio.Redis(host=host, port=port) as admin:
            killed += int(await admin.client_kill_filter(_type="pubsub"))
    return killed


async def test_resubscribes_after_client_kill(
    client: AsyncSmartClient, ns: str, redis_standalone: Standalone, redis_cluster: Cluster
) -> None:
    addresses = (
        redis_cluster.startup_nodes
        if client.is_cluster
        else [(redis_standalone.host, redis_standalone.port)]
    )
    shard = _channels_on_distinct_nodes(client, 2, ns)
    async with AsyncPubSub(client) as p:
        await p.subscribe(f"{ns}rs:chan")
        await p.psubscribe(f"{ns}rs:pat*")
        await p.ssubscribe(*shard)
        await _take(p, 2 + len(shard))
        assert await _kill_pubsub_clients(addresses) >= 1 + len(shard) - (not client.is_cluster)

        async def publish(name: str) -> None:
            if name in shard:
                await client.spublish(name, "s")
            else:
                await client.publish(name, "x")

        seen = await _read_until(p, publish, {f"{ns}rs:chan", f"{ns}rs:pattern", *shard})
        data = [m for m in seen if m["type"] in DATA]
        assert {m["type"] for m in data} == {"message", "pmessage", "smessage"}
        assert set(p.channels) == {f"{ns}rs:chan".encode()}
        assert set(p.patterns) == {f"{ns}rs:pat*".encode()}
        assert set(p.shard_channels) == {c.encode() for c in shard}


@pytest.mark.parametrize("protocol", [2, 3])
async def test_shard_channels_follow_slot_migration(
    redis_topologies: TopologyFactory, protocol: int
) -> None:
    cluster = redis_topologies.cluster(primaries=2, replicas=0)
    source, target = cluster.primaries()
    owned = set(cluster.slots_of(source))
    tag = next(t for t in (f"{{amig{i}}}" for i in range(10_000)) if key_slot(t) in owned)
    first, second = f"{tag}a", f"{tag}b"
    c = AsyncSmartClient(startup_nodes=cluster.startup_nodes, protocol=protocol)
    async with c, AsyncPubSub(c) as p:
        await p.ssubscribe(first)
        assert (await _take(p, 1))[0]["type"] == "ssubscribe"
        await asyncio.to_thread(cluster.migrate_slots, source, target, slots=[key_slot(tag)])
        # The client's slot map is stale: this SSUBSCRIBE goes to the old owner, gets MOVED.
        assert c._router is not None and c._router.state.slot_map is not None
        assert c._router.state.slot_map.primary_for_slot(key_slot(tag)) == source.address
        await p.ssubscribe(second)

        # The old owner drops `first` (an unasked sunsubscribe); we follow the slot.
        seen = await _read_until(p, lambda ch: c.spublish(ch, "x"), {first, second})
        assert "sunsubscribe" in [m["type"] for m in seen]
        assert set(p.shard_channels) == {first.encode(), second.encode()}
        assert set(p._shard_links) == {target.address}


async def test_push_handler_func_receives_resp3_pushes(
    redis_standalone: Standalone, ns: str
) -> None:
    pushes: list[list[Any]] = []
    c = AsyncSmartClient.from_url(redis_standalone.url, protocol=3)
    async with c, AsyncPubSub(c, push_handler_func=pushes.append) as p:
        await p.subscribe(f"{ns}push")
        assert await p.get_message(timeout=5.0) is None  # went to the handler instead
        await c.publish(f"{ns}push", "x")
        assert await p.get_message(timeout=5.0) is None
    assert pushes == [
        [b"subscribe", f"{ns}push".encode(), 1],
        [b"message", f"{ns}push".encode(), b"x"],
    ]


async def test_aclose_releases_everything_and_wakes_readers(
    client: AsyncSmartClient, ns: str
) -> None:
    p = AsyncPubSub(client)
    shard = _channels_on_distinct_nodes(client, 2, ns)
    await p.subscribe(f"{ns}lc:chan")
    await p.ssubscribe(*shard)
    await _take(p, 1 + len(shard))
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
    assert (await _take(p, 1))[0]["type"] == "subscribe"
    await p.aclose()


def _pools(client: AsyncSmartClient) -> list[AsyncConnectionPool]:
    if client._pool is not None:
        return [client._pool]
    assert client._router is not None
    return list(client._router.state.pools.values())


async def _collect(stream: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    return [m async for m in stream]
