"""A write-behind process for the crash test: it is SIGKILLed while its flusher is mid-batch.

``python -m tests.integration._wb_child URL DB NAME KEYS ROUNDS``. Writes ROUNDS values to
each of KEYS keys through WriteBehind (every 7th key is deleted in the last round), prints
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

from smartcache import SmartClient
from smartcache.cache import SQLiteStore, StoreItem, WriteBehind
from smartcache.cache._wb_core import FlushOptions


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
    url, db, name, keys, rounds = sys.argv[1:6]
    hang = threading.Event()
    store = HangingStore(db, hang)
    client = SmartClient.from_url(url)
    wb = WriteBehind(
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
