"""A real Sentinel group: 1 primary, R replicas, S sentinels (default 1 + 2 + 3).

Ready when every replica's link is up and every sentinel sees the primary, its replicas and
every other sentinel. Faults: kill / pause / resume / restart a node, a forced failover
(``SENTINEL FAILOVER``), and waiting for the failover after a primary was killed.
"""

from __future__ import annotations

import time
from typing import Any

from smartcache.exceptions import ConfigurationError, TopologyError
from smartcache.testing._base import Topology
from smartcache.testing._process import ServerProcess

__all__ = ["SentinelGroup"]


class SentinelGroup(Topology):
    """A primary with replicas watched by sentinels, all real processes."""

    kind = "sentinel"

    def __init__(
        self,
        replicas: int = 2,
        sentinels: int = 3,
        *,
        service_name: str = "mymaster",
        quorum: int | None = None,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 5000,
        ready_timeout: float = 60.0,
        **kwargs: Any,
    ) -> None:
        if replicas < 0 or sentinels < 1:
            raise ConfigurationError(
                f"a Sentinel group needs replicas >= 0 and sentinels >= 1, got {replicas}, "
                f"{sentinels}"
            )
        if not service_name or " " in service_name:
            raise ConfigurationError(f"service_name must be one word, got {service_name!r}")
        super().__init__(**kwargs)
        self.service_name = service_name
        self.quorum = quorum if quorum is not None else sentinels // 2 + 1
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.ready_timeout = ready_timeout
        self.data_nodes: list[ServerProcess] = [
            self._new_process(f"data-{i}", self._data_settings()) for i in range(replicas + 1)
        ]
        self.sentinels: list[ServerProcess] = []
        self._sentinel_count = sentinels

    def _start(self) -> None:
        primary, *replicas = self.data_nodes
        primary.start()
        for node in replicas:
            node._settings["replicaof"] = f"{primary.host} {primary.port}"
            node.start()
        self._wait_replication(primary, replicas)
        name = self.service_name
        for i in range(self._sentinel_count):
            settings: dict[str, str | int | None] = {
                f"sentinel monitor {name}": f"{primary.host} {primary.port} {self.quorum}",
                f"sentinel down-after-milliseconds {name}": self.down_after_ms,
                f"sentinel failover-timeout {name}": self.failover_timeout_ms,
                f"sentinel parallel-syncs {name}": 1,
            }
            if self.password:
                settings[f"sentinel auth-pass {name}"] = self.password
            proc = self._new_process(f"sentinel-{i}", settings, sentinel=True)
            self.sentinels.append(proc)
            proc.start()
        self.wait_ready()

    def _wait_replication(self, primary: ServerProcess, replicas: list[ServerProcess]) -> None:
        for node in replicas:

            def link_up(n: ServerProcess = node) -> bool:
                with n.client(decode_responses=True) as c:
                    return bool(c.info("replication").get("master_link_status") == "up")

            node.wait_for(link_up, self.ready_timeout, what="connect to its primary")

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until every live sentinel sees the primary, its replicas and its peers."""
        timeout = self.ready_timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        live_sentinels = [s for s in self.sentinels if s.running and not s.paused]
        live_data = [d for d in self.data_nodes if d.running and not d.paused]
        for sentinel in live_sentinels:

            def sees_all(s: ServerProcess = sentinel) -> bool:
                with s.client(decode_responses=True) as c:
                    peers = c.execute_command("SENTINEL", "SENTINELS", self.service_name)
                    up_peers = [p for p in peers if "down" not in _as_dict(p).get("flags", "")]
                    if len(up_peers) < len(live_sentinels) - 1:
                        return False
                    master = _as_dict(c.execute_command("SENTINEL", "MASTER", self.service_name))
                    if "down" in master.get("flags", "") or master.get("flags") != "master":
                        return False
                    reps = c.execute_command("SENTINEL", "REPLICAS", self.service_name)
                    ok = [
                        r
                        for r in reps
                        if _as_dict(r).get("flags") == "slave"
                        and _as_dict(r).get("master-link-status") == "ok"
                    ]
                    return len(ok) >= len(live_data) - 1

            sentinel.wait_for(
                sees_all,
                max(0.1, deadline - time.monotonic()),
                what="see the primary, every replica and every other sentinel",
            )

    # -- views --------------------------------------------------------------------------
    @property
    def sentinel_addresses(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every sentinel."""
        return [(s.host, s.port) for s in self.sentinels]

    @property
    def url(self) -> str:
        """``redis+sentinel://h1:p1,h2:p2,.../service_name/0`` (no password in it)."""
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinel_addresses)
        return f"redis+sentinel://{hosts}/{self.service_name}/0"

    def _ask_sentinel(self) -> ServerProcess:
        for s in self.sentinels:
            if s.running and not s.paused:
                return s
        raise TopologyError("no sentinel is running")

    def primary_address(self, sentinel: ServerProcess | None = None) -> str:
        """``host:port`` of the primary as a sentinel reports it."""
        s = sentinel or self._ask_sentinel()
        with s.client(decode_responses=True) as c:
            host, port = c.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", self.service_name)
        return f"{host}:{port}"

    def primary(self) -> ServerProcess:
        """The data node that the sentinels report as primary now."""
        return self.node(self.primary_address())

    def replicas(self) -> list[ServerProcess]:
        """Data nodes other than the current primary."""
        primary = self.primary_address()
        return [d for d in self.data_nodes if d.address != primary]

    # -- faults -------------------------------------------------------------------------
    def kill(self, proc: ServerProcess) -> None:
        """SIGKILL a data node or sentinel."""
        proc.kill()

    def pause(self, proc: ServerProcess) -> None:
        """SIGSTOP a node."""
        proc.pause()

    def resume(self, proc: ServerProcess) -> None:
        """SIGCONT a paused node."""
        proc.resume()

    def restart(self, proc: ServerProcess) -> None:
        """Restart a killed node on its port with its (sentinel-rewritten) config."""
        proc.restart()

    def wait_for_failover(self, old_primary: ServerProcess, timeout: float = 30.0) -> ServerProcess:
        """Wait until every live sentinel reports a new primary that says it is one."""
        old = old_primary.address
        result: list[ServerProcess] = []

        def switched() -> bool:
            addresses = {
                self.primary_address(s) for s in self.sentinels if s.running and not s.paused
            }
            if len(addresses) != 1 or old in addresses:
                return False
            node = self.node(addresses.pop())
            with node.client(decode_responses=True) as c:
                if c.execute_command("ROLE")[0] != "master":
                    return False
            result.append(node)
            return True

        self._ask_sentinel().wait_for(switched, timeout, what=f"fail over from {old}")
        return result[-1]

    def failover(self, timeout: float = 30.0) -> ServerProcess:
        """``SENTINEL FAILOVER``: promote a replica with the old primary left running."""
        old = self.primary()
        with self._ask_sentinel().client() as c:
            c.execute_command("SENTINEL", "FAILOVER", self.service_name)
        return self.wait_for_failover(old, timeout)

    def heal(self, timeout: float | None = None) -> None:
        """Resume paused nodes, restart killed ones, wait until the group is ready again."""
        for proc in self.processes:
            if proc.paused:
                proc.resume()
            if not proc.running:
                proc.restart()
        self.wait_ready(timeout)

    def describe(self) -> dict[str, Any]:
        """URL, service name and sentinel addresses."""
        return {
            **super().describe(),
            "url": self.url,
            "service_name": self.service_name,
            "sentinels": [f"{h}:{p}" for h, p in self.sentinel_addresses],
            "primary": self.primary_address(),
        }

    def __repr__(self) -> str:
        return f"<SentinelGroup {self.service_name} {self.url} {self.binary.label}>"


def _as_dict(reply: Any) -> dict[str, str]:
    if isinstance(reply, dict):
        return {str(k): str(v) for k, v in reply.items()}
    items = list(reply)
    return {str(items[i]): str(items[i + 1]) for i in range(0, len(items) - 1, 2)}
