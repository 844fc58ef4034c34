"""SmartClient speaks redis-py's command API on a standalone server and on a cluster."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from smartcache import CrossSlotError, NoReachableNodeError, key_slot
from smartcache.sync.client import SmartClient
from smartcache.testing import Cluster, Standalone

pytestmark = pytest.mark.dropin


@pytest.fixture(params=["standalone", "cluster"])
def client(
    request: pytest.FixtureRequest,
    redis_standalone: Standalone,
    redis_cluster: Cluster,
    client_factory: Any,
) -> Iterator[SmartClient]:
    """A SmartClient, or an AsyncSmartClient behind a SyncProxy: every scenario runs for both."""
    url = redis_standalone.url if request.param == "standalone" else redis_cluster.url
    c = client_factory(url=url)
    c.flushall()
    yield c
    c.flushall()


def test_detects_topology(redis_standalone: Standalone, redis_cluster: Cluster) -> None:
    with SmartClient.from_url(redis_standalone.url) as single:
        assert not single.is_cluster
    with SmartClient.from_url(redis_cluster.url) as cluster:
        assert cluster.is_cluster
    with SmartClient(startup_nodes=redis_cluster.startup_nodes) as cluster:
        assert cluster.is_cluster


def test_strings(client: SmartClient) -> None:
    assert client.set("s", "v") is True
    assert client.get("s") == b"v"
    assert client.set("s", "w", nx=True) is None
    assert client.incr("n") == 1 and client.incrby("n", 5) == 6
    assert client.incrbyfloat("f", 1.5) == 1.5
    assert client.append("s", "x") == 2
    assert client.getrange("s", 0, 0) == b"v"
    assert client.strlen("s") == 2
    assert client.get("missing") is None
    assert client.set("e", "1", ex=100) is True and 0 < client.ttl("e") <= 100
    assert client.getdel("e") == b"1" and client.exists("e") == 0


def test_hashes_lists_sets_zsets(client: SmartClient) -> None:
    assert client.hset("h", mapping={"a": 1, "b": 2}) == 2
    assert client.hgetall("h") == {b"a": b"1", b"b": b"2"}
    assert client.hincrby("h", "a", 2) == 3
    assert client.rpush("l", 1, 2, 3) == 3 and client.lrange("l", 0, -1) == [b"1", b"2", b"3"]
    assert client.lpop("l") == b"1"
    assert client.sadd("set", "a", "b") == 2 and client.smembers("set") == {b"a", b"b"}
    assert client.zadd("z", {"a": 1, "b": 2}) == 2
    assert client.zrange("z", 0, -1, withscores=True) == [(b"a", 1.0), (b"b", 2.0)]
    assert client.zincrby("z", 5, "a") == 6.0


def test_streams_geo_hll_bitmaps(client: SmartClient) -> None:
    xid = client.xadd("st", {"f": "v"})
    assert client.xlen("st") == 1
    assert client.xrange("st") == [(xid, {b"f": b"v"})]
    assert client.xread({"st": 0}) == [[b"st", [(xid, {b"f": b"v"})]]]
    assert client.geoadd("geo", (13.361389, 38.115556, "Palermo")) == 1
    assert client.geopos("geo", "Palermo")[0] is not None
    assert client.pfadd("hll", "a", "b", "c") == 1 and client.pfcount("hll") == 3
    assert client.setbit("bits", 7, 1) == 0 and client.bitcount("bits") == 1


def test_multi_key_commands_across_slots(client: SmartClient) -> None:
    keys = [f"mk:{i}" for i in range(200)]
    slots = list(dict.fromkeys(key_slot(k) for k in keys))
    assert len(slots) > 50
    if client.is_cluster:  # MSET/MGET are atomic: refused across slots, as RedisCluster does
        with pytest.raises(redis.exceptions.RedisClusterException, match="mset_nonatomic"):
            client.mset({k: k for k in keys})
        with pytest.raises(CrossSlotError, match="mget_nonatomic"):
            client.mget(keys)
        assert client.dbsize() == 0
    per_slot = [True] * (len(slots) if client.is_cluster else 1)
    assert client.mset_nonatomic({k: k for k in keys}) == per_slot
    assert client.mget_nonatomic(keys) == [k.encode() for k in keys]
    assert client.mget_nonatomic([*keys[:3], "nope"]) == [b"mk:0", b"mk:1", b"mk:2", None]
    assert client.exists(*keys) == 200
    assert client.touch(*keys) == 200
    assert client.delete(*keys[:100]) == 100
    assert client.unlink(*keys[100:]) == 100
    assert client.dbsize() == 0


def test_keyless_commands_merge(client: SmartClient) -> None:
    for i in range(30):
        client.set(f"kl:{i}", i)
    assert client.dbsize() == 30
    assert sorted(client.keys("kl:*")) == sorted(f"kl:{i}".encode() for i in range(30))
    assert sorted(client.scan_iter(match="kl:*", count=7)) == sorted(
        f"kl:{i}".encode() for i in range(30)
    )
    assert client.ping() is True
    assert client.flushdb() is True and client.dbsize() == 0


def test_scripts_and_lock(client: SmartClient) -> None:
    script = client.register_script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
    assert script(keys=["{s}n"], args=[5]) == 5
    assert script(keys=["{s}n"], args=[5]) == 10
    assert client.eval("return #KEYS", 2, "{t}a", "{t}b") == 2
    lock = client.lock("lock:res", timeout=5)
    assert lock.acquire(blocking=False)
    assert not client.lock("lock:res").acquire(blocking=False)
    lock.release()


def test_threads_share_one_client(client: SmartClient) -> None:
    errors: list[BaseException] = []

    def work(t: int) -> None:
        try:
            for i in range(200):
                key = f"th:{t}:{i}"
                client.set(key, i)
                assert client.get(key) == str(i).encode()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert client.dbsize() == 800


def test_decode_responses(redis_cluster: Cluster) -> None:
    with SmartClient.from_url(redis_cluster.url, decode_responses=True) as c:
        c.set("dec", "é")
        assert c.get("dec") == "é"
        assert c.mget_nonatomic(["dec", "nope"]) == ["é", None]
        c.delete("dec")


def test_cross_slot_atomic_commands_refused_before_sending(redis_cluster: Cluster) -> None:
    with SmartClient.from_url(redis_cluster.url) as c:
        a, b = "x:1", "x:2"
        assert key_slot(a) != key_slot(b)
        with pytest.raises(CrossSlotError) as err:
            c.msetnx({a: 1, b: 2})
        assert err.value.command == "MSETNX" and len(err.value.slots) == 2
        assert c.exists(a, b) == 0
        with pytest.raises(CrossSlotError):
            c.rename(a, b)
        assert c.msetnx({"{x}1": 1, "{x}2": 2}) is True
        c.delete("{x}1", "{x}2")


def test_bad_input(redis_cluster: Cluster) -> None:
    with SmartClient.from_url(redis_cluster.url) as c:
        with pytest.raises(redis.ResponseError, match="unknown command"):
            c.execute_command("NOSUCHCOMMAND", "x")
        with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
            c.execute_command("GET")
        assert c.mget([]) == []  # redis-py's own answer for an empty key list
        with pytest.raises(redis.ResponseError, match="wrong number of arguments"):
            c.delete()
        with pytest.raises(redis.DataError):
            c.set("k", True)  # type: ignore[arg-type]
    # as redis-py: making a client connects to nothing; its first command does
    down = SmartClient(
        startup_nodes=[("127.0.0.1", 1), ("127.0.0.1", 2)], socket_connect_timeout=0.5
    )
    assert "not connected yet" in repr(down)
    with pytest.raises(NoReachableNodeError) as err:
        down.get("k")
    assert isinstance(err.value, redis.ConnectionError)
    assert err.value.addresses == ("127.0.0.1:1", "127.0.0.1:2")
    assert "127.0.0.1:1" in str(err.value) and "127.0.0.1:2" in str(err.value)
