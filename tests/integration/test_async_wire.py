"""smartcache.asyncio's wire layer (AsyncConnection, AsyncConnectionPool) against real servers.

Ordinary tests share the session's ``redis_standalone``; tests that put a server to sleep,
kill its clients or need a password start a private one with ``redis_topologies``.
Nothing here touches port 6379.
"""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions as rx

from smartcache.asyncio._connection import AsyncConnection, handshake_commands
from smartcache.asyncio._pool import AsyncConnectionPool
from smartcache.exceptions import (
    ConfigurationError,
    PoolExhaustedError,
    SmartConnectionError,
    SmartTimeoutError,
)
from smartcache.sync._connection import Connection
from smartcache.testing import Standalone
from smartcache.testing.pytest_plugin import TopologyFactory
from smartcache.wire import ConnectionSettings
from tests.integration.test_wire import tls_server  # noqa: F401  # a fixture

pytestmark = pytest.mark.dropin

PASSWORD = "s3cret"


def settings_for(topology: Standalone, **kwargs: Any) -> ConnectionSettings:
    return ConnectionSettings(host="127.0.0.1", port=topology.port, **kwargs)


@pytest.fixture
def key(request: pytest.FixtureRequest) -> str:
    return f"awire:{request.node.name}"


async def eventually(predicate: Any, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# -- round trips, protocol shapes, handshake ------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("protocol", [2, 3])
async def test_round_trip(redis_standalone: Standalone, key: str, protocol: int) -> None:
    async with AsyncConnection(settings_for(redis_standalone, protocol=protocol)) as conn:
        assert await conn.execute("SET", key, b"\x00value\xff") == b"OK"
        assert await conn.execute("GET", key) == b"\x00value\xff"
        assert await conn.execute("GET", f"{key}:missing") is None
        assert await conn.execute("INCRBY", f"{key}:n", 5) == 5
        await conn.execute("HSET", f"{key}:h", "a", "1")
        shape = {b"a": b"1"} if protocol == 3 else [b"a", b"1"]
        assert await conn.execute("HGETALL", f"{key}:h") == shape
        if protocol == 3:
            assert conn.handshake_metadata[b"proto"] == 3
        else:
            assert conn.handshake_metadata is None


@pytest.mark.asyncio
async def test_decode_responses(redis_standalone: Standalone, key: str) -> None:
    settings = settings_for(redis_standalone, decode_responses=True)
    async with AsyncConnection(settings) as conn:
        await conn.execute("SET", key, "héllo")
        assert await conn.execute("GET", key) == "héllo"
        assert await conn.execute_many([("GET", key), ("PING",)]) == ["héllo", "PONG"]


@pytest.mark.asyncio
async def test_select_db_and_client_name(redis_standalone: Standalone, key: str) -> None:
    settings = settings_for(redis_standalone, db=3, client_name="async-wire", protocol=2)
    async with AsyncConnection(settings) as conn:
        assert await conn.execute("CLIENT", "GETNAME") == b"async-wire"
        await conn.execute("SET", key, "in-db-3")
    async with AsyncConnection(settings_for(redis_standalone)) as db0:
        assert await db0.execute("EXISTS", key) == 0


@pytest.mark.asyncio
async def test_large_values_cross_many_reads(redis_standalone: Standalone, key: str) -> None:
    big = bytes(range(256)) * 8192  # 2 MiB
    async with AsyncConnection(settings_for(redis_standalone)) as conn:
        replies = await asyncio.gather(conn.execute("SET", key, big), conn.execute("GET", key))
        assert replies == [b"OK", big]


@pytest.mark.asyncio
@pytest.mark.parametrize("protocol", [2, 3])
async def test_auth_with_password(redis_topologies: TopologyFactory, protocol: int) -> None:
    server = redis_topologies.standalone(password=PASSWORD)
    settings = settings_for(server, password=PASSWORD, protocol=protocol)
    async with AsyncConnection(settings) as conn:
        assert await conn.execute("PING") == b"PONG"
    wrong = AsyncConnection(settings.replace(password="nope"))
    with pytest.raises(rx.AuthenticationError):
        await wrong.execute("PING")
    assert not wrong.is_connected
    async with AsyncConnection(settings.replace(password=None)) as anonymous:
        if protocol == 3:  # HELLO 3 itself needs authentication
            with pytest.raises(rx.AuthenticationError):
                await anonymous.connect()
        else:
            with pytest.raises(rx.AuthenticationError):
                await anonymous.execute("GET", "x")


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"protocol": 2},
        {"password": "pw", "client_name": "n", "db": 2, "readonly": True},
        {"protocol": 2, "username": "u", "password": "pw", "client_name": "n", "db": 1},
        {"protocol": 2, "password": "pw"},
        {"username": "u", "password": "pw"},
    ],
)
def test_handshake_matches_sync_layer(options: dict[str, Any]) -> None:
    settings = ConnectionSettings(**options)
    assert handshake_commands(settings) == Connection(settings)._handshake_commands()


