"""redis-py's public names besides the command methods, on SmartClient and AsyncSmartClient.

Code written against redis-py (and redis-py's own Lock, Script, Monitor) reads more than
the commands: ``connection``, ``parse_response()``, ``from_pool()``, ``monitor()``,
``disconnect_connection_pools()``, RedisCluster's ``cluster_*`` methods... Every public
name of ``redis.Redis``, ``redis.cluster.RedisCluster`` (for SmartClient) and of their
``redis.asyncio`` twins (for AsyncSmartClient) is either implemented or listed below with
its reason; ``test_every_redis_py_name_is_implemented_or_listed`` fails when redis-py
grows a name that is neither, and when a listed name gets implemented (strike it here).

Still missing, and why (the list is ``MISSING``):

- ``get_retry``, ``set_retry``, ``retry``: redis-py's ``Retry`` object drives redis-py's
  own retry loop; smartcache's retries follow its ``RetryPolicy`` (``retry_policy=``,
  ``client.retry_policy``), which a ``Retry`` cannot describe.
- ``himport_prepare``, ``himport_discard``, ``himport_discard_all``, ``himport_registry``:
  HIMPORT field sets are not implemented (``himport_registry=`` is refused).
- ``get_redis_connection``: RedisCluster keeps a ``redis.Redis`` per node; smartcache
  keeps one pool per node: use ``target_nodes=node`` (or ``get_node()``) instead.
- ``load_balancing_strategy``: ``read_from=`` ("primary", "replica",
  "replica_preferred"; ``read_from_replicas=True`` is accepted) replaces it.
- ``maint_notifications_config``: maintenance push notifications are not implemented.
- RedisCluster's routing machinery, replaced by smartcache's own core (routing from the
  server's COMMAND metadata, ``smartcache.core``): ``CLUSTER_COMMANDS_RESPONSE_CALLBACKS``,
  ``COMMAND_FLAGS``, ``NODE_FLAGS``, ``RESULT_CALLBACKS``, ``SEARCH_COMMANDS``,
  ``ERRORS_ALLOW_RETRY``, ``NOT_NODE_FAILURE_ERRORS``, ``RedisClusterRequestTTL``,
  ``cluster_response_callbacks``, ``command_flags``, ``node_flags``, ``result_callbacks``,
  ``commands_parser``, ``nodes_manager``, ``reinitialize_counter``, ``reinitialize_steps``,
  ``get_nodes_from_slot``, ``get_special_nodes``, ``get_random_primary_or_all_nodes``,
  ``get_keyless_target_node``, ``on_connect``, ``user_on_connect_func``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.exceptions as rx
from redis.cluster import ClusterNode, RedisCluster
from redis.keyspace_notifications import EventType

from smartcache import SmartClient
from smartcache.asyncio import AsyncSmartClient
from smartcache.testing import Cluster, Standalone
from tests.integration._dual import close_client

pytestmark = pytest.mark.dropin

_RETRY = "smartcache retries by its RetryPolicy (retry_policy=), not by redis-py's Retry"
_HIMPORT = "HIMPORT field sets are not implemented (himport_registry= is refused)"
_MACHINERY = "RedisCluster's routing machinery; smartcache routes by its own core"

#: public names of redis-py's clients that smartcache's do not have, with the reason
MISSING: dict[str, str] = {
    "get_retry": _RETRY,
    "set_retry": _RETRY,
    "retry": _RETRY,
    "himport_prepare": _HIMPORT,
    "himport_discard": _HIMPORT,
    "himport_discard_all": _HIMPORT,
    "himport_registry": _HIMPORT,
    "get_redis_connection": "one pool per node, no redis.Redis per node: use target_nodes=",
    "load_balancing_strategy": "read_from= (and read_from_replicas=True) replaces it",
    "maint_notifications_config": "maintenance push notifications are not implemented",
    "CLUSTER_COMMANDS_RESPONSE_CALLBACKS": _MACHINERY,
    "COMMAND_FLAGS": _MACHINERY,
    "NODE_FLAGS": _MACHINERY,
    "RESULT_CALLBACKS": _MACHINERY,
    "SEARCH_COMMANDS": _MACHINERY,
    "ERRORS_ALLOW_RETRY": _MACHINERY,
    "NOT_NODE_FAILURE_ERRORS": _MACHINERY,
    "RedisClusterRequestTTL": _MACHINERY,
    "cluster_response_callbacks": _MACHINERY,
    "command_flags": _MACHINERY,
    "node_flags": _MACHINERY,
    "result_callbacks": _MACHINERY,
    "commands_parser": _MACHINERY,
    "nodes_manager": _MACHINERY,
    "reinitialize_counter": _MACHINERY,
    "reinitialize_steps": _MACHINERY,
    "get_nodes_from_slot": _MACHINERY,
    "get_special_nodes": _MACHINERY,
    "get_random_primary_or_all_nodes": _MACHINERY,
    "get_keyless_target_node": _MACHINERY,
    "on_connect": _MACHINERY,
    "user_on_connect_func": _MACHINERY,
}
#: listed names that older releases of the supported redis-py range lack
ONLY_IN_NEWER_REDIS_PY = frozenset({"NOT_NODE_FAILURE_ERRORS", "get_keyless_target_node"})


def _public(obj: Any) -> set[str]:
    return {name for name in dir(obj) if not name.startswith("_")}


@pytest.fixture
def surfaces(redis_standalone: Standalone, redis_cluster: Cluster) -> Iterator[dict[str, Any]]:
    """Public names of live instances (instance attributes count, as users see them)."""
    made: list[Any] = []

    def keep(client: Any) -> Any:
        made.append(client)
        return client

    redis_py = {
        "Redis": _public(keep(redis.Redis.from_url(redis_standalone.url))),
        "RedisCluster": _public(keep(RedisCluster.from_url(redis_cluster.url))),
        "asyncio.Redis": _public(redis.asyncio.Redis.from_url(redis_standalone.url)),
        "asyncio.RedisCluster": _public(
            redis.asyncio.cluster.RedisCluster.from_url(redis_cluster.url)
        ),
    }
    smart = _public(keep(SmartClient.from_url(redis_standalone.url)))
    smart |= _public(keep(SmartClient.from_url(redis_cluster.url)))
    smart_async = _public(AsyncSmartClient.from_url(redis_standalone.url))
    smart_async |= _public(AsyncSmartClient.from_url(redis_cluster.url))
    yield {"redis_py": redis_py, "smart": smart, "async": smart_async}
    for client in made:
        client.close()


def test_every_redis_py_name_is_implemented_or_listed(surfaces: dict[str, Any]) -> None:
    redis_py, smart, smart_async = surfaces["redis_py"], surfaces["smart"], surfaces["async"]
    ours = {
        "Redis": smart,
        "RedisCluster": smart,
        "asyncio.Redis": smart_async,
        "asyncio.RedisCluster": smart_async,
    }
    for twin, names in redis_py.items():
        unlisted = names - ours[twin] - MISSING.keys()
        assert not unlisted, f"redis-py's {twin} has names neither implemented nor listed"
    implemented = set(MISSING) & (smart | smart_async)
    assert not implemented, "implemented now: strike them from MISSING and the docstring"
    everywhere = set().union(*redis_py.values())
    stale = set(MISSING) - everywhere - ONLY_IN_NEWER_REDIS_PY
    assert not stale, "listed, but the installed redis-py has no such name"
    for name, reason in MISSING.items():
        assert reason and name in (__doc__ or ""), name


# -- single_connection_client and connection ---------------------------------------------------
def test_connection_is_none_unless_single_connection(
    redis_standalone: Standalone, client_factory: Any, redis_py_factory: Any
) -> None:
    plain = client_factory(url=redis_standalone.url)
    assert plain.connection is None
    assert redis_py_factory(url=redis_standalone.url).connection is None
    single = client_factory(url=redis_standalone.url, single_connection_client=True)
    assert single.connection is not None
    assert single.single_connection_client is True
    assert plain.auto_close_connection_pool is True


def test_single_connection_client_runs_every_command_on_one_connection(
    redis_topologies: Any, client_factory: Any, redis_py_factory: Any
) -> None:
    server = redis_topologies.standalone()  # private: its client list is ours alone

    def session(r: Any) -> Any:
        first = r.client_id()
        r.client_setname("single-conn")
        return (
            [r.client_id() == first for _ in range(5)],
            r.client_getname(),
            r.blpop(["single:none"], timeout=0.1),  # a blocking command: the same connection
            r.client_id() == first,
            len(r.client_list(_type="normal")),  # one connection, whatever ran
        )

    kwargs = {"host": "127.0.0.1", "port": server.port, "single_connection_client": True}
    reference = redis_py_factory(**kwargs)
    expected = session(reference)
    close_client(reference)  # its connection must not count in ours
    got = session(client_factory(**kwargs))
    assert got == expected
    assert got[0] == [True] * 5 and got[-1] == 1


def test_single_connection_is_shared_by_threads_one_at_a_time(
    redis_standalone: Standalone,
) -> None:
    client = SmartClient.from_url(redis_standalone.url, single_connection_client=True)
    try:
        ids: list[int] = []

        def work() -> None:
            for i in range(50):
                client.set(f"thread:{i}", i)
                ids.append(client.client_id())

        from threading import Thread

        threads = [Thread(target=work) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(ids)) == 1 and len(ids) == 200
        assert client.single_connection_lock.acquire(blocking=False)
        client.single_connection_lock.release()
    finally:
        client.close()


# -- parse_response ------------------------------------------------------------------------------
def test_parse_response_as_redis_py(redis_standalone: Standalone) -> None:
    def flow(r: Any) -> Any:
        r.delete("pr:h")
        conn = r.connection
        conn.send_command("HSET", "pr:h", "a", "1")
        out = [r.parse_response(conn, "HSET")]
        conn.send_command("HGETALL", "pr:h")
        out.append(r.parse_response(conn, "HGETALL"))
        conn.send_command("GET", "pr:h")
        out.append(r.parse_response(conn, "GET", EMPTY_RESPONSE="empty"))
        conn.send_command("HGETALL", "pr:h")
        out.append(r.parse_response(conn, "HGETALL", NEVER_DECODE=[]))
        return out

    for decode in (False, True):
        smart = SmartClient.from_url(
            redis_standalone.url, single_connection_client=True, decode_responses=decode
        )
        reference = redis.Redis.from_url(
            redis_standalone.url, single_connection_client=True, decode_responses=decode
        )
        try:
            assert flow(smart) == flow(reference)
        finally:
            smart.close()
            reference.close()


async def _async_parse_flow(client: Any, reference: Any) -> list[Any]:
    conn = await reference.connection_pool.get_connection()
    try:
        await conn.send_command("HGETALL", "apr:h")
        ours = await client.parse_response(conn, "HGETALL")
        await conn.send_command("HGETALL", "apr:h")
        theirs = await reference.parse_response(conn, "HGETALL")
        return [ours, theirs]
    finally:
        await reference.connection_pool.release(conn)


@pytest.mark.asyncio
async def test_async_parse_response_as_redis_py(redis_standalone: Standalone) -> None:
    client = AsyncSmartClient.from_url(redis_standalone.url, decode_responses=True)
    reference = redis.asyncio.Redis.from_url(redis_standalone.url, decode_responses=True)
    try:
        await client.hset("apr:h", mapping={"a": 1})
        ours, theirs = await _async_parse_flow(client, reference)
        assert ours == theirs == {"a": "1"}
    finally:
        await client.aclose()
        await reference.aclose()


# -- construction: from_pool, client(), load_external_module -----------------------------------
def test_from_pool_takes_the_pools_settings(
    redis_standalone: Standalone, client_factory: Any
) -> None:
    pool_class = (
        redis.ConnectionPool if client_factory.kind == "sync" else redis.asyncio.ConnectionPool
    )
    pool = pool_class(host="127.0.0.1", port=redis_standalone.port, db=3, decode_responses=True)
    client = client_factory(connection_pool=pool)
    client.set("fp:k", "v")
    assert client.get("fp:k") == "v"
    assert client.get_connection_kwargs()["db"] == 3
    client.delete("fp:k")
    cls = SmartClient if client_factory.kind == "sync" else AsyncSmartClient
    assert cls.from_pool.__func__ is not None  # type: ignore[attr-defined]


def test_from_pool_classmethods(redis_standalone: Standalone) -> None:
    sync = SmartClient.from_pool(redis.ConnectionPool(host="127.0.0.1", port=redis_standalone.port))
    try:
        assert sync.ping() is True
    finally:
        sync.close()

    async def run() -> bool:
        pool = redis.asyncio.ConnectionPool(host="127.0.0.1", port=redis_standalone.port)
        client = AsyncSmartClient.from_pool(pool)
        try:
            return bool(await client.ping())
        finally:
            await client.aclose()

    assert asyncio.run(run()) is True


def test_load_external_module(redis_standalone: Standalone, client_factory: Any) -> None:
    client = client_factory(url=redis_standalone.url)
    client.load_external_module("mymodule", lambda: "loaded")
    assert client.mymodule() == "loaded"


@pytest.mark.asyncio
async def test_async_client_and_transaction(redis_standalone: Standalone) -> None:
    async with AsyncSmartClient.from_url(redis_standalone.url) as client:
        await client.delete("atx:n")

        async def bump(pipe: Any) -> int:
            value = int(await pipe.get("atx:n") or 0)
            pipe.multi()
            pipe.set("atx:n", value + 1)
            return value + 1

        assert await client.transaction(bump, "atx:n", value_from_callable=True) == 1
        assert await client.transaction(bump, "atx:n") == [True]
        assert await client.get("atx:n") == b"2"
        single = client.client()
        try:
            assert single is not client
            first = await single.client_id()
            assert single.connection is not None and await single.client_id() == first
        finally:
            await single.aclose()


# -- monitor -------------------------------------------------------------------------------------
def test_monitor_as_redis_py(redis_standalone: Standalone, client_factory: Any) -> None:
    client = client_factory(url=redis_standalone.url)
    writer = redis.Redis.from_url(redis_standalone.url)
    try:
        with client.monitor() as monitor:
            writer.set("mon:key", "a b")
            seen = []
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                command = monitor.next_command()
                seen.append(command["command"])
                if "mon:key" in command["command"]:
                    break
            assert seen[-1] == "SET mon:key a b"
            assert set(command) == {
                "time",
                "db",
                "client_address",
                "client_port",
                "client_type",
                "command",
            }
    finally:
        writer.close()


# -- RedisCluster's methods ------------------------------------------------------------------------
def test_cluster_methods_as_redis_cluster(
    redis_cluster: Cluster, client_factory: Any, redis_py_factory: Any
) -> None:
    smart = client_factory(url=redis_cluster.url)
    reference = redis_py_factory(url=redis_cluster.url, cluster=True)

    def run(r: Any) -> Any:
        r.set("{cm}:a", 1)
        r.set("{cm}:b", 2)
        slot = r.keyslot("{cm}:a")
        primary = r.get_node_from_key("{cm}:a")
        primary = getattr(primary, "_target", primary)  # a redis.asyncio node, unproxied
        return (
            r.cluster_keyslot("{cm}:a") == slot,
            r.cluster_countkeysinslot(slot),
            sorted(r.cluster_get_keys_in_slot(slot, 10)),
            r.cluster_info()["cluster_state"],
            len(r.cluster_nodes()),
            sorted(r.cluster_slots()),
            len(r.cluster_shards()),
            len(r.cluster_myid(primary)),
            sorted(node.name for node in r.startup_nodes),
            r.read_from_replicas,
            r.get_random_primary_node().name in {n.name for n in r.get_primaries()},
            r.delete("{cm}:a", "{cm}:b"),
        )

    assert run(smart) == run(reference)
    assert isinstance(smart.startup_nodes[0], ClusterNode)


def test_determine_slot_as_redis_cluster(redis_cluster: Cluster) -> None:
    smart, reference = (
        SmartClient.from_url(redis_cluster.url),
        RedisCluster.from_url(redis_cluster.url),
    )
    try:
        for args in (("GET", "{cm}:a"), ("MGET", "{x}1", "{x}2"), ("CLUSTER COUNTKEYSINSLOT", 7)):
            assert smart.determine_slot(*args) == reference.determine_slot(*args)
        for refused in (("MGET", "a", "b"), ("FLUSHALL",)):
            with pytest.raises(rx.RedisClusterException):
                reference.determine_slot(*refused)
            with pytest.raises(rx.RedisClusterException):
                smart.determine_slot(*refused)
    finally:
        smart.close()
        reference.close()


def test_disconnect_connection_pools_keeps_the_client_usable(redis_cluster: Cluster) -> None:
    for client in (
        SmartClient.from_url(redis_cluster.url),
        RedisCluster.from_url(redis_cluster.url),
    ):
        try:
            client.set("dcp:k", "v")
            client.disconnect_connection_pools()
            assert client.get("dcp:k") == b"v"
            client.delete("dcp:k")
        finally:
            client.close()


def test_get_cache_is_none_without_client_side_caching(redis_standalone: Standalone) -> None:
    with SmartClient.from_url(redis_standalone.url) as client:
        reference = redis.Redis.from_url(redis_standalone.url)
        assert client.get_cache() is reference.get_cache() is None
        reference.close()


# -- keyspace notifications ----------------------------------------------------------------------
def test_keyspace_notifications(redis_topologies: Any, client_factory: Any) -> None:
    server = redis_topologies.standalone()
    admin = redis.Redis(host="127.0.0.1", port=server.port)
    admin.config_set("notify-keyspace-events", "KEA")
    admin.close()
    client = client_factory(host="127.0.0.1", port=server.port)
    notifications = client.keyspace_notifications()
    try:
        notifications.subscribe_keyevent(EventType.SET)
        client.set("ksn:key", "v")
        got = None
        deadline = time.monotonic() + 5
        while got is None and time.monotonic() < deadline:
            got = notifications.get_message(timeout=0.2)
        assert got is not None
        assert (got.key, got.event_type) in {("ksn:key", "set"), (b"ksn:key", "set")}
    finally:
        closer = getattr(notifications, "aclose", None) or notifications.close
        closer()


# -- the default node ---------------------------------------------------------------------------
def test_keyless_commands_meet_one_default_node_like_redis_cluster(
    redis_cluster: Cluster, client_factory: Any, redis_py_factory: Any
) -> None:
    """CLIENT SETNAME then CLIENT GETNAME (no routing rule of their own on Redis 7.0) reach
    the same server, the default node: RedisCluster's behaviour, and ``get_default_node()``
    says which node that is."""

    def session(r: Any) -> Any:
        r.client_setname("default-node-check")
        names = [r.client_getname() for _ in range(10)]
        default = r.get_default_node()
        served_by = str(r.client_info()["laddr"]).rsplit(":", 1)[1]  # the server's port
        return names, served_by == str(default.port), default.server_type

    expected = session(redis_py_factory(url=redis_cluster.url, cluster=True))
    got = session(client_factory(url=redis_cluster.url))
    assert got == expected
    assert got[0] == ["default-node-check"] * 10 and got[1] is True


def test_set_and_replace_default_node(redis_cluster: Cluster, client_factory: Any) -> None:
    r = client_factory(url=redis_cluster.url)
    primaries = r.get_primaries()
    first = r.get_default_node()
    assert first.name in {p.name for p in primaries}
    other = next(p for p in primaries if p.name != first.name)
    assert r.set_default_node(other) is True
    assert r.get_default_node().name == other.name
    # keyless commands follow: CLIENT INFO answered by that node
    assert str(r.client_info()["laddr"]).endswith(f":{other.port}")
    assert r.set_default_node(None) is False
    replica = r.get_replicas()[0]
    assert r.set_default_node(replica) is False  # serves no slots
    assert r.get_default_node().name == other.name
    r.replace_default_node()
    assert r.get_default_node().name != other.name
    r.replace_default_node(first)
    assert r.get_default_node().name == first.name
