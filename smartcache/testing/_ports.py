"""Free ports for local servers, below the kernel's ephemeral range.

Outgoing client sockets take their local port from the ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``), so a server listening inside it can find its
port taken by some client's connection. Cluster nodes also need ``port + 10000`` (the
cluster bus) free, so both are checked and both must lie below the range.
"""

from __future__ import annotations

import random
import socket
import threading
from pathlib import Path

__all__ = ["BUS_OFFSET", "PortAllocator", "ephemeral_range", "port_is_free"]

BUS_OFFSET = 10000
_LOWEST = 10000


def ephemeral_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    """Return the kernel's ephemeral port range (Linux default 32768..60999 when unreadable)."""
    try:
        low, high = Path(path).read_text().split()[:2]
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a listener could bind ``host:port`` (and the wildcard address) right now."""
    for address in dict.fromkeys((host, "0.0.0.0")):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((address, port))
            except OSError:
                return False
    return True


class PortAllocator:
    """Hands out ports no other allocation in this process holds, checked free on the spot."""

    def __init__(self, *, host: str = "127.0.0.1", rng: random.Random | None = None) -> None:
        self._host = host
        self._rng = rng or random.Random()
        self._taken: set[int] = set()
        self._lock = threading.Lock()
        low_eph, _ = ephemeral_range()
        self._high = low_eph - BUS_OFFSET  # exclusive: port + bus port stay below the range
        if self._high <= _LOWEST + 100:
            self._high = low_eph
        self._low = _LOWEST

    def allocate(self, *, with_bus: bool = True, attempts: int = 500) -> int:
        """Return a free port (and free bus port when ``with_bus``); raise OSError if none."""
        with self._lock:
            for _ in range(attempts):
                port = self._rng.randrange(self._low, self._high)
                if port in self._taken or (port + BUS_OFFSET) in self._taken:
                    continue
                if not port_is_free(port, self._host):
                    continue
                if with_bus and not port_is_free(port + BUS_OFFSET, self._host):
                    continue
                self._taken.add(port)
                return port
        raise OSError(f"no free port found in {self._low}..{self._high} after {attempts} tries")

    def release(self, port: int) -> None:
        """Forget ``port`` so it may be handed out again."""
        with self._lock:
            self._taken.discard(port)


ALLOCATOR = PortAllocator()