def test_max_in_flight_must_be_positive() -> None:
    with pytest.raises(ConfigurationError):
        AsyncConnection(ConnectionSettings(), max_in_flight=0)


@pytest.mark.asyncio
async def test_connection_refused_names_node() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refused
        conn = AsyncConnection(ConnectionSettings(host="127.0.0.1", port=port))
        with pytest.raises(SmartConnectionError) as info:
            await conn.execute("PING")
    assert info.value.node == f"127.0.0.1:{port}" and info.value.node in str(info.value)
    assert isinstance(info.value, rx.ConnectionError)


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_error_replies(redis_standalone: Standalone, key: str) -> None:
    async with AsyncConnection(settings_for(redis_standalone)) as conn:
        await conn.execute("SET", key, "x")
        with pytest.raises(rx.ResponseError, match="WRONGTYPE"):
            await conn.execute("LPUSH", key, "y")
        replies = await conn.execute_many(
            [("GET", key), ("LPUSH", key, "y"), ("NOSUCHCOMMAND",), ("GET", key)]
        )
        assert replies[0] == b"x" and replies[3] == b"x"
        assert isinstance(replies[1], rx.ResponseError) and "WRONGTYPE" in str(replies[1])
        assert isinstance(replies[2], rx.ResponseError)
        with pytest.raises(rx.DataError):
            await conn.execute("SET", key, None)
        with pytest.raises(rx.DataError):
            await conn.execute_many([("SET", key, object())])
        assert await conn.execute("GET", key) == b"x"  # nothing was sent for bad arguments
        assert await conn.execute_many([]) == []


# -- automatic pipelining and backpressure ------------------------------------------------------


@pytest.mark.asyncio
async def test_concurrent_commands_coalesce_into_one_write(
    redis_standalone: Standalone, key: str
) -> None:
    async with AsyncConnection(settings_for(redis_standalone)) as conn:
        await conn.connect()
        before = conn.write_count
        replies = await asyncio.gather(*[conn.execute("INCR", key) for _ in range(100)])
        assert replies == list(range(1, 101))
        assert conn.write_count == before + 1

        async def one(i: int) -> Any:
            return await conn.execute("ECHO", str(i))

        before = conn.write_count
        tasks = [asyncio.create_task(one(i)) for i in range(100)]
        assert await asyncio.gather(*tasks) == [str(i).encode() for i in range(100)]
        assert conn.write_count == before + 1


@pytest.mark.asyncio
async def test_execute_many_stays_contiguous(redis_standalone: Standalone, key: str) -> None:
    async with AsyncConnection(settings_for(redis_standalone)) as conn:
        transaction = [("MULTI",), ("INCR", key), ("INCR", key), ("EXEC",)]
        results = await asyncio.gather(
            conn.execute("SET", key, 10),
            conn.execute_many(transaction),
            conn.execute("GET", key),
        )
        assert results == [b"OK", [b"OK", b"QUEUED", b"QUEUED", [11, 12]], b"12"]


@pytest.mark.asyncio
async def test_backpressure_bounds_in_flight(redis_standalone: Standalone, key: str) -> None:
    conn = AsyncConnection(settings_for(redis_standalone), max_in_flight=5)
    async with conn:
        await conn.connect()
        before = conn.write_count
        peak = 0

        async def incr() -> Any:
            nonlocal peak
            reply = await conn.execute("INCR", key)
            peak = max(peak, conn.in_flight)
            return reply

        replies = await asyncio.gather(*[incr() for _ in range(50)])
        assert sorted(replies) == list(range(1, 51))
        assert peak <= 5
        assert conn.write_count - before >= 10
        # A batch larger than the bound still goes through when the connection is idle.
        assert await conn.execute_many([("PING",)] * 20) == [b"PONG"] * 20


