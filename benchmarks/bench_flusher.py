"""Write-behind flusher throughput and CPU per row, for comparing two trees of smartcache.

    .venv/bin/python -m benchmarks.bench_flusher [--tree PATH] [--rows 10000] [--drains 7]
        [--store sqlite|null] [--url redis://...] [--no-pin]

Each drain is ``bench_write``'s flusher case (its ``drain``): a fresh queue pre-filled with
one change per distinct key (~70-byte JSON values), drained by one ``Flusher`` with
``batch_size=500`` calling ``run_once()`` until a round reads nothing. Printed (one JSON
line): the median rows/s, each drain's rows/s, and the medians of the CPU microseconds
per row spent by this process (the flusher, and SQLite in it) and by the server
(``INFO cpu``). CPU time moves
far less than wall time on a shared VM, where a SQLite commit's fsync is the noisiest part.

``--tree`` imports smartcache from another checkout (e.g. ``git worktree add /tmp/before
REV``), so two versions run on the same machine with the same driver; alternate them in
separate processes::

    for i in 1 2 3 4 5; do for t in /tmp/before .; do
        .venv/bin/python -m benchmarks.bench_flusher --tree $t; done; done

``--store null`` swaps the database for one that does nothing: what is left is the queue's
cost (Redis and the flusher's own work). A server is started here (a ``Standalone``) unless
``--url`` names one; with 2+ CPUs it and this process are pinned to one CPU, as in
``bench_client``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", default=None, help="import smartcache from this checkout")
    parser.add_argument("--rows", type=int, default=10_000, help="changes per drain")
    parser.add_argument("--drains", type=int, default=7)
    parser.add_argument("--store", choices=("sqlite", "null"), default="sqlite")
    parser.add_argument("--url", default=None, help="a server to use instead of starting one")
    parser.add_argument("--no-pin", action="store_true", help="leave the CPUs unpinned")
    args = parser.parse_args()
    if args.tree:
        sys.path.insert(0, os.path.abspath(args.tree))
        for name in [m for m in sys.modules if m == "smartcache" or m.startswith("smartcache.")]:
            del sys.modules[name]
    import smartcache
    from smartcache.testing import Standalone

    tree = os.path.dirname(os.path.dirname(os.path.abspath(smartcache.__file__)))
    if args.url:
        print(json.dumps({"tree": tree, **run(args, args.url)}))
        return
    with Standalone() as server:
        if not args.no_pin and len(os.sched_getaffinity(0)) >= 2:
            cpu = min(os.sched_getaffinity(0))
            for pid in [*server.pids, 0]:
                os.sched_setaffinity(pid, {cpu})
        print(json.dumps({"tree": tree, **run(args, server.url)}))


class NullStore:
    """A database that does nothing (the queue's own cost is what remains)."""

    def write_many(self, items: Any) -> None:
        """Nothing."""

    def delete_many(self, items: Any) -> None:
        """Nothing."""

    def ping(self) -> bool:
        """Always up."""
        return True


def run(args: argparse.Namespace, url: str) -> dict[str, Any]:
    from benchmarks.bench_write import drain  # after --tree: it imports smartcache
    from smartcache.cache import SQLiteStore
    from smartcache.sync.client import SmartClient

    client = SmartClient.from_url(url)
    folder = tempfile.TemporaryDirectory()
    store: Any = NullStore()
    if args.store == "sqlite":
        store = SQLiteStore(os.path.join(folder.name, "bench.db"), table="bench")

    def server_cpu() -> float:
        info = client.info("cpu")
        return float(info["used_cpu_sys"]) + float(info["used_cpu_user"])

    cpu: list[tuple[float, float]] = []  # (flusher, server) CPU seconds of each drain

    @contextlib.contextmanager
    def meter() -> Iterator[None]:
        server0, flusher0 = server_cpu(), time.process_time()
        yield
        cpu.append((time.process_time() - flusher0, server_cpu() - server0))

    try:
        drain(client, store, 200, 500)  # warm up
        rates = [
            args.rows / drain(client, store, args.rows, 500, meter) for _ in range(args.drains)
        ]
    finally:
        client.close()
        if hasattr(store, "close"):
            store.close()
        folder.cleanup()
    per_row = 1e6 / args.rows
    return {
        "store": args.store,
        "rows_per_s": round(statistics.median(rates)),
        "drains": [round(r) for r in rates],
        "flusher_cpu_us_per_row": round(statistics.median(c for c, _ in cpu) * per_row, 1),
        "server_cpu_us_per_row": round(statistics.median(s for _, s in cpu) * per_row, 1),
    }


if __name__ == "__main__":
    main()
