"""Move slots between the primaries of a live cluster, safely under traffic and resumably.

Per slot, the protocol of the cluster specification: ``CLUSTER SETSLOT <slot> IMPORTING``
on the target, ``MIGRATING`` on the source, the slot's keys moved in batches with
``MIGRATE ... KEYS`` (atomic per batch: a key is on one side or the other, and clients
follow ``ASK``/``TRYAGAIN`` meanwhile), then ``SETSLOT <slot> NODE <target>`` on the
target, the source and every other primary. A lost reply is answered by asking the
source again for the slot's keys (what moved is gone from it), so each step can be
repeated. The plan and the slots done are kept in a state file: an interrupted run is
resumed with :meth:`Resharder.resume`, and a slot it left open is finished first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.exceptions as rx

from smartcache.exceptions import ConfigurationError, SmartCacheError
from smartcache.ops._facts import ClusterNode, parse_cluster_nodes
from smartcache.ops._nodes import ERRORS, Connector, error_text, mask_url
from smartcache.ops._plan import Move, plan_rebalance, plan_reshard
from smartcache.sync.client import SmartClient
from smartcache.wire.settings import ConnectionSettings

__all__ = ["ReshardError", "ReshardProgress", "Resharder"]


class ReshardError(SmartCacheError):
    """A slot could not be moved; the message names the slot, the step and the fix."""


@dataclass(slots=True)
class ReshardProgress:
    """Where a run stands (handed to the progress callback after each batch)."""

    slots_total: int
    keys_total: int
    slots_done: int = 0
    keys_moved: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def seconds(self) -> float:
        """Seconds since the run started."""
        return time.monotonic() - self.started

    @property
    def keys_per_second(self) -> float:
        """Keys moved per second so far."""
        return self.keys_moved / self.seconds if self.seconds > 0 else 0.0

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the rate so far (None before the first keys moved)."""
        rate = self.keys_per_second
        if rate <= 0:
            return None
        return max(0.0, (self.keys_total - self.keys_moved) / rate)


Progress = Callable[[ReshardProgress], None]

#: transient MIGRATE failures worth another try (the target was slow or busy)
_TRANSIENT = ("IOERR", "TIMEOUT", "LOADING", "TRYAGAIN")
_MIGRATE_ATTEMPTS = 6