@pytest.mark.asyncio
async def test_paused_writing_holds_new_commands(redis_topologies: TopologyFactory) -> None:
    server = redis_topologies.standalone()
    big = b"x" * (8 << 20)
    async with AsyncConnection(settings_for(server, socket_timeout=5)) as conn:
        await conn.connect()
        server.pause()  # SIGSTOP: the socket buffers fill, the transport pauses writing
        try:
            sets = [conn.execute("SET", f"big{i}", big) for i in range(3)]
            await asyncio.sleep(0.1)
            held = conn.execute("PING")
            assert asyncio.iscoroutine(held)  # not queued: it waits for the transport
            ping = asyncio.ensure_future(held)
            await asyncio.sleep(0.05)
            assert conn.in_flight == 3 and not ping.done()
        finally:
            server.resume()
        assert await asyncio.gather(*sets, ping) == [b"OK"] * 3 + [b"PONG"]


# -- timeouts, cancellation, lost connections ----------------------------------------------------


@pytest.mark.asyncio
async def test_timeout_fails_in_flight_commands_then_reconnects(
    redis_topologies: TopologyFactory,
) -> None:
    server = redis_topologies.standalone()
    async with AsyncConnection(settings_for(server, socket_timeout=0.2)) as conn:
        first_id = await conn.execute("CLIENT", "ID")
        started = time.monotonic()
        sleeper = conn.execute("DEBUG", "SLEEP", 1)
        same_flush = [conn.execute("GET", f"k{i}") for i in range(5)]
        await asyncio.sleep(0.1)
        later_flush = [conn.execute("GET", f"k{i}") for i in range(5)]
        results = await asyncio.gather(sleeper, *same_flush, *later_flush, return_exceptions=True)
        assert 0.15 < time.monotonic() - started < 0.9
        timed_out = results[0]
        assert isinstance(timed_out, SmartTimeoutError)
        assert isinstance(timed_out, rx.TimeoutError) and isinstance(timed_out, rx.ConnectionError)
        assert timed_out.node == conn.address and conn.address in str(timed_out)
        assert timed_out.request_sent is True  # type: ignore[attr-defined]
        for error in results[1:6]:  # their deadline passed too
            assert isinstance(error, SmartTimeoutError) and error.request_sent  # type: ignore[attr-defined]
        for error in results[6:]:  # failed because the connection had to go
            assert isinstance(error, SmartConnectionError)
            assert not isinstance(error, SmartTimeoutError)
            assert error.request_sent is True  # type: ignore[attr-defined]
        assert not conn.is_connected
        await asyncio.sleep(1.0)  # let the server wake up
        assert await conn.execute("PING") == b"PONG"
        assert await conn.execute("CLIENT", "ID") != first_id


@pytest.mark.asyncio
async def test_cancelled_callers_never_get_misaligned_replies(
    redis_standalone: Standalone, key: str
) -> None:
    async with AsyncConnection(settings_for(redis_standalone)) as conn:
        values = [f"v{i}" for i in range(100)]
        await conn.execute_many([("SET", f"{key}:{i}", v) for i, v in enumerate(values)])
        # BLPOP holds this client's later commands in the server: all sent, none answered.
        blocker = conn.execute("BLPOP", f"{key}:empty", 0.3)

        async def get(i: int) -> Any:
            return await conn.execute("GET", f"{key}:{i}")

        tasks = [asyncio.create_task(get(i)) for i in range(100)]
        await asyncio.sleep(0.05)
        assert conn.in_flight == 101
        for task in tasks[::2]:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for i, result in enumerate(results):
            if i % 2 == 0:
                assert isinstance(result, asyncio.CancelledError)
            else:
                assert result == values[i].encode()
        assert await blocker is None
        assert conn.in_flight == 0
        again = await asyncio.gather(*[conn.execute("GET", f"{key}:{i}") for i in range(100)])
        assert again == [v.encode() for v in values]
        # A caller timing out its own wait does not shift the next reply either.
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await conn.execute("BLPOP", f"{key}:empty", 0.2)
        assert await conn.execute("ECHO", "next") == b"next"
        assert conn.is_connected


