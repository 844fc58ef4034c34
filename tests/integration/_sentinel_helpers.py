"""Helpers for the Sentinel integration tests: event recorders, a fake sentinel, addresses."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import hiredis
import redis
import redis.exceptions as rx

from smartcache.sync._connection import Connection
from smartcache.sync._pool import ConnectionPool
from smartcache.sync._sentinel import SentinelState
from smartcache.wire import ConnectionSettings

Address = tuple[str, int]


def dead_address() -> Address:
    """An address where nothing listens."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return "127.0.0.1", s.getsockname()[1]


def role_of(address: str, **kwargs: Any) -> str:
    host, port = address.rsplit(":", 1)
    with redis.Redis(host=host, port=int(port), decode_responses=True, **kwargs) as c:
        return str(c.execute_command("ROLE")[0])


def pool_role(pool: ConnectionPool) -> str:
    conn = pool.get()
    try:
        reply = conn.execute("ROLE")
    finally:
        pool.release(conn)
    return reply[0].decode()


class Changes:
    """Every listener call of a SentinelState, with its time."""

    def __init__(self, state: SentinelState) -> None:
        self.calls: list[tuple[float, str, Any]] = []
        self._cond = threading.Condition()
        state.add_listener(self)

    def __call__(self, kind: str, value: Any) -> None:
        with self._cond:
            self.calls.append((time.monotonic(), kind, value))
            self._cond.notify_all()

    def mark(self) -> int:
        with self._cond:
            return len(self.calls)

    def wait(
        self,
        kind: str,
        match: Callable[[Any], bool] = lambda v: True,
        *,
        since: int = 0,
        timeout: float = 30.0,
    ) -> tuple[float, Any]:
        def found() -> tuple[float, Any] | None:
            for t, k, v in self.calls[since:]:
                if k == kind and match(v):
                    return t, v
            return None

        with self._cond:
            assert self._cond.wait_for(found, timeout), f"no {kind!r} change in {timeout} s"
            result = found()
            assert result is not None
            return result


class EventRecorder:
    """Subscribed to every sentinel of a group: records (time, sentinel, channel, data)."""

    def __init__(self, addresses: list[Address]) -> None:
        self.events: list[tuple[float, str, str, str]] = []
        self._cond = threading.Condition()
        self._conns: list[Connection] = []
        for host, port in addresses:
            conn = Connection(
                ConnectionSettings(host=host, port=port, protocol=2, socket_timeout=None)
            )
            conn.send_command("PSUBSCRIBE", "*")
            conn.read_next()  # the confirmation: subscribed from here on
            self._conns.append(conn)
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: Connection) -> None:
        while True:
            try:
                message = conn.read_next()
            except (rx.RedisError, OSError):
                return
            channel = message[2].decode()
            if channel.startswith("__"):
                continue
            with self._cond:
                self.events.append((time.monotonic(), conn.address, channel, message[3].decode()))
                self._cond.notify_all()

    def first(
        self, channel: str, contains: str = "", timeout: float = 30.0
    ) -> tuple[float, str, str]:
        """(time, sentinel, data) of the earliest ``channel`` event whose data has ``contains``."""

        def found() -> tuple[float, str, str] | None:
            for t, sentinel, ch, data in self.events:
                if ch == channel and contains in data:
                    return t, sentinel, data
            return None

        with self._cond:
            assert self._cond.wait_for(found, timeout), f"no {channel} {contains} in {timeout} s"
            result = found()
            assert result is not None
            return result

    def close(self) -> None:
        for conn in self._conns:
            conn.close()


class FakeSentinel:
    """Answers like a sentinel naming ``reported`` as the primary (RESP2 only)."""

    def __init__(self, reported: Address) -> None:
        self.reported = reported
        self.questions = 0
        self._server = socket.create_server(("127.0.0.1", 0))
        self.address: Address = ("127.0.0.1", self._server.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return
            threading.Thread(target=self._client, args=(conn,), daemon=True).start()

    def _client(self, conn: socket.socket) -> None:
        reader = hiredis.Reader()
        with conn:
            while data := conn.recv(65536):
                reader.feed(data)
                while (command := reader.gets()) is not False:
                    conn.sendall(self._answer([w.decode().upper() for w in command]))

    def _answer(self, words: list[str]) -> bytes:
        self.questions += 1
        host, port = self.reported
        if words[:2] == ["SENTINEL", "GET-MASTER-ADDR-BY-NAME"]:
            return _array([host, str(port)])
        if words[:2] == ["SENTINEL", "MASTER"]:
            return _array(["name", "mymaster", "ip", host, "port", str(port), "flags", "master"])
        if words[:2] == ["SENTINEL", "SENTINELS"]:
            return b"*0\r\n"
        return b"-ERR unknown command\r\n"

    def close(self) -> None:
        self._server.close()


def _array(items: list[str]) -> bytes:
    out = [f"*{len(items)}\r\n".encode()]
    for item in items:
        data = item.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)
