"""What every local topology shares: a working directory, its processes, stop by PID."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from smartcache.testing._binary import ServerBinary, find_server_binary
from smartcache.testing._ports import ALLOCATOR
from smartcache.testing._process import ServerProcess

__all__ = ["BASE_SETTINGS", "Topology"]

# Settings every test server gets: nothing on disk, DEBUG allowed (DEBUG SLEEP for hang tests).
BASE_SETTINGS: dict[str, str | int | None] = {
    "save": "",
    "appendonly": "no",
    "enable-debug-command": "yes",
    "loglevel": "notice",
    # Replicas sync at once (the default waits 5 s for more replicas to share one transfer).
    "repl-diskless-sync": "yes",
    "repl-diskless-sync-delay": 0,
}


class Topology:
    """Base of :class:`Standalone`, :class:`Cluster` and :class:`SentinelGroup`."""

    kind = "topology"

    def __init__(
        self,
        *,
        binary: ServerBinary | str | None = None,
        directory: str | Path | None = None,
        host: str = "127.0.0.1",
        password: str | None = None,
        extra_settings: dict[str, str | int | None] | None = None,
    ) -> None:
        self.binary = binary if isinstance(binary, ServerBinary) else find_server_binary(binary)
        self._own_dir = directory is None
        self.directory = Path(directory or tempfile.mkdtemp(prefix=f"smartcache-{self.kind}-"))
        self.host = host
        self.password = password
        self.extra_settings = dict(extra_settings or {})
        self.processes: list[ServerProcess] = []
        self._stopped = False

    def _new_process(
        self,
        name: str,
        settings: dict[str, str | int | None],
        *,
        sentinel: bool = False,
        cluster_bus: bool = False,
    ) -> ServerProcess:
        proc = ServerProcess(
            self.binary,
            self.directory / name,
            name=name,
            settings=settings,
            sentinel=sentinel,
            host=self.host,
            cluster_bus=cluster_bus,
            password=self.password,
        )
        self.processes.append(proc)
        return proc

    def _data_settings(self) -> dict[str, str | int | None]:
        settings = dict(BASE_SETTINGS)
        if self.password:
            settings["requirepass"] = self.password
            settings["masterauth"] = self.password
        settings.update(self.extra_settings)
        return settings

    @property
    def pids(self) -> list[int]:
        """PIDs of this topology's running processes."""
        return [p.pid for p in self.processes if p.running and p.pid is not None]

    def start(self) -> Self:
        """Start every process and wait until the topology is ready; stop all on failure."""
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        """Stop every process by PID and remove the working directory (if we made it)."""
        for proc in self.processes:
            proc.stop(graceful=False)
            if proc.port:
                ALLOCATOR.release(proc.port)
        self._stopped = True
        if self._own_dir:
            shutil.rmtree(self.directory, ignore_errors=True)

    def node(self, address: str) -> ServerProcess:
        """The process listening on ``host:port``."""
        for proc in self.processes:
            if proc.address == address:
                return proc
        raise KeyError(address)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def describe(self) -> dict[str, Any]:
        """A JSON-friendly description (URLs, addresses, PIDs) for ``smartcache dev``."""
        return {
            "kind": self.kind,
            "server": self.binary.label,
            "pids": self.pids,
            "directory": str(self.directory),
        }
