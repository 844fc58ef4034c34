"""smartcache.wire against real servers started here (smartcache.testing.Standalone).

Each module-scoped server is private to this file, on a free port the launcher picks,
and stopped by PID at teardown; nothing here touches port 6379.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.exceptions as rx

from smartcache.exceptions import (
    PoolExhaustedError,
    SmartConnectionError,
    SmartTimeoutError,
    TopologyError,
)
from smartcache.sync import _connection as connection_module
from smartcache.sync._connection import Connection
from smartcache.sync._pool import ConnectionPool
from smartcache.testing import ServerBinary, Standalone
from smartcache.wire import ConnectionSettings

pytestmark = pytest.mark.dropin

PASSWORD = "s3cret-pass"


@pytest.fixture(scope="module")
def server(redis_server_binary: ServerBinary) -> Iterator[Standalone]:
    with Standalone(binary=redis_server_binary) as topology:
        yield topology


@pytest.fixture(scope="module")
def auth_server(redis_server_binary: ServerBinary) -> Iterator[Standalone]:
    with Standalone(binary=redis_server_binary, password=PASSWORD) as topology:
        admin = topology.server.client()
        admin.execute_command("ACL", "SETUSER", "alice", "on", ">pw", "~*", "+@all")
        admin.close()
        yield topology


def settings_for(topology: Standalone, **kwargs: Any) -> ConnectionSettings:
    return ConnectionSettings(host="127.0.0.1", port=topology.port, **kwargs)


@pytest.fixture
def key(request: pytest.FixtureRequest) -> str:
    return f"wire:{request.node.name}"


# -- round trips and protocol shapes -----------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_set_get_round_trip(server: Standalone, key: str, protocol: int) -> None:
    with Connection(settings_for(server, protocol=protocol)) as conn:
        assert conn.execute("SET", key, b"\x00value\xff") == b"OK"
        assert conn.execute("GET", key) == b"\x00value\xff"
        assert conn.execute("GET", f"{key}:missing") is None
        assert conn.execute("INCRBY", f"{key}:n", 5) == 5
        assert conn.execute("SET", f"{key}:f", 1.5) == b"OK"
        assert conn.execute("GET", f"{key}:f") == b"1.5"


def test_resp2_and_resp3_shapes(server: Standalone, key: str) -> None:
    with (
        Connection(settings_for(server, protocol=2)) as resp2,
        Connection(settings_for(server, protocol=3)) as resp3,
    ):
        resp2.execute("HSET", key, "a", "1")
        assert resp2.execute("HGETALL", key) == [b"a", b"1"]
        assert resp3.execute("HGETALL", key) == {b"a": b"1"}
        assert resp2.handshake_metadata is None
        assert resp3.handshake_metadata[b"proto"] == 3
        resp3.execute("ZADD", f"{key}:z", 1.5, "m")
        assert resp3.execute("ZSCORE", f"{key}:z", "m") == 1.5  # RESP3 double
        assert resp2.execute("ZSCORE", f"{key}:z", "m") == b"1.5"
        assert resp3.execute("EXISTS", key) == 1


def test_default_protocol_is_resp3(server: Standalone) -> None:
    with Connection(settings_for(server)) as conn:
        conn.connect()
        assert conn.handshake_metadata[b"proto"] == 3


def test_decode_responses(server: Standalone, key: str) -> None:
    with Connection(settings_for(server, decode_responses=True, protocol=3)) as conn:
        conn.execute("SET", key, "héllo")
        assert conn.execute("GET", key) == "héllo"
        assert conn.handshake_metadata["proto"] == 3
        assert conn.execute("PING") == "PONG"


def test_select_db_and_client_name(server: Standalone, key: str) -> None:
    settings = settings_for(server, db=5, client_name="wire-test", protocol=2)
    with Connection(settings) as db5, Connection(settings_for(server)) as db0:
        db5.execute("SET", key, "in-5")
        assert db0.execute("GET", key) is None
        assert db5.execute("GET", key) == b"in-5"
        assert db5.execute("CLIENT", "GETNAME") == b"wire-test"
        assert b" db=5 " in db5.execute("CLIENT", "INFO")
    with Connection(settings.replace(protocol=3)) as resp3:
        assert resp3.execute("CLIENT", "GETNAME") == b"wire-test"
        assert resp3.execute("GET", key) == b"in-5"


def test_execute_many_returns_errors_in_place(server: Standalone, key: str) -> None:
    with Connection(settings_for(server)) as conn:
        replies = conn.execute_many(
            [("SET", key, "v"), ("INCR", key), ("GET", key), ("NOSUCHCOMMAND",)]
        )
        assert replies[0] == b"OK"
        assert isinstance(replies[1], rx.ResponseError)
        assert replies[2] == b"v"
        assert isinstance(replies[3], rx.ResponseError)
        assert conn.execute("PING") == b"PONG"  # nothing left unread
        with pytest.raises(rx.ResponseError):
            conn.execute("INCR", key)
        assert conn.is_connected  # an error reply does not break the connection


def test_send_then_read(server: Standalone, key: str) -> None:
    with Connection(settings_for(server)) as conn:
        conn.send_command("SET", key, "x")
        conn.send_many([("GET", key), ("LPUSH", key, "y")])
        assert conn.read_response() == b"OK"
        assert conn.read_response() == b"x"
        assert isinstance(conn.read_raw(), rx.ResponseError)
        with pytest.raises(rx.ResponseError):
            conn.send_command("LPUSH", key, "y")
            conn.read_response()


def test_bad_argument_keeps_connection(server: Standalone, key: str) -> None:
    with Connection(settings_for(server)) as conn:
        conn.connect()
        with pytest.raises(rx.DataError):
            conn.execute("SET", key, True)
        assert conn.is_connected
        assert conn.execute("PING") == b"PONG"


def test_large_value(server: Standalone, key: str) -> None:
    value = os.urandom(3_000_000)
    with Connection(settings_for(server)) as conn:
        conn.execute("SET", key, value)
        assert conn.execute("GET", key) == value


def test_push_messages(server: Standalone) -> None:
    channel = "wire:push"
    pushes: list[Any] = []
    with (
        Connection(settings_for(server, protocol=3)) as sub,
        Connection(settings_for(server)) as pub,
    ):
        sub.send_command("SUBSCRIBE", channel)
        assert sub.read_next() == [b"subscribe", channel.encode(), 1]
        pub.execute("PUBLISH", channel, "hi")
        assert sub.read_next() == [b"message", channel.encode(), b"hi"]
        # A push met while waiting for a reply goes to the handler, then the reply comes.
        sub.push_handler = pushes.append
        pub.execute("PUBLISH", channel, "again")
        time.sleep(0.05)
        assert sub.execute("PING") == b"PONG"
        assert pushes == [[b"message", channel.encode(), b"again"]]


# -- authentication ---------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [2, 3])
def test_auth_with_password(auth_server: Standalone, protocol: int) -> None:
    settings = settings_for(auth_server, password=PASSWORD, protocol=protocol, db=1)
    with Connection(settings) as conn:
        assert conn.execute("ACL", "WHOAMI") == b"default"
        assert b" db=1 " in conn.execute("CLIENT", "INFO")


@pytest.mark.parametrize("protocol", [2, 3])
def test_auth_with_acl_user(auth_server: Standalone, protocol: int) -> None:
    settings = settings_for(auth_server, username="alice", password="pw", protocol=protocol)
    with Connection(settings) as conn:
        assert conn.execute("ACL", "WHOAMI") == b"alice"


@pytest.mark.parametrize("protocol", [2, 3])
def test_wrong_password(auth_server: Standalone, protocol: int) -> None:
    settings = settings_for(auth_server, password="wrong-secret", protocol=protocol)
    conn = Connection(settings)
    with pytest.raises(rx.AuthenticationError) as info:
        conn.connect()
    assert "wrong-secret" not in str(info.value)
    assert settings.address in str(info.value)
    assert not conn.is_connected


def test_missing_password(auth_server: Standalone) -> None:
    with pytest.raises(rx.AuthenticationError):
        Connection(settings_for(auth_server, protocol=3)).connect()  # HELLO refused
    with (
        Connection(settings_for(auth_server, protocol=2)) as conn,
        pytest.raises(rx.AuthenticationError),
    ):
        conn.execute("GET", "k")  # NOAUTH


# -- failures: timeouts, refused, server-side close ------------------------------------


def test_read_timeout_closes_connection(server: Standalone, key: str) -> None:
    conn = Connection(settings_for(server, socket_timeout=0.2))
    started = time.monotonic()
    with pytest.raises(SmartTimeoutError) as info:
        conn.execute("BLPOP", key, 2)
    assert 0.15 < time.monotonic() - started < 1.5
    assert isinstance(info.value, rx.TimeoutError) and isinstance(info.value, rx.ConnectionError)
    assert info.value.node == conn.address and conn.address in str(info.value)
    assert not conn.is_connected
    # The late BLPOP reply can never be mistaken for the next command's: a new socket.
    assert conn.execute("PING") == b"PONG"
    conn.settimeout(None)  # a blocking command longer than socket_timeout
    assert conn.execute("BLPOP", key, 0.5) is None
    conn.close()


def test_debug_sleep_timeout(server: Standalone) -> None:
    with Connection(settings_for(server, socket_timeout=0.2)) as conn:
        with pytest.raises(SmartTimeoutError):
            conn.execute("DEBUG", "SLEEP", 0.5)
        assert not conn.is_connected
    time.sleep(0.4)  # let the server wake before the next test


def test_connection_refused_names_node() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: refused
        conn = Connection(ConnectionSettings(host="127.0.0.1", port=port))
        with pytest.raises(SmartConnectionError) as info:
            conn.execute("PING")
    assert f"127.0.0.1:{port}" in str(info.value)
    assert isinstance(info.value, rx.ConnectionError)


def test_server_side_close(server: Standalone) -> None:
    with Connection(settings_for(server)) as victim, Connection(settings_for(server)) as admin:
        client_id = victim.execute("CLIENT", "ID")
        admin.execute("CLIENT", "KILL", "ID", client_id)
        with pytest.raises(SmartConnectionError):
            victim.execute("PING")
        assert not victim.is_connected
        assert victim.execute("CLIENT", "ID") != client_id  # reconnected


# -- pool -------------------------------------------------------------------------------


def test_pool_reuses_lifo(server: Standalone) -> None:
    with ConnectionPool(settings_for(server)) as pool:
        first, second = pool.get(), pool.get()
        ids = {first.execute("CLIENT", "ID"), second.execute("CLIENT", "ID")}
        assert len(ids) == 2
        pool.release(first)
        pool.release(second)
        assert pool.get() is second  # most recently released first
        assert pool.get() is first
        pool.release(first)
        again = pool.get()
        assert again is first and again.execute("CLIENT", "ID") in ids
        pool.release(again)
        pool.release(second)


def test_pool_drops_broken_connections(server: Standalone) -> None:
    with ConnectionPool(settings_for(server, socket_timeout=0.2)) as pool:
        conn = pool.get()
        with pytest.raises(SmartTimeoutError):
            conn.execute("BLPOP", "wire:pool-broken", 1)
        pool.release(conn)
        fresh = pool.get()
        assert fresh is not conn and fresh.execute("PING") == b"PONG"
        pool.release(fresh)


def test_pool_max_connections_waits_then_times_out(server: Standalone) -> None:
    with ConnectionPool(settings_for(server), max_connections=1, timeout=0.2) as pool:
        held = pool.get()
        started = time.monotonic()
        with pytest.raises(PoolExhaustedError) as info:
            pool.get()
        assert time.monotonic() - started >= 0.19
        assert isinstance(info.value, rx.ConnectionError)
        assert "1 connections" in str(info.value)

        pool.timeout = 5.0
        releaser = threading.Timer(0.1, pool.release, args=(held,))
        releaser.start()
        started = time.monotonic()
        assert pool.get() is held
        assert time.monotonic() - started < 2.0
        releaser.join()
        pool.release(held)


def test_pool_failed_connect_frees_its_slot() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        settings = ConnectionSettings(host="127.0.0.1", port=probe.getsockname()[1])
        pool = ConnectionPool(settings, max_connections=1, timeout=0)
        for _ in range(3):  # each failure gives the one slot back
            with pytest.raises(SmartConnectionError) as info:
                pool.get()
            assert not isinstance(info.value, PoolExhaustedError)


def test_pool_close(server: Standalone) -> None:
    pool = ConnectionPool(settings_for(server))
    idle, in_use = pool.get(), pool.get()
    pool.release(idle)
    pool.close()
    assert pool.closed and not idle.is_connected
    pool.release(in_use)
    assert not in_use.is_connected
    with pytest.raises(SmartConnectionError, match="closed"):
        pool.get()


def test_pool_health_check_pings_after_idle(server: Standalone) -> None:
    def ping_calls(admin: Connection) -> int:
        stats = admin.execute("INFO", "commandstats").decode()
        for line in stats.splitlines():
            if line.startswith("cmdstat_ping:"):
                return int(line.split("calls=")[1].split(",")[0])
        return 0

    settings = settings_for(server, health_check_interval=0.1)
    with ConnectionPool(settings) as pool, Connection(settings_for(server)) as admin:
        conn = pool.get()
        client_id = conn.execute("CLIENT", "ID")
        pool.release(conn)
        before = ping_calls(admin)
        assert pool.get() is conn  # not idle long enough: no PING
        assert ping_calls(admin) == before
        pool.release(conn)
        time.sleep(0.15)
        assert pool.get() is conn
        assert ping_calls(admin) == before + 1
        pool.release(conn)

        admin.execute("CLIENT", "KILL", "ID", client_id)  # dies while idle
        time.sleep(0.15)
        fresh = pool.get()
        assert fresh.execute("CLIENT", "ID") != client_id
        pool.release(fresh)


def test_pool_notices_server_closed_idle_connection(
    server: Standalone, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection_module, "STALE_CHECK_AFTER", 0.05)
    with ConnectionPool(settings_for(server)) as pool, Connection(settings_for(server)) as admin:
        conn = pool.get()
        client_id = conn.execute("CLIENT", "ID")
        pool.release(conn)
        admin.execute("CLIENT", "KILL", "ID", client_id)
        time.sleep(0.1)
        fresh = pool.get()  # no health_check_interval: the EOF poll catches it
        assert fresh.execute("CLIENT", "ID") != client_id
        pool.release(fresh)


def test_pool_fork_safety(server: Standalone) -> None:
    with ConnectionPool(settings_for(server)) as pool:
        conn = pool.get()
        parent_id = conn.execute("CLIENT", "ID")
        pool.release(conn)
        pid = os.fork()
        if pid == 0:  # child: must never return into pytest
            status = 1
            try:
                child_conn = pool.get()
                child_id = child_conn.execute("CLIENT", "ID")
                ok = child_conn is not conn and child_id != parent_id
                pool.release(child_conn)
                pool.release(conn)  # an inherited connection: forgotten, not closed
                status = 0 if ok else 2
            finally:
                os._exit(status)
        _, wait_status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(wait_status) == 0
        # The parent's connection survived the child's exit untouched.
        again = pool.get()
        assert again is conn and again.execute("CLIENT", "ID") == parent_id
        pool.release(again)


# -- TLS --------------------------------------------------------------------------------


def _free_port() -> int:
    for port in range(21000, 22700):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port for TLS")


@pytest.fixture(scope="module")
def tls_server(
    redis_server_binary: ServerBinary, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Standalone, int, Path]]:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl not found: TLS untested")
    directory = tmp_path_factory.mktemp("tls")
    cert, keyfile = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            str(keyfile),
            "-out",
            str(cert),
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )
    tls_port = _free_port()
    topology = Standalone(
        binary=redis_server_binary,
        extra_settings={
            "tls-port": tls_port,
            "tls-cert-file": str(cert),
            "tls-key-file": str(keyfile),
            "tls-ca-cert-file": str(cert),
            "tls-auth-clients": "no",
        },
    )
    try:
        topology.start()  # stops its processes itself if it fails
    except TopologyError:
        pytest.skip(f"{redis_server_binary.label} was built without TLS: TLS untested")
    try:
        yield topology, tls_port, cert
    finally:
        topology.stop()


def test_tls_round_trip(tls_server: tuple[Standalone, int, Path], key: str) -> None:
    _, tls_port, cert = tls_server
    settings = ConnectionSettings(host="127.0.0.1", port=tls_port, ssl=True, ssl_ca_certs=str(cert))
    with Connection(settings) as conn:
        conn.execute("SET", key, b"x" * 200_000)
        assert conn.execute("GET", key) == b"x" * 200_000
        assert conn.handshake_metadata[b"proto"] == 3
    by_name = settings.replace(host="localhost", socket_timeout=0.2)
    with Connection(by_name) as conn, pytest.raises(SmartTimeoutError):
        conn.execute("BLPOP", key + ":none", 1)


def test_tls_refuses_unknown_certificate(tls_server: tuple[Standalone, int, Path]) -> None:
    _, tls_port, _ = tls_server
    conn = Connection(ConnectionSettings(host="127.0.0.1", port=tls_port, ssl=True))
    with pytest.raises(SmartConnectionError, match="certificate verify failed"):
        conn.connect()
    insecure = ConnectionSettings(host="127.0.0.1", port=tls_port, ssl=True, ssl_cert_reqs="none")
    with Connection(insecure) as conn:
        assert conn.execute("PING") == b"PONG"
