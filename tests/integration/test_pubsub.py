"""PubSub on SmartClient: redis-py's messages, handlers, threads, sharding and recovery."""

from __future__ import annotations

import functools
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from smartcache import key_slot
from smartcache.sync._pubsub import PubSub
from smartcache.sync.client import SmartClient
from smartcache.testing import Cluster, Standalone
from smartcache.testing.pytest_plugin import TopologyFactory

pytestmark = pytest.mark.dropin

DATA = ("message", "pmessage", "smessage")


@pytest.fixture(
    params=[("standalone", 2), ("standalone", 3), ("cluster", 2), ("cluster", 3)],
    ids=lambda p: f"{p[0]}-resp{p[1]}",
)
def client(
    request: pytest.FixtureRequest, redis_standalone: Standalone, redis_cluster: Cluster
) -> Iterator[SmartClient]:
    kind, protocol = request.param
    url = redis_standalone.url if kind == "standalone" else redis_cluster.url
    with SmartClient.from_url(url, protocol=protocol) as c:
        yield c


@pytest.fixture
def ns() -> str:
    """A fresh channel prefix: on a cluster, a PUBLISH from an earlier test can still be
    crossing the cluster bus when the next test subscribes to the same name."""
    return f"{uuid.uuid4().hex[:8]}:"


def _take(p: Any, count: int, *, sharded: bool = False) -> list[dict[str, Any]]:
    """The next ``count`` messages, each awaited for up to 5 s."""
    get = p.get_sharded_message if sharded else p.get_message
    out: list[dict[str, Any]] = []
    for _ in range(count):
        message = get(timeout=5.0)
        assert message is not None, f"message {len(out) + 1} of {count} never came: {out}"
        out.append(message)
    return out


