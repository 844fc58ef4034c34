"""The write-through repair log: retry backoff and the fsync'd JSON-lines file of keys to DEL.

``backoff_delay`` and ``parse_repair_log`` are pure. The rest is the file I/O: one JSON line
per :class:`RepairRecord`, appended and fsync'd when a cache step failed after the database
write, and atomically rewritten without the records a repair resolved. Every access holds a
lock shared by the threads of this process and (POSIX ``flock`` on ``<log>.lock``) by other
processes using the same log.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from smartcache.cache._policy import RandomSource

if sys.platform != "win32":
    import fcntl

__all__ = [
    "RepairRecord",
    "append_repair_log",
    "backoff_delay",
    "parse_repair_log",
    "read_repair_log",
    "rewrite_repair_log",
]


def backoff_delay(attempt: int, *, base: float, cap: float, rng: RandomSource) -> float:
    """Seconds to sleep before retry ``attempt + 1`` (0-based): full jitter.

    ``uniform(0, min(cap, base * 2**attempt))``: spread out, so processes that failed together
    do not retry together, and never longer than ``cap``.
    """
    if attempt < 0:
        raise ValueError("attempt must be >= 0")
    return rng.uniform(0.0, min(cap, base * 2.0 ** min(attempt, 64)))


@dataclass(frozen=True, slots=True)
class RepairRecord:
    """One repair-log line: ``key`` needs a DEL; ``id`` tells two records of a key apart."""

    key: str
    id: str
    at: float = 0.0

    def line(self) -> str:
        """The record as one JSON line (with its newline)."""
        return json.dumps({"key": self.key, "id": self.id, "at": self.at}) + "\n"


def parse_repair_log(text: str) -> list[RepairRecord]:
    """The records of a repair log; blank and unreadable lines (a torn write) are skipped.

    A line without ``"id"`` (written by hand) is identified by its own text.
    """
    records = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("key"), str):
            continue
        at = obj.get("at")
        records.append(
            RepairRecord(
                obj["key"],
                str(obj.get("id") or line),
                float(at) if isinstance(at, int | float) else 0.0,
            )
        )
    return records


_FILE_LOCK = threading.Lock()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Exclusive use of the log between threads and (POSIX ``flock``) processes."""
    with _FILE_LOCK:
        if sys.platform == "win32":
            yield
            return
        with open(f"{path}.lock", "a") as lock:  # never deleted: a stable inode to lock
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)


def _read_unlocked(path: Path) -> list[RepairRecord]:
    try:
        return parse_repair_log(path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        return []


def read_repair_log(path: str | os.PathLike[str]) -> list[RepairRecord]:
    """The records in the repair log at ``path`` (none if it does not exist)."""
    path = Path(path)
    with _locked(path):
        return _read_unlocked(path)


def append_repair_log(path: str | os.PathLike[str], records: Sequence[RepairRecord]) -> None:
    """Append ``records`` and fsync before returning (a torn last line is closed first)."""
    path = Path(path)
    data = "".join(r.line() for r in records).encode()
    with _locked(path), open(path, "a+b") as f:
        if f.seek(0, os.SEEK_END) > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                data = b"\n" + data  # after a crash mid-line: keep the next record whole
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def rewrite_repair_log(path: str | os.PathLike[str], drop_ids: set[str]) -> list[RepairRecord]:
    """Atomically rewrite the log without the records in ``drop_ids``; the records kept.

    The file is re-read under the lock, so records other processes appended meanwhile stay.
    """
    path = Path(path)
    with _locked(path):
        kept = [r for r in _read_unlocked(path) if r.id not in drop_ids]
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write("".join(r.line() for r in kept).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        with contextlib.suppress(OSError):  # make the rename itself durable (POSIX)
            fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    return kept
