"""A real Redis Cluster: N primaries x R replicas, created with ADDSLOTSRANGE/MEET/REPLICATE.

Ready only when every node reports ``cluster_state:ok``, knows every node, agrees with the
others on who owns which slots and who replicates whom, and every replica's link is up.
Faults: kill / pause / resume / restart a node, wait for a failover, migrate slots with
keys in them (SETSLOT IMPORTING/MIGRATING, MIGRATE in batches, SETSLOT NODE everywhere).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

import redis

from smartcache.exceptions import ConfigurationError, TopologyError, TopologyNotReadyError
from smartcache.ops._facts import ClusterNode, parse_cluster_nodes
from smartcache.testing._base import Topology
from smartcache.testing._process import ServerProcess

__all__ = ["Cluster", "ClusterNodeView"]

SLOTS = 16384


#: How long a node may stay not-ready before a lost slot is repaired (see _repair_lost_slots).
_SLOT_REPAIR_GRACE = 8.0


#: one line of ``CLUSTER NODES`` as some node sees it (the parser ``smartcache doctor`` uses)
ClusterNodeView = ClusterNode


class Cluster(Topology):
    """A local Redis Cluster of real processes.

    ``startup_nodes`` lists ``(host, port)`` of every node; ``url`` is the first node's URL.
    """

    kind = "cluster"

    def __init__(
        self,
        primaries: int = 3,
        replicas: int = 1,
        *,
        node_timeout_ms: int = 2000,
        ready_timeout: float = 60.0,
        **kwargs: Any,
    ) -> None:
        if primaries < 1 or replicas < 0:
            raise ConfigurationError(
                f"a cluster needs primaries >= 1 and replicas >= 0, got {primaries}x{replicas}"
            )
        if primaries > SLOTS:
            raise ConfigurationError(f"at most {SLOTS} primaries, got {primaries}")
        super().__init__(**kwargs)
        self.primary_count = primaries
        self.replica_count = replicas
        self.node_timeout_ms = node_timeout_ms
        self.ready_timeout = ready_timeout
        settings = self._data_settings()
        settings.update(
            {
                "cluster-enabled": "yes",
                "cluster-config-file": "nodes.conf",
                "cluster-node-timeout": node_timeout_ms,
                "cluster-replica-validity-factor": 0,
                "cluster-allow-replica-migration": "no",
                "cluster-require-full-coverage": "yes",
            }
        )
        settings.update(self.extra_settings)
        for i in range(primaries * (replicas + 1)):
            self._new_process(f"node-{i}", settings, cluster_bus=True)
        self._ids: dict[str, str] = {}

    # -- creation ---------------------------------------------------------------------
    def _start(self) -> None:
        for proc in self.processes:
            proc.start()
        for proc in self.processes:
            with proc.client(decode_responses=True) as c:
                self._ids[proc.address] = str(c.execute_command("CLUSTER", "MYID"))
        primaries = self.processes[: self.primary_count]
        per = SLOTS // self.primary_count
        for i, proc in enumerate(primaries):
            lo = i * per
            hi = SLOTS - 1 if i == self.primary_count - 1 else lo + per - 1
            with proc.client() as c:
                c.execute_command("CLUSTER", "ADDSLOTSRANGE", lo, hi)
        first = self.processes[0]
        with first.client() as c:
            for proc in self.processes[1:]:
                c.execute_command("CLUSTER", "MEET", proc.host, proc.port)
        total = len(self.processes)
        for proc in self.processes:
            proc.wait_for(
                lambda p=proc: self._knows_all(p, total),  # type: ignore[misc]
                self.ready_timeout,
                what=f"know all {total} cluster nodes",
            )
        for i, proc in enumerate(self.processes[self.primary_count :]):
            primary = primaries[i % self.primary_count]
            with proc.client() as c:
                c.execute_command("CLUSTER", "REPLICATE", self._ids[primary.address])
        self.wait_ready()

    def _knows_all(self, proc: ServerProcess, total: int) -> bool:
        views = self.nodes_view(proc)
        return len(views) == total and all(
            v.connected and "handshake" not in v.flags and "noaddr" not in v.flags for v in views
        )

    def wait_ready(self, timeout: float | None = None) -> None:
        """Wait until every live node is ``cluster_state:ok`` with one agreed view."""
        timeout = self.ready_timeout if timeout is None else timeout
        live = [p for p in self.processes if p.running and not p.paused]
        if not live:
            raise TopologyError("no cluster node is running")
        deadline = time.monotonic() + timeout
        for proc in live:
            try:
                try:
                    proc.wait_for(
                        lambda p=proc: self._node_ready(p),  # type: ignore[misc]
                        max(0.1, min(_SLOT_REPAIR_GRACE, deadline - time.monotonic())),
                        what="reach cluster_state:ok with its replication link up",
                    )
                except TopologyNotReadyError:
                    if time.monotonic() >= deadline:
                        raise
                    with contextlib.suppress(redis.RedisError, OSError):
                        self._repair_lost_slots(proc, live)  # if that is what holds it back
                    proc.wait_for(
                        lambda p=proc: self._node_ready(p),  # type: ignore[misc]
                        max(0.1, deadline - time.monotonic()),
                        what="reach cluster_state:ok with its replication link up",
                    )
            except TopologyNotReadyError as exc:
                raise TopologyNotReadyError(
                    f"{exc}\n--- its own view ---\n{self._own_view(proc)}", node=exc.node
                ) from exc
        live[0].wait_for(
            lambda: self._views_agree(live),
            max(0.1, deadline - time.monotonic()),
            what="agree with every other node on slots and roles",
        )

    def _repair_lost_slots(self, proc: ServerProcess, live: list[ServerProcess]) -> bool:
        """Give back slots ``proc`` lost track of, as ``redis-cli --cluster fix`` would.

        Redis 7.0 can leave a slot unassigned in a new primary's view when its old owner
        rejoins right after a failover and is demoted (seen: the promoted replica ends with
        ``cluster_slots_assigned:16383`` and ``cluster_state:fail`` for good). When every
        other live node names one owner for each such slot, bind it on ``proc`` the same way
        (``ADDSLOTS`` if ``proc`` is that owner, else ``SETSLOT ... NODE``). True if it did.
        """
        own = self.nodes_view(proc)
        assigned = {s for v in own for lo, hi in v.slots for s in range(lo, hi + 1)}
        missing = set(range(SLOTS)) - assigned
        if not missing or len(missing) > 64:
            return False
        owners: dict[int, set[str]] = {s: set() for s in missing}
        for other in live:
            if other is proc:
                continue
            for v in self.nodes_view(other):
                for lo, hi in v.slots:
                    for slot in missing.intersection(range(lo, hi + 1)):
                        owners[slot].add(v.node_id)
        if any(len(ids) != 1 for ids in owners.values()):
            return False
        my_id = self.node_id(proc)
        with proc.client() as c:
            for slot, (owner,) in sorted(owners.items()):
                if owner == my_id:
                    c.execute_command("CLUSTER", "ADDSLOTS", slot)
                else:
                    c.execute_command("CLUSTER", "SETSLOT", slot, "NODE", owner)
        return True

    def _own_view(self, proc: ServerProcess) -> str:
        """``CLUSTER INFO`` and ``CLUSTER NODES`` as ``proc`` sees them (for error messages)."""
        try:
            with proc.client(decode_responses=True) as c:
                info = c.execute_command("CLUSTER", "INFO")
                nodes = c.execute_command("CLUSTER", "NODES")
        except Exception as exc:  # diagnostics only
            return f"(unavailable: {exc!r})"
        return f"{info}\n{nodes}"

    def _node_ready(self, proc: ServerProcess) -> bool:
        with proc.client(decode_responses=True) as c:
            info = c.execute_command("CLUSTER", "INFO")
            fields = dict(line.split(":", 1) for line in str(info).splitlines() if ":" in line)
            if fields.get("cluster_state") != "ok":
                return False
            if fields.get("cluster_slots_assigned") != str(SLOTS):
                return False
            role = c.execute_command("ROLE")
            if role[0] in ("slave", "replica"):
                repl = c.info("replication")
                return bool(repl.get("master_link_status") == "up")
            return True

    def _views_agree(self, live: list[ServerProcess]) -> bool:
        live_addresses = {p.address for p in live}
        signatures = []
        for proc in live:
            views = self.nodes_view(proc)
            by_id = {v.node_id: v.address for v in views}
            sig = frozenset(
                (v.address, v.is_primary, by_id.get(v.primary_id or "", ""), v.slots)
                for v in views
                if v.address in live_addresses and not v.failed
            )
            if len(sig) != len(live_addresses):
                return False
            signatures.append(sig)
        return all(s == signatures[0] for s in signatures)

    # -- views ------------------------------------------------------------------------
    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every node."""
        return [(p.host, p.port) for p in self.processes]

    @property
    def url(self) -> str:
        """URL of the first node (a cluster client discovers the rest)."""
        return self.processes[0].url

    @property
    def urls(self) -> list[str]:
        """URL of every node."""
        return [p.url for p in self.processes]

    def node_id(self, proc: ServerProcess) -> str:
        """The cluster node id of ``proc``."""
        return self._ids[proc.address]

    def _any_live(self, exclude: Iterable[ServerProcess] = ()) -> ServerProcess:
        skip = set(map(id, exclude))
        for proc in self.processes:
            if proc.running and not proc.paused and id(proc) not in skip:
                return proc
        raise TopologyError("no live cluster node to ask")

    def nodes_view(self, proc: ServerProcess | None = None) -> list[ClusterNodeView]:
        """``CLUSTER NODES`` as ``proc`` (default: any live node) sees it."""
        proc = proc or self._any_live()
        with proc.client(decode_responses=True) as c:
            return parse_cluster_nodes(str(c.execute_command("CLUSTER", "NODES")))

    def _by_address(self, address: str) -> ServerProcess:
        return self.node(address)

    def primaries(self) -> list[ServerProcess]:
        """Processes that are primaries with slots now (as a live node sees it)."""
        return [
            self._by_address(v.address)
            for v in self.nodes_view()
            if v.is_primary and v.slots and not v.failed
        ]

    def replicas(self) -> list[ServerProcess]:
        """Processes that are replicas now."""
        return [self._by_address(v.address) for v in self.nodes_view() if not v.is_primary]

    def replicas_of(self, primary: ServerProcess) -> list[ServerProcess]:
        """Replicas of ``primary`` now."""
        pid = self.node_id(primary)
        return [self._by_address(v.address) for v in self.nodes_view() if v.primary_id == pid]

    def slots_of(self, proc: ServerProcess) -> list[int]:
        """Slots ``proc`` owns now."""
        for v in self.nodes_view():
            if v.address == proc.address:
                return [s for lo, hi in v.slots for s in range(lo, hi + 1)]
        return []

    def primary_of_slot(self, slot: int) -> ServerProcess:
        """The primary that owns ``slot`` now."""
        for v in self.nodes_view():
            if v.is_primary and any(lo <= slot <= hi for lo, hi in v.slots):
                return self._by_address(v.address)
        raise TopologyError(f"slot {slot} is not covered")

    # -- faults -------------------------------------------------------------------------
    def kill(self, proc: ServerProcess) -> None:
        """SIGKILL a node."""
        proc.kill()

    def pause(self, proc: ServerProcess) -> None:
        """SIGSTOP a node (it keeps its sockets, answers nothing)."""
        proc.pause()

    def resume(self, proc: ServerProcess) -> None:
        """SIGCONT a paused node."""
        proc.resume()

    def restart(self, proc: ServerProcess, *, wait: bool = True) -> None:
        """Restart a killed node on its port with its config; it rejoins (usually as replica)."""
        proc.restart()
        if wait:
            self.wait_ready()

    def wait_for_failover(self, old_primary: ServerProcess, timeout: float = 30.0) -> ServerProcess:
        """Wait until a live node owns the slots ``old_primary`` had; return that node."""
        old_id = self.node_id(old_primary)
        witness = self._any_live(exclude=[old_primary])
        candidates = {v.address for v in self.nodes_view(witness) if v.primary_id == old_id}
        if not candidates:
            raise TopologyError(f"{old_primary.address} has no replica that could take over")
        result: list[ServerProcess] = []

        def promoted() -> bool:
            for v in self.nodes_view(witness):
                if v.address in candidates and v.is_primary and v.slots and not v.failed:
                    result.append(self._by_address(v.address))
                    return True
            return False

        witness.wait_for(promoted, timeout, what=f"promote a replica of {old_primary.address}")
        self.wait_ready(timeout)
        return result[0]

    def heal(self, timeout: float | None = None) -> None:
        """Resume paused nodes, restart killed ones, and wait until the cluster is ready."""
        for proc in self.processes:
            if proc.paused:
                proc.resume()
            if not proc.running:
                proc.restart()
        self.wait_ready(timeout)

    def failover(self, replica: ServerProcess, *, mode: str | None = None) -> None:
        """``CLUSTER FAILOVER [FORCE|TAKEOVER]`` on ``replica``; waits for the new view."""
        args: list[str] = ["CLUSTER", "FAILOVER"] + ([mode] if mode else [])
        with replica.client() as c:
            c.execute_command(*args)

        def is_primary() -> bool:
            with replica.client(decode_responses=True) as c:
                return bool(c.execute_command("ROLE")[0] == "master")

        replica.wait_for(is_primary, self.ready_timeout, what="become primary")
        self.wait_ready()

    def migrate_slots(
        self,
        source: ServerProcess,
        target: ServerProcess,
        count: int | None = None,
        *,
        slots: Iterable[int] | None = None,
        batch: int = 100,
        timeout_ms: int = 5000,
        on_slot: Callable[[int], None] | None = None,
    ) -> list[int]:
        """Move slots from ``source`` to ``target`` while keys exist, as redis-cli does.

        Per slot: SETSLOT IMPORTING on the target, SETSLOT MIGRATING on the source, MIGRATE
        the slot's keys in batches of ``batch``, then SETSLOT NODE on the target, the source
        and every other primary. ``count`` takes the source's lowest slots; ``slots`` names
        them. ``on_slot`` is called after each slot moved. Returns the slots moved.
        """
        owned = self.slots_of(source)
        if slots is None:
            if count is None:
                raise ConfigurationError("migrate_slots needs count= or slots=")
            chosen = owned[:count]
        else:
            chosen = list(slots)
            stray = sorted(set(chosen) - set(owned))
            if stray:
                raise ConfigurationError(f"{source.address} does not own slots {stray[:5]}...")
        if count is not None and len(chosen) < count:
            raise ConfigurationError(
                f"{source.address} owns {len(owned)} slots, cannot move {count}"
            )
        src_id, dst_id = self.node_id(source), self.node_id(target)
        # the one implementation of a slot move: smartcache.ops (what `smartcache cluster
        # reshard` runs), here with REPLACE as redis-cli's fix does
        from smartcache.ops import Move, Resharder  # noqa: PLC0415 - ops imports the client

        auth: dict[str, Any] = {"password": self.password} if self.password else {}
        with Resharder(
            source.url, batch=batch, migrate_timeout_ms=timeout_ms, replace=True, **auth
        ) as resharder:
            for slot in chosen:
                resharder.move(Move(slot, src_id, dst_id))
                if on_slot is not None:
                    on_slot(slot)
        return chosen

    def describe(self) -> dict[str, Any]:
        """URLs and startup nodes."""
        return {
            **super().describe(),
            "url": self.url,
            "startup_nodes": [f"{h}:{p}" for h, p in self.startup_nodes],
            "primaries": self.primary_count,
            "replicas": self.replica_count,
        }

    def __repr__(self) -> str:
        shape = f"{self.primary_count}x{self.replica_count}"
        return f"<Cluster {shape} {self.url} {self.binary.label}>"