@pytest.mark.asyncio
async def test_server_kill_fails_pending_and_reconnects(
    redis_topologies: TopologyFactory,
) -> None:
    server = redis_topologies.standalone()
    async with (
        AsyncConnection(settings_for(server)) as conn,
        AsyncConnection(settings_for(server)) as admin,
    ):
        first_id = await conn.execute("CLIENT", "ID")
        conn.settimeout(None)  # the blocker must not time out by itself
        blocker = conn.execute("BLPOP", "nothing", 0)
        behind = [conn.execute("GET", "k") for _ in range(5)]
        await asyncio.sleep(0.05)
        assert await admin.execute("CLIENT", "KILL", "TYPE", "normal") >= 1
        results = await asyncio.gather(blocker, *behind, return_exceptions=True)
        for error in results:
            assert isinstance(error, SmartConnectionError)
            assert not isinstance(error, SmartTimeoutError)
            assert error.node == conn.address
            assert error.request_sent is True  # type: ignore[attr-defined]
        assert not conn.is_connected
        assert await conn.execute("PING") == b"PONG"
        assert await conn.execute("CLIENT", "ID") != first_id
        assert await admin.execute("PING") == b"PONG"  # SKIPME: the killer survived


@pytest.mark.asyncio
async def test_unsent_commands_report_request_not_sent(redis_standalone: Standalone) -> None:
    async with AsyncConnection(settings_for(redis_standalone)) as conn:
        await conn.connect()
        queued = conn.execute("PING")  # queued, flushed only at the end of this tick
        conn.close()
        with pytest.raises(SmartConnectionError) as info:
            await queued
        assert info.value.request_sent is False  # type: ignore[attr-defined]
        assert await conn.execute("PING") == b"PONG"


@pytest.mark.asyncio
async def test_concurrent_callers_share_one_reconnect(
    redis_standalone: Standalone, monkeypatch: pytest.MonkeyPatch
) -> None:
    opens = 0
    original = AsyncConnection._open

    async def counting_open(self: AsyncConnection) -> None:
        nonlocal opens
        opens += 1
        await original(self)

    monkeypatch.setattr(AsyncConnection, "_open", counting_open)
    async with AsyncConnection(settings_for(redis_standalone)) as conn:
        ids = await asyncio.gather(*[conn.execute("CLIENT", "ID") for _ in range(50)])
        assert len(set(ids)) == 1 and opens == 1
        conn.close()
        ids = await asyncio.gather(*[conn.execute("CLIENT", "ID") for _ in range(50)])
        assert len(set(ids)) == 1 and opens == 2


# -- push messages and pub/sub --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_push_messages_do_not_consume_replies(redis_standalone: Standalone, key: str) -> None:
    pushes: list[Any] = []
    async with (
        AsyncConnection(settings_for(redis_standalone)) as tracked,
        AsyncConnection(settings_for(redis_standalone)) as writer,
    ):
        tracked.push_handler = pushes.append
        assert await tracked.execute("CLIENT", "TRACKING", "ON") == b"OK"
        await tracked.execute("GET", key)
        await writer.execute("SET", key, "changed")
        await eventually(lambda: pushes)
        assert pushes[0][0] == b"invalidate" and pushes[0][1] == [key.encode()]
        assert await tracked.execute("PING") == b"PONG"

        # A failing handler is reported to the loop; the stream stays in step.
        failures: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: failures.append(ctx))

        def broken(message: Any) -> None:
            raise RuntimeError("handler bug")

        tracked.push_handler = broken
        await tracked.execute("GET", key)
        await writer.execute("SET", key, "again")
        await eventually(lambda: failures)
        assert isinstance(failures[0]["exception"], RuntimeError)
        assert await tracked.execute("ECHO", "still") == b"still"


@pytest.mark.asyncio
async def test_unsolicited_reply_without_handler_breaks_connection(
    redis_standalone: Standalone,
) -> None:
    async with AsyncConnection(settings_for(redis_standalone, protocol=2)) as conn:
        await conn.send("SUBSCRIBE", "awire-nobody")  # RESP2: a reply no future waits for
        await eventually(lambda: not conn.is_connected)
        assert await conn.execute("PING") == b"PONG"  # a fresh connection


@pytest.mark.asyncio
@pytest.mark.parametrize("protocol", [2, 3])
async def test_pubsub_on_dedicated_connection(redis_standalone: Standalone, protocol: int) -> None:
    messages: list[Any] = []
    settings = settings_for(redis_standalone, protocol=protocol)
    async with AsyncConnectionPool(settings) as pool:
        sub = await pool.acquire_dedicated()
        sub.push_handler = messages.append
        await sub.send("SUBSCRIBE", "awire-ch1", "awire-ch2")
        await eventually(lambda: len(messages) == 2)  # one confirmation per channel
        assert [m[0] for m in messages] == [b"subscribe", b"subscribe"]
        await pool.connection.execute("PUBLISH", "awire-ch2", "hello")
        await eventually(lambda: len(messages) == 3)
        assert list(messages[2]) == [b"message", b"awire-ch2", b"hello"]
        sub.close()  # subscribed: not fit for reuse
        pool.release(sub)


