"""``bytearray`` and ``memoryview`` keys, fields and values, as redis-py takes them.

redis-py's encoder passes any bytes-like object through unchanged, so these go wherever
``bytes`` go: packing, the key's cluster slot, key extraction (including a ``numkeys``
given as bytes), the single-key fast path, MGET/MSET, pipelines and transactions. Each
scenario runs on SmartClient and AsyncSmartClient and on the redis-py client each stands in
for (``redis.Redis`` / ``redis.cluster.RedisCluster``, or their ``redis.asyncio`` twins) on
the same server, and the results are compared; keys written one way are read back the
other way, so a wrong slot could not hide behind a MOVED redirect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.crc
import redis.exceptions as rx

from smartcache import key_slot
from smartcache.testing import Cluster, Standalone

pytestmark = pytest.mark.dropin

BA, MV = bytearray, memoryview


def _steps(r: Any, mk: Callable[[bytes], Any]) -> list[tuple[str, Callable[[], Any]]]:
    """Every key shares the ``{t}`` tag (one slot) except where a step splits by slot.
    ``mk`` makes the memoryview keys (values and fields are always memoryviews)."""
    return [
        ("set bytearray", lambda: r.set(BA(b"{t}a"), BA(b"1"))),
        ("get bytearray", lambda: r.get(BA(b"{t}a"))),
        ("set memoryview", lambda: r.set(mk(b"{t}b"), MV(b"2"))),
        ("get memoryview", lambda: r.get(mk(b"{t}b"))),
        ("get as bytes", lambda: r.get(b"{t}a")),
        ("hset", lambda: r.hset(BA(b"{t}h"), BA(b"f"), BA(b"v"))),
        ("hset mapping", lambda: r.hset(mk(b"{t}h"), mapping={MV(b"g"): BA(b"w")})),
        ("hget", lambda: r.hget(mk(b"{t}h"), BA(b"f"))),
        ("hgetall", lambda: r.hgetall(BA(b"{t}h"))),
        ("mset", lambda: r.mset({mk(b"{t}c"): BA(b"3"), b"{t}d": MV(b"4")})),
        ("mget", lambda: r.mget([BA(b"{t}a"), mk(b"{t}b"), b"{t}c", BA(b"{t}d")])),
        ("execute_command set", lambda: r.execute_command("SET", BA(b"ec"), BA(b"x"))),
        ("execute_command get", lambda: r.execute_command("GET", mk(b"ec"))),
        ("delete across slots", lambda: r.delete(BA(b"ec"), mk(b"{t}a"), b"nope")),
        ("exists across slots", lambda: r.exists(BA(b"{t}b"), mk(b"{t}c"), b"ec")),
        (
            "eval with numkeys as bytes",
            lambda: r.eval("return redis.call('GET', KEYS[1])", BA(b"1"), BA(b"{t}b")),
        ),
        (
            "pipeline",
            lambda: (
                r.pipeline(transaction=False)
                .set(BA(b"p1"), BA(b"x"))
                .get(mk(b"p1"))
                .hset(BA(b"p2"), MV(b"f"), BA(b"y"))
                .hget(mk(b"p2"), BA(b"f"))
                .execute()
            ),
        ),
        (
            "transaction",
            lambda: (
                r.pipeline(transaction=True)
                .incr(BA(b"{q}1"))
                .get(mk(b"{q}1"))
                .hset(mk(b"{q}h"), BA(b"f"), MV(b"z"))
                .execute()
            ),
        ),
        ("watch", lambda: _watch(r, mk)),
        ("read back as bytes", lambda: r.mget([b"{t}c", b"{t}d"])),
        ("hget back as bytes", lambda: r.hget(b"{q}h", b"f")),
        ("lock", lambda: _lock(r)),
    ]


def _watch(r: Any, mk: Callable[[bytes], Any]) -> Any:
    pipe = r.pipeline(transaction=True)
    try:
        pipe.watch(BA(b"{q}w"), mk(b"{q}1"))
        pipe.multi()
        pipe.incr(mk(b"{q}w"))
        return pipe.execute()
    finally:
        pipe.reset()


def _lock(r: Any) -> Any:
    lock = r.lock(BA(b"{t}lock"), timeout=5)
    return lock.acquire(blocking=False), lock.owned(), lock.release()


def _run(r: Any, mk: Callable[[bytes], Any] = MV) -> list[tuple[str, Any]]:
    r.flushall()
    out: list[tuple[str, Any]] = []
    for label, step in _steps(r, mk):
        try:
            value = step()
        except (rx.RedisError, rx.RedisClusterException) as exc:
            value = ("raised", type(exc).__name__)
        out.append((label, value))
    return out


def _cluster_takes_memoryview_keys() -> bool:
    """Does the installed redis-py's RedisCluster hash a memoryview key? (probed)"""
    try:
        redis.crc.key_slot(MV(b"k"))  # type: ignore[arg-type]
    except AttributeError:
        return False
    return True


@pytest.mark.parametrize("decode", [False, True])
@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_bytes_like_arguments_as_redis_py(
    topology: str,
    decode: bool,
    redis_standalone: Standalone,
    redis_cluster: Cluster,
    client_factory: Any,
    redis_py_factory: Any,
) -> None:
    url = redis_cluster.url if topology == "cluster" else redis_standalone.url
    smart = client_factory(url=url, decode_responses=decode)
    reference = redis_py_factory(url=url, cluster=topology == "cluster", decode_responses=decode)
    # redis-py 8.1's RedisCluster cannot hash a memoryview key (AttributeError in its
    # key_slot); there the reference gets the same keys as bytes, as 8.2 sends them.
    takes_mv = topology == "standalone" or _cluster_takes_memoryview_keys()
    expected = _run(reference, MV if takes_mv else bytes)
    got = _run(smart)
    assert got == expected
    assert ("raised", "DataError") not in {value for _, value in got if isinstance(value, tuple)}


def test_bytes_like_keys_hash_as_bytes(redis_cluster: Cluster, client_factory: Any) -> None:
    """keyslot() and the node a key lands on agree with the server for every bytes-like type."""
    client = client_factory(url=redis_cluster.url)
    for raw in (b"user:{42}:a", b"plain", b"{}odd", bytes(range(1, 40))):
        slot = key_slot(raw)
        for key in (BA(raw), MV(raw)):
            assert client.keyslot(key) == slot
            assert client.execute_command("CLUSTER KEYSLOT", key) == slot
            assert client.get_node_from_key(key).name == client.get_node_from_key(raw).name
