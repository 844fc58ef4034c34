"""A write-behind process for the crash test: it is SIGKILLed while its flusher is mid-batch.

``python -m tests.integration._wb_child KIND URL DB NAME KEYS ROUNDS``. Writes ROUNDS values
to each of KEYS keys (every 7th key is deleted in the last round) through WriteBehind (KIND
``sync``) or AsyncWriteBehind (``async``: its flusher a task of a loop in a thread, see
tests/integration/_cache_world.py), prints
``WRITES <json of key -> [value, version]>`` once every write is acknowledged, then lets its
flusher start a batch that writes half its rows inside an open SQLite transaction, prints
``MIDBATCH`` and hangs there until killed.
"""

from __future__ import annotations

import json
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence

from smartcache.cache import SQLiteStore, StoreItem
from smartcache.cache._wb_core import FlushOptions
from tests.integration._cache_world import World


class HangingStore(SQLiteStore):
    """Commits normally until ``hang`` is set; then hangs inside an uncommitted batch."""

    def __init__(self, path: str, hang: threading.Event) -> None:
        super().__init__(path)
        self.hang = hang
        self.path = path

    def write_many(self, items: Sequence[StoreItem]) -> None:
        if not self.hang.is_set() or len(items) < 2:
            super().write_many(items)
            return
        conn = sqlite3.connect(self.path, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")
        for item in items[: len(items) // 2]:
            conn.execute(
                "UPDATE smartcache_store SET value = ? WHERE key = ?", (b'"torn"', item.key)
            )
        print("MIDBATCH", flush=True)
        time.sleep(3600)  # SIGKILL arrives here, the transaction open


def main() -> None:
    kind, url, db, name, keys, rounds = sys.argv[1:7]
    hang = threading.Event()
    store = HangingStore(db, hang)
    world = World(kind)
    client = world.client(url=url)
    wb = world.write_behind(
        client,
        store,
        name=name,
        partitions=4,
        options=FlushOptions(batch_size=50),
        poll_interval=0.2,
    )
    last: dict[str, list[str | None]] = {}
    n = int(rounds)
    for r in range(n):
        for i in range(int(keys)):
            key = f"user:{i}"
            if r == n - 1 and i % 7 == 0:
                last[key] = [None, wb.delete(key)]
            else:
                value = f"{key}:r{r}"
                last[key] = [value, wb.set(key, value)]
        if r == n - 2:
            hang.set()  # the last round's batches hang mid-transaction
    print("WRITES " + json.dumps(last), flush=True)
    time.sleep(3600)


if __name__ == "__main__":
    main()