def _publish_until(
    p: PubSub, publish: Callable[[], Any], channel: bytes, seconds: float = 15.0
) -> dict[str, Any]:
    """Publish and read until a message on ``channel`` arrives (it may be re-subscribing)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        publish()
        message = p.get_message(ignore_subscribe_messages=True, timeout=0.2)
        if message is not None and message["type"] in DATA and message["channel"] == channel:
            return message
    raise AssertionError(f"no message arrived on {channel!r}")


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
def test_messages_match_redis_py(redis_standalone: Standalone, protocol: int, decode: bool) -> None:
    # redis-py cannot parse a RESP3 PING reply when decoding ("PONG"[0] becomes the type).
    redis_py_pings = not (protocol == 3 and decode)
    url = redis_standalone.url
    r = redis.Redis.from_url(url, protocol=protocol, decode_responses=decode)
    with r, r.pubsub() as rp:
        theirs = _sequence(rp, r, redis_py_pings)
    c = SmartClient.from_url(url, protocol=protocol, decode_responses=decode)
    with c, PubSub(c) as p:
        ours = _sequence(p, c, True)
    pongs = [m for m in ours if m["type"] == "pong"]
    assert [m["data"] for m in pongs] == (["", "hi"] if decode else [b"", b"hi"])
    if not redis_py_pings:
        ours = [m for m in ours if m["type"] != "pong"]
    assert ours == theirs
    assert ours[3]["data"] == ("one" if decode else b"one")


def test_subscribe_publish_unsubscribe(client: SmartClient, ns: str) -> None:
    with PubSub(client) as p:
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
        p.unsubscribe(f"{ns}news")
        p.punsubscribe(f"{ns}sport.*")
        assert [(m["type"], m["data"]) for m in _take(p, 2)] == [
            ("unsubscribe", 1),
            ("punsubscribe", 0),
        ]
        assert not p.subscribed and p.channels == {} and p.patterns == {}


def test_handlers_and_ignore_subscribe_messages(client: SmartClient, ns: str) -> None:
    received: list[dict[str, Any]] = []
    with PubSub(client, ignore_subscribe_messages=True) as p:
        p.subscribe(**{f"{ns}h:chan": received.append})
        p.psubscribe(**{f"{ns}h:pat*": received.append})
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


def test_run_in_thread(client: SmartClient, ns: str) -> None:
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


def test_listen_and_decode_responses(client: SmartClient, ns: str) -> None:
    kwargs = client.get_connection_kwargs()
    protocol = kwargs.get("protocol")
    url = f"redis://{kwargs['host']}:{kwargs['port']}"
    with SmartClient.from_url(url, protocol=protocol, decode_responses=True) as c, PubSub(c) as p:
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


def _channels_on_distinct_nodes(client: SmartClient, count: int) -> list[str]:
    by_node: dict[str, str] = {}
    for i in range(10_000):
        name = f"shard:{i}"
        by_node.setdefault(client._address_for_slot(key_slot(name)), name)
        if len(by_node) == count:
            break
    return sorted(by_node.values())


def test_sharded_pubsub(client: SmartClient) -> None:
    nodes = 3 if client.is_cluster else 1
    channels = [*_channels_on_distinct_nodes(client, nodes), "shard:{same}a", "shard:{same}b"]
    with PubSub(client) as p:
        p.ssubscribe(*channels)
        confirmations = _take(p, len(channels), sharded=True)
        assert {m["type"] for m in confirmations} == {"ssubscribe"}
        assert {m["channel"] for m in confirmations} == {c.encode() for c in channels}
        if client.is_cluster:
            assert len({client._address_for_slot(key_slot(c)) for c in channels}) >= 2
        for i, channel in enumerate(channels):
            assert client.spublish(channel, str(i)) == 1
        got = _take(p, len(channels), sharded=True)
        assert sorted((m["type"], m["channel"], m["data"]) for m in got) == sorted(
            ("smessage", c.encode(), str(i).encode()) for i, c in enumerate(channels)
        )
        assert p.get_sharded_message(timeout=0.05) is None
        p.sunsubscribe(channels[0])
        assert _take(p, 1, sharded=True)[0]["type"] == "sunsubscribe"
        assert set(p.shard_channels) == {c.encode() for c in channels[1:]}
        p.sunsubscribe()
        assert {m["type"] for m in _take(p, len(channels) - 1, sharded=True)} == {"sunsubscribe"}
        assert not p.subscribed and p.shard_channels == {}


def _kill_pubsub_clients(addresses: list[tuple[str, int]]) -> int:
    killed = 0
    for host, port in addresses:
        with redis.Redis(host=host, port=port) as admin:
            killed += int(admin.client_kill_filter(_type="pubsub"))
    return killed


def test_resubscribes_after_connection_loss(
    client: SmartClient, ns: str, redis_standalone: Standalone, redis_cluster: Cluster
) -> None:
    addresses = (
        redis_cluster.startup_nodes
        if client.is_cluster
        else [(redis_standalone.host, redis_standalone.port)]
    )
    shard = _channels_on_distinct_nodes(client, 2 if client.is_cluster else 1)
    with PubSub(client) as p:
        p.subscribe(f"{ns}rs:chan")
        p.psubscribe(f"{ns}rs:pat*")
        p.ssubscribe(*shard)
        _take(p, 2 + len(shard))
        assert _kill_pubsub_clients(addresses) >= 1 + len(shard) - (not client.is_cluster)
        # Subscribing on a node whose connection just died must not lose its other channels.
        node = client._address_for_slot(key_slot(shard[0]))
        extra = next(
            n
            for n in (f"rs:extra:{i}" for i in range(10_000))
            if client._address_for_slot(key_slot(n)) == node and key_slot(n) != key_slot(shard[0])
        )
        p.ssubscribe(extra)
        message = _publish_until(
            p, lambda: client.publish(f"{ns}rs:chan", "back"), f"{ns}rs:chan".encode()
        )
        assert (message["type"], message["data"]) == ("message", b"back")
        message = _publish_until(
            p, lambda: client.publish(f"{ns}rs:pattern", "x"), f"{ns}rs:pattern".encode()
        )
        assert (message["type"], message["pattern"]) == ("pmessage", f"{ns}rs:pat*".encode())
        for channel in [*shard, extra]:
            publish = functools.partial(client.spublish, channel, "s")
            message = _publish_until(p, publish, channel.encode())
            assert message["type"] == "smessage"
        assert set(p.channels) == {f"{ns}rs:chan".encode()} and set(p.patterns) == {
            f"{ns}rs:pat*".encode()
        }
        assert set(p.shard_channels) == {c.encode() for c in [*shard, extra]}


def _read_until(
    p: PubSub, publish: Callable[[bytes], Any], wanted: set[bytes], seconds: float = 20.0
) -> list[str]:
    """Publish and read (tolerating connection errors) until each wanted channel delivered."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while wanted and time.monotonic() < deadline:
        try:
            for channel in wanted:
                publish(channel)
            message = p.get_message(timeout=0.2)
        except redis.exceptions.ConnectionError:
            continue  # a node is down and not yet replaced: users see this error too
        if message is not None:
            seen.append(message["type"])
            if message["type"] in DATA:
                wanted.discard(message["channel"])
    assert not wanted, f"no message on {wanted}; saw {seen[:20]}"
    return seen


