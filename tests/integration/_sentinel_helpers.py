"""Helpers for the Sentinel integration tests: event recorders, a fake sentinel, addresses,
and the two worlds (:class:`SyncWorld`, :class:`AsyncWorld`) one scenario runs in.

A scenario is written once, with plain calls: in the sync world it drives a
``SentinelState`` directly; in the async world an ``AsyncSentinelState`` behind an
:class:`OnLoop` proxy, every call of which is made and awaited on a private event loop
(``_dual.AsyncRunner``). Threads stay real on both sides: several threads calling one
proxy become several tasks on that loop.
"""

from __future__ import annotations

import asyncio
import gc
import inspect
import socket
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import hiredis
import redis
import redis.exceptions as rx

import smartcache.asyncio._sentinel as async_sentinel_module
import smartcache.sync._sentinel as sync_sentinel_module
from smartcache.asyncio._pool import AsyncConnectionPool
from smartcache.asyncio._sentinel import AsyncSentinelExecutor, AsyncSentinelState
from smartcache.core.commands import CommandTable
from smartcache.core.retry import RetryPolicy
from smartcache.sync._connection import Connection
from smartcache.sync._pool import ConnectionPool
from smartcache.sync._sentinel import SentinelExecutor, SentinelState
from smartcache.wire import ConnectionSettings
from tests.integration._dual import AsyncRunner

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


def role(pool: Any) -> str:
    """The ``ROLE`` a pool's node reports (``master`` / ``slave``), in either world."""
    first = pool.execute("ROLE")[0]
    return first.decode() if isinstance(first, bytes) else str(first)


class Changes:
    """Every listener call of a state (either world: called in a watcher thread or on the
    loop), with its time; waitable from the test's thread."""

    def __init__(self, state: Any) -> None:
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