# -- the pool -------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_pool_shared_connection(redis_standalone: Standalone) -> None:
    async with AsyncConnectionPool(settings_for(redis_standalone)) as pool:
        conns = await asyncio.gather(*[pool.shared() for _ in range(10)])
        assert all(c is conns[0] for c in conns) and conns[0].is_connected
        assert pool.connection is conns[0]
        conns[0].close()
        again = await asyncio.gather(*[pool.shared() for _ in range(10)])
        assert all(c is conns[0] and c.is_connected for c in again)
        pool.release(again[0])  # releasing the shared connection does nothing
        assert await pool.connection.execute("PING") == b"PONG"
    assert pool.closed and not conns[0].is_connected
    with pytest.raises(SmartConnectionError, match="closed"):
        await pool.acquire_dedicated()


@pytest.mark.asyncio
async def test_pool_dedicated_connections_are_bounded(redis_standalone: Standalone) -> None:
    async with AsyncConnectionPool(
        settings_for(redis_standalone), max_connections=2, timeout=0.1
    ) as pool:
        first, second = await pool.acquire_dedicated(), await pool.acquire_dedicated()
        assert first is not second
        started = time.monotonic()
        with pytest.raises(PoolExhaustedError):
            await pool.acquire_dedicated()
        assert time.monotonic() - started >= 0.09
        waiter = asyncio.create_task(pool.acquire_dedicated())
        await asyncio.sleep(0.01)
        pool.release(first)
        assert await waiter is first  # handed over, LIFO reuse
        pool.release(first)
        pool.release(second)
        async with pool.dedicated() as conn:
            assert conn is second  # most recently released first
            assert await conn.execute("PING") == b"PONG"


@pytest.mark.asyncio
async def test_pool_blocking_command_on_dedicated_connection(
    redis_standalone: Standalone, key: str
) -> None:
    settings = settings_for(redis_standalone, socket_timeout=0.5)
    async with AsyncConnectionPool(settings) as pool:

        async def pop() -> Any:
            async with pool.dedicated() as conn:
                conn.settimeout(None)  # BLPOP may outlast socket_timeout
                return await conn.execute("BLPOP", key, 0)

        popper = asyncio.create_task(pop())
        for _ in range(20):  # the shared connection keeps serving meanwhile
            assert await pool.connection.execute("PING") == b"PONG"
            await asyncio.sleep(0.04)
        assert not popper.done()
        await pool.connection.execute("RPUSH", key, "item")
        assert await popper == [key.encode(), b"item"]
        async with pool.dedicated() as conn:
            assert conn.timeout == 0.5  # restored on release

        # Cancelled mid-BLPOP: the connection still owes a reply, so it is not reused.
        popper = asyncio.create_task(pop())
        await asyncio.sleep(0.05)
        popper.cancel()
        with pytest.raises(asyncio.CancelledError):
            await popper
        async with pool.dedicated() as conn:
            assert conn.in_flight == 0
            assert await conn.execute("LPUSH", key, "x") == 1


# -- TLS ------------------------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_tls_round_trip(tls_server: tuple[Standalone, int, Path], key: str) -> None:  # noqa: F811
    _, tls_port, cert = tls_server
    settings = ConnectionSettings(host="127.0.0.1", port=tls_port, ssl=True, ssl_ca_certs=str(cert))
    async with AsyncConnection(settings) as conn:
        replies = await asyncio.gather(
            conn.execute("SET", key, b"x" * 200_000), conn.execute("GET", key)
        )
        assert replies == [b"OK", b"x" * 200_000]
        assert conn.handshake_metadata[b"proto"] == 3
    untrusted = AsyncConnection(ConnectionSettings(host="127.0.0.1", port=tls_port, ssl=True))
    with pytest.raises(SmartConnectionError, match="certificate verify failed"):
        await untrusted.connect()
    insecure = settings.replace(ssl_ca_certs=None, ssl_cert_reqs="none")
    async with AsyncConnection(insecure) as conn:
        assert await conn.execute("PING") == b"PONG"