@pytest.mark.parametrize("protocol", [2, 3])
def test_shard_channels_follow_slot_migration(
    redis_topologies: TopologyFactory, protocol: int
) -> None:
    cluster = redis_topologies.cluster(primaries=2, replicas=0)
    source, target = cluster.primaries()
    owned = set(cluster.slots_of(source))
    tag = next(t for t in (f"{{mig{i}}}" for i in range(10_000)) if key_slot(t) in owned)
    first, second = f"{tag}a", f"{tag}b"
    with SmartClient(startup_nodes=cluster.startup_nodes, protocol=protocol) as c, PubSub(c) as p:
        p.ssubscribe(first)
        assert _take(p, 1, sharded=True)[0]["type"] == "ssubscribe"
        cluster.migrate_slots(source, target, slots=[key_slot(tag)])
        # The client's slot map is stale: this SSUBSCRIBE goes to the old owner, gets MOVED.
        assert c._address_for_slot(key_slot(tag)) == source.address
        p.ssubscribe(second)

        # The old owner drops `first` (an unasked sunsubscribe); we follow the slot.
        seen = _read_until(p, lambda ch: c.spublish(ch, "x"), {first.encode(), second.encode()})
        assert "sunsubscribe" in seen
        assert set(p.shard_channels) == {first.encode(), second.encode()}
        assert set(p._shard_links) == {target.address}


def test_subscriptions_survive_primary_failover(redis_topologies: TopologyFactory) -> None:
    cluster = redis_topologies.cluster(primaries=3, replicas=1, node_timeout_ms=1000)
    victim = cluster.primaries()[0]
    victim_slots = set(cluster.slots_of(victim))
    channel = next(n for n in (f"fo:{i}" for i in range(10_000)) if key_slot(n) in victim_slots)
    with SmartClient(startup_nodes=cluster.startup_nodes) as c, PubSub(c) as p:
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


def test_push_handler_func_receives_resp3_pushes(redis_standalone: Standalone, ns: str) -> None:
    pushes: list[list[Any]] = []
    c = SmartClient.from_url(redis_standalone.url, protocol=3)
    with c, PubSub(c, push_handler_func=pushes.append) as p:
        p.subscribe(f"{ns}push")
        assert p.get_message(timeout=5.0) is None  # went to the handler instead
        c.publish(f"{ns}push", "x")
        assert p.get_message(timeout=5.0) is None
    assert pushes == [
        [b"subscribe", f"{ns}push".encode(), 1],
        [b"message", f"{ns}push".encode(), b"x"],
    ]


def test_client_pubsub_method(redis_standalone: Standalone, redis_cluster: Cluster) -> None:
    for url in (redis_standalone.url, redis_cluster.url):
        with SmartClient.from_url(url) as client:
            p = client.pubsub(ignore_subscribe_messages=True)
            assert isinstance(p, PubSub)
            p.subscribe("wired:channel")
            client.publish("wired:channel", "hello")
            deadline = time.monotonic() + 5
            message = None
            while message is None and time.monotonic() < deadline:
                message = p.get_message(timeout=0.5)
            assert message is not None and message["data"] == b"hello"
            p.close()
