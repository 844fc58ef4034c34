"""A standalone server: one process, one port."""

from __future__ import annotations

from typing import Any

from smartcache.testing._base import Topology
from smartcache.testing._process import ServerProcess

__all__ = ["Standalone"]


class Standalone(Topology):
    """One real server process. ``url``, ``host``, ``port`` tell where it listens."""

    kind = "standalone"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server: ServerProcess = self._new_process("standalone", self._data_settings())

    def _start(self) -> None:
        self.server.start()

    @property
    def port(self) -> int:
        """The server's port."""
        return self.server.port

    @property
    def url(self) -> str:
        """``redis://host:port`` (password not included; pass it separately)."""
        return self.server.url

    def kill(self) -> None:
        """SIGKILL the server."""
        self.server.kill()

    def pause(self) -> None:
        """SIGSTOP the server."""
        self.server.pause()

    def resume(self) -> None:
        """SIGCONT the server."""
        self.server.resume()

    def restart(self) -> None:
        """Start the killed server again on its port with its config."""
        self.server.restart()

    def describe(self) -> dict[str, Any]:
        """URL, address and PID."""
        return {**super().describe(), "url": self.url, "address": self.server.address}

    def __repr__(self) -> str:
        return f"<Standalone {self.server.address} {self.binary.label}>"