class Resharder:
    """Plans and carries out slot moves on the cluster at ``url`` (any node's URL).

    ``batch``: keys per ``MIGRATE``; ``migrate_timeout_ms``: MIGRATE's own timeout;
    ``replace``: overwrite a key that already exists on the target (off: such a slot
    stops with an error naming the key); ``state_file``: where the plan and progress are
    kept (default ``~/.cache/smartcache/reshard-<cluster>.json``); ``progress``: called
    after each batch. ``client_kwargs`` (``password=``, TLS options) go to every node.
    """

    def __init__(
        self,
        url: str,
        *,
        batch: int = 100,
        migrate_timeout_ms: int = 10_000,
        replace: bool = False,
        state_file: str | os.PathLike[str] | None = None,
        progress: Progress | None = None,
        timeout: float = 30.0,
        **client_kwargs: Any,
    ) -> None:
        if batch < 1:
            raise ConfigurationError(f"batch must be >= 1 key, got {batch}")
        settings = {**ConnectionSettings.from_url(url).to_redis_kwargs(), **client_kwargs}
        self.url = mask_url(url)
        self.first = f"{settings.get('host', 'localhost')}:{settings.get('port', 6379)}"
        self.connector = Connector(settings, timeout)
        self.batch = batch
        self.migrate_timeout_ms = migrate_timeout_ms
        self.replace = replace
        self.progress = progress
        self._state_file = Path(state_file) if state_file is not None else None
        self._clients: dict[str, SmartClient] = {}
        self._stack = contextlib.ExitStack()
        self._last_view: list[ClusterNode] = []

    # -- the cluster now ----------------------------------------------------------------
    def view(self) -> list[ClusterNode]:
        """``CLUSTER NODES`` from the URL's node (or, if it is down, any node it knew)."""
        errors: list[str] = []
        candidates = [self.first, *[n.address for n in self._last_view]]
        for address in dict.fromkeys(candidates):
            try:
                text = self._client(address).execute_command("CLUSTER", "NODES")
            except ERRORS as exc:
                errors.append(f"{address}: {error_text(exc)}")
                continue
            view = parse_cluster_nodes(text.decode() if isinstance(text, bytes) else str(text))
            self._last_view = view
            return view
        raise ReshardError("no cluster node answered CLUSTER NODES: " + "; ".join(errors))

    def owners(self, view: Sequence[ClusterNode] | None = None) -> dict[str, list[int]]:
        """Slots of each live primary, by node id."""
        out: dict[str, list[int]] = {}
        for node in view if view is not None else self.view():
            if node.is_primary and not node.failed:
                out[node.node_id] = [s for a, b in node.slots for s in range(a, b + 1)]
        return out

    def node(self, ref: str, view: Sequence[ClusterNode] | None = None) -> ClusterNode:
        """The primary named by ``ref``: its ``host:port``, its id, or an id prefix (>= 4)."""
        primaries = [n for n in (view or self.view()) if n.is_primary and not n.failed]
        matches = [
            n
            for n in primaries
            if ref in (n.address, n.node_id) or (len(ref) >= 4 and n.node_id.startswith(ref))
        ]
        if len(matches) != 1:
            known = ", ".join(f"{n.address} ({n.node_id[:8]})" for n in primaries)
            what = "matches no live primary" if not matches else "matches several primaries"
            raise ConfigurationError(f"{ref!r} {what}; the primaries: {known}")
        return matches[0]

    # -- plans ----------------------------------------------------------------------------
    def plan_reshard(self, count: int, sources: Sequence[str], target: str) -> list[Move]:
        """``count`` slots from ``sources`` (refs, or ``["all"]``: every other primary) to
        ``target``."""
        view = self.view()
        owners = self.owners(view)
        to = self.node(target, view).node_id
        if list(sources) == ["all"]:
            ids = [n for n in owners if n != to]
        else:
            ids = [self.node(s, view).node_id for s in sources]
        return plan_reshard(owners, ids, to, count)

    def plan_rebalance(
        self,
        *,
        by: str = "slots",
        threshold: float = 0.02,
        weights: dict[str, float] | None = None,
    ) -> list[Move]:
        """Moves that even out slots (``by="slots"``) or stored bytes (``by="memory"``,
        measured: each slot weighs its keys' share of its node's ``used_memory_dataset``).
        ``weights``: node ref -> share (0 empties a node)."""
        view = self.view()
        owners = self.owners(view)
        node_weights = {self.node(k, view).node_id: v for k, v in (weights or {}).items()}
        if by == "slots":
            return plan_rebalance(owners, node_weights=node_weights, threshold=threshold)
        if by != "memory":
            raise ConfigurationError(f"by must be 'slots' or 'memory', got {by!r}")
        slot_weight: dict[int, float] = {}
        for node in view:
            if node.node_id not in owners:
                continue
            c = self._client(node.address)
            info = c.info("memory")
            dataset = float(info.get("used_memory_dataset", info.get("used_memory", 0)))
            counts = self._count_keys(node.address, owners[node.node_id])
            keys = sum(counts.values())
            for slot, n in counts.items():
                slot_weight[slot] = dataset * n / keys if keys else 0.0
        return plan_rebalance(
            owners, weights=slot_weight, node_weights=node_weights, threshold=threshold
        )

    # -- running -------------------------------------------------------------------------
    def run(self, moves: Sequence[Move]) -> ReshardProgress:
        """Carry out ``moves``, keeping them in the state file until done."""
        pending = self._pending()
        if pending is not None and pending["moves"]:
            left = len(pending["moves"]) - len(pending["done"])
            raise ReshardError(
                f"an interrupted reshard is pending in {self.state_file} ({left} slots left): "
                "finish it with --resume (Resharder.resume()), or delete that file to drop it "
                "(open slots are then closed by the next run)"
            )
        state = {
            "version": 1,
            "cluster": self.url,
            "moves": [[m.slot, m.source, m.target] for m in moves],
            "done": [],
        }
        self._save(state)
        return self._execute(state)

    def resume(self) -> ReshardProgress:
        """Finish the run the state file records (nothing to do: an empty progress)."""
        state = self._pending()
        if state is None:
            raise ReshardError(f"no interrupted reshard recorded in {self.state_file}")
        return self._execute(state)

    def close_open_slots(self) -> list[str]:
        """Close every slot left migrating or importing (what an interrupted move leaves);
        returns what was done, one line per slot.

        Both sides open (source migrating, target importing): the move is finished. Only
        one side open: when the target holds none of the slot's keys, the open side is set
        ``STABLE`` (nothing moved); when it holds some (clients wrote there through
        ``ASK``), the move is finished, since the keys are split. A source still migrating
        a slot its target already owns (interrupted at the last step) is told the owner.
        """
        done: list[str] = []
        view = self.view()
        by_id = {n.node_id: n for n in view}
        own = self._own_lines(view)  # a node shows only its own open slots
        owner_of = {s: n for n, slots in self.owners(view).items() for s in slots}
        opened: dict[int, tuple[str | None, str | None]] = {}  # slot -> (migrating, importing)
        for node in own.values():
            for slot in node.migrating:
                opened[slot] = (node.node_id, opened.get(slot, (None, None))[1])
            for slot in node.importing:
                opened[slot] = (opened.get(slot, (None, None))[0], node.node_id)
        for slot, (migrating, importing) in sorted(opened.items()):
            if migrating is not None and importing is not None:
                source, target = migrating, importing
            elif migrating is not None:  # target not importing
                source, target = migrating, own[migrating].migrating[slot]
                mine = own.get(target)
                if mine is not None and any(a <= slot <= b for a, b in mine.slots):
                    # interrupted after the target took the slot: only the last step is left
                    self._set_owner(slot, target, view)
                    done.append(
                        f"slot {slot}: {by_id[target].address} owns it; told "
                        f"{by_id[source].address} and the others"
                    )
                    continue
            else:
                assert importing is not None
                source, target = own[importing].importing[slot], importing
                if owner_of.get(slot) not in (source, None):
                    source = owner_of[slot]
            src, dst = by_id.get(source), by_id.get(target)
            if src is None or dst is None or src.failed or dst.failed:
                done.append(f"slot {slot}: left open (a node is down or unknown); fix by hand")
                continue
            lone = migrating is None or importing is None
            if lone:  # nothing reached the target: close the open side, move nothing
                keys = self._count_keys(dst.address, [slot])[slot]
                if keys == 0:
                    opened_on = src if migrating is not None else dst
                    self._client(opened_on.address).execute_command(
                        "CLUSTER", "SETSLOT", slot, "STABLE"
                    )
                    done.append(f"slot {slot}: set STABLE on {opened_on.address} (nothing moved)")
                    continue
            self._move_slot(Move(slot, source, target), view, None)
            done.append(f"slot {slot}: finished moving {src.address} -> {dst.address}")
        return done

    def cover_slots(self) -> list[str]:
        """Give every slot no live primary serves to a primary: the one holding keys of it
        if any does, else the one with the fewest slots; returns what was done."""
        view = self.view()
        primaries = [n for n in view if n.is_primary and not n.failed]
        if not primaries:
            raise ReshardError("no live primary to give the unserved slots to")
        owners = self.owners(view)
        served = {s for slots in owners.values() for s in slots}
        missing = [s for s in range(16384) if s not in served]
        done: list[str] = []
        counts = {n.node_id: len(owners.get(n.node_id, ())) for n in primaries}
        for slot in missing:
            holder = None
            for n in primaries:
                if self._count_keys(n.address, [slot])[slot]:
                    holder = n
                    break
            chosen = holder or min(primaries, key=lambda n: (counts[n.node_id], n.address))
            c = self._client(chosen.address)
            try:
                c.execute_command("CLUSTER", "ADDSLOTS", slot)
            except rx.ResponseError:  # its view still names a failed owner
                for n in primaries:
                    with contextlib.suppress(*ERRORS):
                        self._client(n.address).execute_command(
                            "CLUSTER", "SETSLOT", slot, "NODE", chosen.node_id
                        )
            counts[chosen.node_id] += 1
            done.append(
                f"slot {slot}: given to {chosen.address}"
                + (" (it holds keys of it)" if holder is not None else "")
            )
        if done:
            for n in primaries:  # a higher epoch makes the new claims win everywhere
                with contextlib.suppress(*ERRORS):
                    self._client(n.address).execute_command("CLUSTER", "BUMPEPOCH")
        return done

    def move(self, move: Move) -> None:
        """Move one slot now (no state file): IMPORTING, MIGRATING, its keys, NODE."""
        view = self._last_view or self.view()
        known = {n.node_id for n in view}
        if move.source not in known or move.target not in known:
            view = self.view()
        self._move_slot(move, view, None)

    def close(self) -> None:
        """Close the connections to the nodes."""
        self._stack.close()
        self._clients.clear()

    def __enter__(self) -> Resharder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        """Where the plan and its progress are kept."""
        if self._state_file is None:
            digest = hashlib.sha1(self.first.encode(), usedforsecurity=False).hexdigest()[:10]
            base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
            self._state_file = base / "smartcache" / f"reshard-{digest}.json"
        return self._state_file

    def _pending(self) -> dict[str, Any] | None:
        try:
            state: dict[str, Any] = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise ReshardError(f"{self.state_file} is not a reshard state file: {exc}") from None
        if len(state.get("done", ())) >= len(state.get("moves", ())):
            return None
        return state

    def _save(self, state: dict[str, Any]) -> None:
        path = self.state_file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(path)

    def _execute(self, state: dict[str, Any]) -> ReshardProgress:
        moves = [Move(int(s), str(a), str(b)) for s, a, b in state["moves"]]
        done = {int(s) for s in state["done"]}
        todo = [m for m in moves if m.slot not in done]
        self.close_open_slots()  # what an interruption left open, first
        view = self.view()
        owner_of = {s: n for n, slots in self.owners(view).items() for s in slots}
        keys_total = 0
        by_source: dict[str, list[int]] = {}
        for m in todo:
            by_source.setdefault(m.source, []).append(m.slot)
        addresses = {n.node_id: n.address for n in view}
        for source, slots in by_source.items():
            if source in addresses:
                keys_total += sum(self._count_keys(addresses[source], slots).values())
        progress = ReshardProgress(len(moves), keys_total, slots_done=len(done))
        if self.progress is not None:
            self.progress(progress)  # the totals, before the first slot moves
        saved = time.monotonic()
        for m in todo:
            owner = owner_of.get(m.slot)
            if owner != m.target:
                if owner != m.source:
                    raise ReshardError(
                        f"slot {m.slot} belongs to {addresses.get(owner or '', owner)}, not to "
                        f"the planned source {addresses.get(m.source, m.source)}: the cluster "
                        "changed since the plan was made; delete "
                        f"{self.state_file} and plan again"
                    )
                self._move_slot(m, view, progress)
            state["done"].append(m.slot)
            progress.slots_done += 1
            # saved at most twice a second: a slot done but not yet recorded is found
            # owned by its target on resume, and skipped
            if time.monotonic() - saved >= 0.5:
                self._save(state)
                saved = time.monotonic()
            if self.progress is not None:
                self.progress(progress)
        self._save(state)
        return progress

    def _count_keys(self, address: str, slots: Sequence[int]) -> dict[int, int]:
        pipe = self._client(address).pipeline(transaction=False)
        for slot in slots:
            pipe.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot)
        return {slot: int(n) for slot, n in zip(slots, pipe.execute(), strict=True)}

    def _client(self, address: str) -> SmartClient:
        client = self._clients.get(address)
        if client is None:
            client = self._stack.enter_context(self.connector.client(address))
            self._clients[address] = client
        return client

    def _move_slot(
        self, m: Move, view: Sequence[ClusterNode], progress: ReshardProgress | None
    ) -> None:
        by_id = {n.node_id: n for n in view}
        source, target = by_id.get(m.source), by_id.get(m.target)
        if source is None or target is None:
            raise ReshardError(f"slot {m.slot}: source or target node is no longer in the cluster")
        src, dst = self._client(source.address), self._client(target.address)
        step = "SETSLOT IMPORTING"
        try:
            dst.execute_command("CLUSTER", "SETSLOT", m.slot, "IMPORTING", m.source)
            step = "SETSLOT MIGRATING"
            src.execute_command("CLUSTER", "SETSLOT", m.slot, "MIGRATING", m.target)
            step = "MIGRATE"
            for moved in self._keys_of(src, m.slot, target):
                if progress is not None:
                    progress.keys_moved += moved
                    if self.progress is not None:
                        self.progress(progress)
            step = "SETSLOT NODE"
            # the target first: from then on it serves the slot, whoever asks
            dst.execute_command("CLUSTER", "SETSLOT", m.slot, "NODE", m.target)
            src.execute_command("CLUSTER", "SETSLOT", m.slot, "NODE", m.target)
        except ReshardError:
            raise
        except ERRORS as exc:
            raise ReshardError(
                f"slot {m.slot} ({source.address} -> {target.address}) failed at {step}: "
                f"{error_text(exc)}; the slot is left open and the next run (--resume) "
                "finishes it"
            ) from exc
        self._set_owner(m.slot, m.target, view, skip=(m.target,))

    def _set_owner(
        self, slot: int, owner: str, view: Sequence[ClusterNode], skip: Sequence[str] = ()
    ) -> None:
        """``SETSLOT <slot> NODE <owner>`` on every live primary but ``skip`` (the others
        learn it by gossip too; telling them is faster and closes a source left open)."""
        for node in view:
            if node.is_primary and not node.failed and node.node_id not in skip:
                with contextlib.suppress(*ERRORS):
                    self._client(node.address).execute_command(
                        "CLUSTER", "SETSLOT", slot, "NODE", owner
                    )

    def _own_lines(self, view: Sequence[ClusterNode]) -> dict[str, ClusterNode]:
        """Each live node's own ``CLUSTER NODES`` line (its open slots and its slots)."""
        out: dict[str, ClusterNode] = {}
        for node in view:
            if node.failed or not node.is_primary:
                continue
            try:
                text = self._client(node.address).execute_command("CLUSTER", "NODES")
            except ERRORS:
                continue
            for line in parse_cluster_nodes(
                text.decode() if isinstance(text, bytes) else str(text)
            ):
                if line.myself and line.is_primary:  # replicas may mirror the state
                    out[line.node_id] = line
        return out

    def _keys_of(self, src: SmartClient, slot: int, target: ClusterNode) -> Iterator[int]:
        """Move the slot's keys in batches; yields the count of each batch moved."""
        host, _, port = target.address.rpartition(":")
        auth: list[Any] = []
        if self.connector.password:
            auth = (
                ["AUTH2", self.connector.username, self.connector.password]
                if self.connector.username
                else ["AUTH", self.connector.password]
            )
        head = ["MIGRATE", host, int(port), "", 0, self.migrate_timeout_ms]
        if self.replace:
            head.append("REPLACE")
        failures = 0
        while True:
            keys = src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, self.batch)
            if not keys:
                return
            try:
                src.execute_command(*head, *auth, "KEYS", *keys)
            except rx.ResponseError as exc:
                text = str(exc)
                if "BUSYKEY" in text:
                    raise ReshardError(
                        f"slot {slot}: a key of this batch already exists on "
                        f"{target.address} ({text}); nothing was overwritten. If the target's "
                        "copy is stale, run again with --replace"
                    ) from None
                if not any(t in text.upper() for t in _TRANSIENT):
                    raise
                failures = self._backoff(failures, slot, text)
                continue
            except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
                # the reply was lost: what moved is gone from the source; ask it again
                failures = self._backoff(failures, slot, error_text(exc))
                continue
            failures = 0
            yield len(keys)

    @staticmethod
    def _backoff(failures: int, slot: int, why: str) -> int:
        failures += 1
        if failures >= _MIGRATE_ATTEMPTS:
            raise ReshardError(
                f"slot {slot}: MIGRATE failed {failures} times in a row ({why}); the slot is "
                "left open and --resume finishes it once the target answers"
            )
        time.sleep(random.uniform(0, min(2.0, 0.05 * 2**failures)))
        return failures