class Load:
    """``writers`` threads, each calling ``write(n, i)`` (``i`` = 1, 2, ...) until stopped.

    Records ``(time, result)`` of every acknowledged write and every Redis error; after an
    error a writer ends (``stop_on_error``) or backs off 10 ms and goes on.
    """

    def __init__(
        self, write: Callable[[int, int], Any], writers: int, *, stop_on_error: bool = False
    ) -> None:
        self.acked: list[tuple[float, Any]] = []
        self.errors: list[BaseException] = []
        self._write = write
        self._stop_on_error = stop_on_error
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,)) for n in range(writers)]
        for thread in self._threads:
            thread.start()

    def _run(self, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            i += 1
            try:
                result = self._write(n, i)
            except rx.RedisError as exc:
                with self._cond:
                    self.errors.append(exc)
                    self._cond.notify_all()
                if self._stop_on_error:
                    return
                self._stop.wait(0.01)  # back off before the next write
                continue
            with self._cond:
                self.acked.append((time.monotonic(), result))
                self._cond.notify_all()

    def wait_for(self, predicate: Callable[[Load], bool], timeout: float = 30.0) -> None:
        """Wait (woken by every write) until ``predicate(self)`` holds."""
        with self._cond:
            assert self._cond.wait_for(lambda: predicate(self), timeout), "load: timed out"

    def acked_after(self, t: float) -> int:
        return sum(at > t for at, _ in self.acked)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


# -- the two worlds ---------------------------------------------------------------------------

KINDS = ("sync", "async")


def unwrap(obj: Any) -> Any:
    """The object behind an :class:`OnLoop` proxy (``obj`` itself otherwise)."""
    return obj._target if isinstance(obj, OnLoop) else obj


class OnLoop:
    """Plain-call access to an asyncio object: every method is called, and its result
    awaited, on the world's loop (so a method that creates a task or a future, as
    ``start_watcher`` or a pool's ``execute`` do, runs where it must). Attributes are read
    in the caller's thread. asyncio objects returned are proxied too, one proxy per object
    (``is`` compares the objects)."""

    def __init__(self, target: Any, world: AsyncWorld) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_world", world)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return self._world.wrap(attr)

        def call(*args: Any, **kwargs: Any) -> Any:
            async def on_loop() -> Any:
                result = attr(*args, **kwargs)
                return await result if inspect.isawaitable(result) else result

            return self._world.wrap(self._world.runner.run(on_loop()))

        return call

    def __repr__(self) -> str:
        return f"<OnLoop {self._target!r}>"


class SyncWorld:
    """``SentinelState`` and its executor, threads."""

    kind = "sync"
    module: Any = sync_sentinel_module
    watcher_units_per_sentinel = 0  # one watcher thread, whatever the number of sentinels

    def state(self, *args: Any, **kwargs: Any) -> Any:
        return SentinelState(*args, **kwargs)

    def pool(self, settings: ConnectionSettings) -> Any:
        return ConnectionPool(settings, max_connections=8, timeout=5.0)

    def executor(self, state: Any, **kwargs: Any) -> Any:
        return SentinelExecutor(state, RetryPolicy(), CommandTable.fallback(), **kwargs)

    def close(self, obj: Any) -> None:
        obj.close()

    def slow_ask_sentinel(self, delay: float, asks: list[str]) -> Callable[..., Any]:
        real = self.module.ask_sentinel

        def slow(settings: ConnectionSettings, service: str, commands: Any) -> Any:
            asks.append(settings.address)
            time.sleep(delay)  # widen the window in which the callers overlap
            return real(settings, service, commands)

        return slow

    def background(self) -> set[Any]:
        """The Sentinel threads alive now (watchers and their connect threads)."""
        return {t for t in threading.enumerate() if t.name.startswith("smartcache-sentinel")}

    def watcher_units(self, state: Any, before: set[Any]) -> set[Any]:
        """What runs ``state``'s watcher: its thread."""
        name = f"smartcache-sentinel-{state.service_name}"
        return {t for t in self.background() - before if t.name == name}

    def wait_ended(self, units: Iterable[Any], timeout: float, *, collect: bool = False) -> bool:
        """Wait until every thread of ``units`` ended (collecting garbage meanwhile)."""
        deadline = time.monotonic() + timeout
        for thread in units:
            while thread.is_alive() and time.monotonic() < deadline:
                if collect:
                    gc.collect()
                thread.join(0.05 if collect else deadline - time.monotonic())
        return not any(t.is_alive() for t in units)

    def drain_retired(self, state: Any) -> None:
        """Nothing: a retired pool is closed at once here."""

    def stop(self) -> None:
        pass


class AsyncWorld:
    """``AsyncSentinelState`` and its executor behind :class:`OnLoop`, tasks on one loop."""

    kind = "async"
    module: Any = async_sentinel_module
    watcher_units_per_sentinel = 1  # a supervisor task plus one task per sentinel

    def __init__(self) -> None:
        self.runner = AsyncRunner()
        self._proxies: weakref.WeakValueDictionary[int, OnLoop] = weakref.WeakValueDictionary()

    def wrap(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.wrap(v) for v in value]
        if not type(value).__module__.startswith("smartcache.asyncio"):
            return value
        proxy = self._proxies.get(id(value))
        if proxy is None:
            proxy = self._proxies[id(value)] = OnLoop(value, self)
        return proxy

    def _build(self, make: Callable[[], Any]) -> Any:
        async def build() -> Any:
            return make()

        return self.wrap(self.runner.run(build()))

    def state(self, *args: Any, **kwargs: Any) -> Any:
        return self._build(lambda: AsyncSentinelState(*args, **kwargs))

    def pool(self, settings: ConnectionSettings) -> Any:
        return AsyncConnectionPool(settings, max_connections=16, timeout=5.0)

    def executor(self, state: Any, **kwargs: Any) -> Any:
        table = CommandTable.fallback()
        return self._build(
            lambda: AsyncSentinelExecutor(unwrap(state), RetryPolicy(), table, **kwargs)
        )

    def close(self, obj: Any) -> None:
        self.runner.run(unwrap(obj).aclose())

    def slow_ask_sentinel(self, delay: float, asks: list[str]) -> Callable[..., Any]:
        real = self.module.ask_sentinel

        async def slow(settings: ConnectionSettings, service: str, commands: Any) -> Any:
            asks.append(settings.address)
            await asyncio.sleep(delay)  # widen the window in which the callers overlap
            return await real(settings, service, commands)

        return slow

    def background(self) -> set[Any]:
        """The tasks of the loop now (but the one asking)."""

        async def tasks() -> set[asyncio.Task[Any]]:
            return asyncio.all_tasks() - {asyncio.current_task()}

        result: set[Any] = self.runner.run(tasks())
        return result

    def watcher_units(self, state: Any, before: set[Any]) -> set[Any]:
        """What runs ``state``'s watcher: its supervisor and subscription tasks."""
        return set(state.watcher.tasks)

    def wait_ended(self, units: Iterable[Any], timeout: float, *, collect: bool = False) -> bool:
        """Wait until every task of ``units`` is done (collecting garbage meanwhile)."""

        async def wait() -> bool:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            pending = {t for t in units if not t.done()}
            while pending and loop.time() < deadline:
                if collect:
                    gc.collect()  # a task may hold the state for a moment
                step = 0.05 if collect else deadline - loop.time()
                _, pending = await asyncio.wait(pending, timeout=step)
            return not pending

        ended: bool = self.runner.run(wait())
        return ended

    def drain_retired(self, state: Any) -> None:
        """Wait until the pools ``state`` retired are closed (once their in-flight commands
        are answered)."""
        retirer = unwrap(state)._retirer

        async def drain() -> None:
            tasks = list(retirer._tasks)
            if tasks:
                await asyncio.wait(tasks, timeout=5)

        self.runner.run(drain())

    def stop(self) -> None:
        self.runner.stop()


World = SyncWorld | AsyncWorld


def make_world(kind: str) -> World:
    return SyncWorld() if kind == "sync" else AsyncWorld()


def run_concurrently(n: int, call: Callable[[], Any]) -> list[Any]:
    """``call()`` in ``n`` threads released together; their results (an error is raised)."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def one(k: int) -> None:
        barrier.wait()
        try:
            results[k] = call()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if errors:
        raise errors[0]
    return results
