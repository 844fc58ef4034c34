"""A real SQLite file standing in for "the database": it counts the queries it answers."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any


class CountingDB:
    """``users(id, name)`` in a SQLite file; ``get_user`` counts queries, may be made slow."""

    def __init__(self, path: Path, rows: int = 100, delay: float = 0.0) -> None:
        self.path = path
        self.delay = delay
        self._lock = threading.Lock()
        self.queries = 0
        self.by_id: dict[Any, int] = {}
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS users (id INTEGER PRIMARY KEY, name TEXT)")
            conn.execute("CREATE TABLE IF NOT EXISTS query_log (user_id INTEGER, pid INTEGER)")
            conn.executemany(
                "INSERT OR REPLACE INTO users VALUES (?, ?)",
                [(i, f"user-{i}") for i in range(1, rows + 1)],
            )

    def get_user(self, user_id: int) -> dict[str, Any] | None:
        with self._lock:
            self.queries += 1
            self.by_id[user_id] = self.by_id.get(user_id, 0) + 1
        if self.delay:
            time.sleep(self.delay)  # the query's latency, not synchronisation
        with sqlite3.connect(self.path, timeout=30) as conn:
            row = conn.execute("SELECT id, name FROM users WHERE id = ?", (user_id,)).fetchone()
            conn.execute("INSERT INTO query_log VALUES (?, ?)", (user_id, os.getpid()))
        return None if row is None else {"id": row[0], "name": row[1]}

    def logged_queries(self) -> int:
        """Queries answered by every process using this file."""
        with sqlite3.connect(self.path, timeout=30) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM query_log").fetchone()[0])
