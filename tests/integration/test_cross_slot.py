"""Keys on several slots, as redis-py's ``RedisCluster`` treats them.

MSET, MSETNX and MGET are refused before anything is sent (``RedisClusterException``, with
a message naming ``mset_nonatomic()`` / ``mget_nonatomic()``); DEL, EXISTS, TOUCH and
UNLINK are split by slot and add up; ``mget_nonatomic`` / ``mset_nonatomic`` split and
return what ``RedisCluster``'s do. Each scenario runs on SmartClient and AsyncSmartClient
and on ``redis.cluster.RedisCluster`` / ``redis.asyncio.cluster.RedisCluster``, on the same
cluster, and the outcomes are compared.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis.exceptions as rx

from smartcache import CrossSlotError, key_slot
from smartcache.testing import Cluster, Standalone

pytestmark = pytest.mark.dropin

KEYS = ("alpha", "bravo", "echo", "charlie")  # four slots, three primaries
REFUSED = "refused: keys on several slots"


def _value(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except rx.RedisClusterException:  # what RedisCluster raises, and CrossSlotError is
        return REFUSED


def _scenario(r: Any) -> list[tuple[str, Any]]:
    r.delete(*KEYS)
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("mset", lambda: r.mset(dict.fromkeys(KEYS, 1))),
        ("nothing written", lambda: r.exists(*KEYS)),
        ("msetnx", lambda: r.msetnx(dict.fromkeys(KEYS, 1))),
        ("nothing written by msetnx", lambda: r.exists(*KEYS)),
        ("mset_nonatomic", lambda: r.mset_nonatomic({k: k.upper() for k in KEYS})),
        ("mset_nonatomic empty", lambda: r.mset_nonatomic({})),
        ("mget", lambda: r.mget(KEYS)),
        ("mget_nonatomic", lambda: r.mget_nonatomic(KEYS)),
        ("mget_nonatomic args", lambda: r.mget_nonatomic(KEYS[0], "nope", *KEYS[1:])),
        ("mget_nonatomic empty", lambda: r.mget_nonatomic([])),
        ("execute_command mset", lambda: r.execute_command("MSET", KEYS[0], 2, KEYS[1], 2)),
        ("execute_command mget", lambda: r.execute_command("MGET", *KEYS)),
        ("exists", lambda: r.exists(*KEYS, "nope", KEYS[0])),
        ("touch", lambda: r.touch(*KEYS, "nope")),
        ("same slot mset", lambda: r.mset({"{t}a": 1, "{t}b": 2})),
        ("same slot mget", lambda: r.mget("{t}a", "{t}b")),
        ("delete", lambda: r.delete(*KEYS[:3], "nope", "{t}a")),
        ("unlink", lambda: r.unlink(*KEYS, "{t}b")),
        ("after", lambda: r.mget_nonatomic([*KEYS, "{t}a", "{t}b"])),
    ]
    return [(label, _value(step)) for label, step in steps]


@pytest.mark.parametrize("decode", [False, True])
def test_cross_slot_commands_as_redis_cluster(
    redis_cluster: Cluster, client_factory: Any, redis_py_factory: Any, decode: bool
) -> None:
    assert len({key_slot(k) for k in KEYS}) == len(KEYS)
    smart = client_factory(url=redis_cluster.url, decode_responses=decode)
    reference = redis_py_factory(url=redis_cluster.url, cluster=True, decode_responses=decode)
    expected = _scenario(reference)
    got = _scenario(smart)
    assert got == expected
    outcome = dict(got)
    assert outcome["mset"] == outcome["msetnx"] == outcome["mget"] == REFUSED
    assert outcome["nothing written"] == 0
    assert outcome["mset_nonatomic"] == [True] * len(KEYS)  # one MSET per slot


def test_refusal_names_the_fix_and_is_every_class_users_catch(
    redis_cluster: Cluster, client_factory: Any
) -> None:
    client = client_factory(url=redis_cluster.url)
    for call, fix in (
        (lambda: client.mset(dict.fromkeys(KEYS, 1)), "mset_nonatomic()"),
        (lambda: client.mget(KEYS), "mget_nonatomic()"),
        (lambda: client.msetnx(dict.fromkeys(KEYS, 1)), "hash tag"),
    ):
        with pytest.raises(CrossSlotError) as err:
            call()
        assert fix in str(err.value)
        assert isinstance(err.value, rx.RedisClusterException)  # RedisCluster's own
        assert isinstance(err.value, rx.ClusterCrossSlotError)  # the server's CROSSSLOT
        assert err.value.slots == tuple(sorted(key_slot(k) for k in KEYS))
    assert client.exists(*KEYS) == 0


def test_pipelines_refuse_atomic_commands_across_slots(
    redis_cluster: Cluster, client_factory: Any
) -> None:
    client = client_factory(url=redis_cluster.url)
    client.delete(*KEYS)
    for queue in (
        lambda pipe: pipe.mset(dict.fromkeys(KEYS, 1)),
        lambda pipe: pipe.mget(KEYS),
        lambda pipe: pipe.execute_command("MSETNX", KEYS[0], 1, KEYS[1], 1),
    ):
        pipe = client.pipeline(transaction=False)
        pipe.set("{t}a", 1)
        queue(pipe)
        with pytest.raises(rx.RedisClusterException):
            pipe.execute()
        pipe.reset()
    assert client.exists(*KEYS, "{t}a") == 0  # refused before anything was sent
    pipe = client.pipeline(transaction=False)
    pipe.exists(*KEYS).delete(*KEYS).mset({"{t}a": 1, "{t}b": 2}).mget("{t}a", "{t}b")
    assert pipe.execute() == [0, 0, True, [b"1", b"2"]]
    client.delete("{t}a", "{t}b")


def test_single_server_keeps_multi_key_commands_whole(
    redis_standalone: Standalone, client_factory: Any, redis_py_factory: Any
) -> None:
    """No slots on a single server: MSET/MGET run as they are; the *_nonatomic twins give
    the shapes RedisCluster's give for one slot."""
    client = client_factory(url=redis_standalone.url)
    reference = redis_py_factory(url=redis_standalone.url)
    client.delete(*KEYS)
    assert client.mset(dict.fromkeys(KEYS, 1)) is reference.mset(dict.fromkeys(KEYS, 1)) is True
    assert client.mget(KEYS) == reference.mget(KEYS) == [b"1"] * len(KEYS)
    assert client.mset_nonatomic(dict.fromkeys(KEYS, 2)) == [True]
    assert client.mget_nonatomic(KEYS) == [b"2"] * len(KEYS)
    assert client.mset_nonatomic({}) == [] and client.mget_nonatomic([]) == []
    assert client.delete(*KEYS) == len(KEYS)
