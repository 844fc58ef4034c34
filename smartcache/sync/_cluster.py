"""SmartClient on a cluster: the cluster state and the router (twin of ``asyncio/_cluster``).

:class:`ClusterState` is :class:`~smartcache._slot_routing.SlotRouting` plus a threaded
refresh: concurrent refresh requests collapse into one (a lock plus a generation counter)
and are rate-limited; the refresh itself is :func:`smartcache.core.refresh.refresh_flow`,
driven here with blocking calls on short-timeout connections.

:class:`ClusterRouter` routes one command by its keys and carries it through redirects.
The decisions come from the I/O-free core (key extraction, slot map, ``decide()``); it
only does the I/O they ask for: pick the pool, write, read, sleep the backoff.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis.exceptions as rx
from redis.cluster import RedisCluster

from smartcache._cluster_compat import merged_by
from smartcache._slot_routing import SlotRouting
from smartcache.core.commands import (
    CommandSpec,
    CommandTable,
    ResponsePolicy,
)
from smartcache.core.fanout import default_node_reply, fan_out_reply, result_callback
from smartcache.core.flow import (
    ApplyMoved,
    Attempt,
    IsSuspect,
    MarkSuspect,
    Outcome,
    RefreshIfPending,
    RequestRefresh,
    Sleep,
    command_name,
    keyed_flow,
    unserved,
)
from smartcache.core.refresh import AskTopology
from smartcache.core.retry import RetryPolicy
from smartcache.core.routing import (
    Split,
    ToNodes,
    ToSlot,
    fast_path_entry,
    resolve_group,
    route,
)
from smartcache.core.slotmap import SlotMap, parse_address
from smartcache.exceptions import (
    NoReachableNodeError,
)
from smartcache.sync._connection import Connection
from smartcache.sync._pool import ConnectionPool
from smartcache.wire import ConnectionSettings

__all__ = ["ClusterRouter", "ClusterState"]

_ERROR = rx.RedisError
#: what RedisCluster merges when the caller names several nodes (the rest answer by node)
_MERGED = merged_by(RedisCluster)
#: RedisCluster's result callbacks, which finish what its default node answers
_RESULTS = dict(getattr(RedisCluster, "RESULT_CALLBACKS", {}))


class ClusterState(SlotRouting[ConnectionPool]):
    """Slot map, node pools and refresh of one sync cluster client."""

    def __init__(
        self,
        settings: ConnectionSettings,
        startup: Iterable[tuple[str, int]],
        *,
        pool_factory: Callable[[ConnectionSettings], ConnectionPool],
        min_refresh_interval: float = 0.1,
    ) -> None:
        super().__init__(
            settings,
            startup,
            pool_factory=pool_factory,
            discard=ConnectionPool.close,
            min_refresh_interval=min_refresh_interval,
        )
        self._refresh_lock = threading.Lock()

    def close(self) -> None:
        """Close every pool."""
        for pool in self.take_all_pools():
            pool.close()

    def refresh(self, *, force: bool = False) -> SlotMap:
        """Fetch the topology from several nodes and swap the majority view in.

        Callers that arrive while a refresh runs wait for it and reuse its result.
        """
        seen = self._generation
        with self._refresh_lock:
            if self._generation != seen and self.slot_map is not None:
                return self.slot_map  # someone refreshed while we waited
            recent = time.monotonic() - self._last_refresh < self.min_refresh_interval
            if recent and not force and self.slot_map is not None:
                # Rate limit without making callers wait: the flag stays up, so the first
                # command after the interval refreshes (MOVED has patched the map already).
                return self.slot_map
            new_map, cleared = self._drive_refresh()
            self.install(new_map, cleared)
            return new_map

    def _drive_refresh(self) -> tuple[SlotMap, set[str]]:
        flow = self.refresh_steps()
        answer: Any = None
        try:
            while True:
                step = flow.send(answer)
                if isinstance(step, AskTopology):
                    try:
                        answer = self._ask(step.address)
                    except (rx.RedisError, OSError) as exc:
                        answer = exc
                else:
                    answer = self._probe(step.address)
        except StopIteration as done:
            result: tuple[SlotMap, set[str]] = done.value
            return result

    def _probe(self, address: str) -> bool:
        conn = Connection(self.short_settings(address))
        try:
            return bool(conn.execute("PING"))
        except (rx.RedisError, OSError):
            return False
        finally:
            conn.close()

    def _ask(self, address: str) -> SlotMap:
        host, _ = parse_address(address)
        conn = Connection(self.short_settings(address))
        try:
            try:
                return SlotMap.from_cluster_shards(conn.execute("CLUSTER", "SHARDS"), host)
            except rx.ResponseError:  # servers before 7.0
                return SlotMap.from_cluster_slots(conn.execute("CLUSTER", "SLOTS"), host)
        finally:
            conn.close()


class ClusterRouter:
    """Routes commands over a :class:`ClusterState` under one retry policy."""

    def __init__(
        self, state: ClusterState, policy: RetryPolicy, read_from: str = "primary"
    ) -> None:
        self.state = state
        self.policy = policy
        self.read_from = read_from
        self.table = CommandTable.fallback()
        self.table_loaded = False
        # command name (as the caller spelled it) -> (position of its only key, whether
        # it reads from a replica): what the fast path needs to make the general path's choice
        self.single_key: dict[str, tuple[int, bool]] = {}

    def ensure_table(self) -> None:
        """Load the server's COMMAND table once (fallback: the built-in table)."""
        if self.table_loaded or self.state is None:
            return
        self.table_loaded = True
        state = self.state
        assert state.slot_map is not None
        pool = state.pool(state.slot_map.primaries[0])
        conn = pool.get()
        try:
            self.table = CommandTable.from_command_reply(conn.execute("COMMAND"))
        except (rx.RedisError, ValueError):
            self.table = CommandTable.fallback()
        finally:
            pool.release(conn)

    def execute(
        self,
        args: tuple[Any, ...],
        target_nodes: Any,
        undecoded: bool = False,
        *,
        nonatomic: bool = False,
    ) -> Any:
        """Route one command (the core decides where) and carry it out; ``nonatomic``:
        split MGET/MSET by slot (``mget_nonatomic()`` / ``mset_nonatomic()``)."""
        if self.state.refresh_pending:
            self.try_refresh()
        self.ensure_table()
        where = route(
            self.table,
            args,
            self.state.slot_of,
            self.state.default_slot,
            target_nodes,
            nonatomic=nonatomic,
            merged=_MERGED,
        )
        fast = fast_path_entry(where.spec, args[0], self.read_from)
        if fast is not None:
            self.single_key[args[0]] = fast
        match where:
            case ToSlot(spec=spec, slot=slot, default_node=default_node):
                reply = self.keyed(args, spec, slot, undecoded=undecoded)
                if not default_node:
                    return reply
                finish = result_callback(spec, args, _RESULTS)
                return default_node_reply(reply, self.state.default_address(), finish)
            case Split(plan=plan):
                results = self.run_parts([(slot, part) for slot, part, _ in plan.parts])
                return plan.merge(results)
            case ToNodes(spec=spec, group=group, addresses=addresses, by_node=by_node):
                targets = self.resolve_targets(group, addresses)
                return self.fan_out(args, spec, targets, by_node=by_node, undecoded=undecoded)
        raise AssertionError(where)  # pragma: no cover - route() returns one of the above

    def keyed(
        self,
        args: tuple[Any, ...],
        spec: CommandSpec | None,
        slot: int,
        *,
        first: Outcome | None = None,
        undecoded: bool = False,
    ) -> Any:
        """Run a command on the node serving ``slot``: the sync driver of ``keyed_flow``.

        ``first`` hands over a failure the fast path already met; ``undecoded`` reads the
        reply as bytes whatever ``decode_responses`` says (redis-py's NEVER_DECODE).
        """
        flow = keyed_flow(
            args,
            spec,
            slot,
            policy=self.policy,
            read_from=self.read_from,
            clock=time.monotonic,
            first=first,
        )
        state = self.state
        result: Any = None
        try:
            while True:
                effect = flow.send(result)
                result = None
                match effect:
                    case Attempt():
                        result = self.attempt(state, args, effect, undecoded=undecoded)
                    case RefreshIfPending():
                        if state.refresh_pending:
                            self.try_refresh()
                    case IsSuspect(slot=suspect_slot):
                        result = state.is_suspect(suspect_slot)
                    case MarkSuspect(address=address):
                        state.mark_suspect(address)
                    case ApplyMoved(slot=moved_slot, address=address):
                        state.apply_moved(moved_slot, address)
                    case RequestRefresh():
                        state.refresh_pending = True
                    case Sleep(seconds=seconds):
                        time.sleep(seconds)
        except StopIteration as done:
            return done.value

    def attempt(
        self,
        state: ClusterState,
        args: tuple[Any, ...],
        step: Attempt,
        *,
        undecoded: bool = False,
    ) -> Outcome:
        """Send the command once, as ``step`` says, and tell what happened."""
        pool = state.attempt_pool(step)
        if pool is None:
            return unserved(step.slot)
        asking = step.asking is not None
        return pool.attempt(args, asking=asking, blocking=step.blocking, undecoded=undecoded)

    def try_refresh(self) -> None:
        """Refresh the slot map, keeping the old one if no node answers."""
        state = self.state
        # On failure keep the old map; the command's own budget decides when to give up.
        with contextlib.suppress(NoReachableNodeError):
            state.refresh()

    def primaries(self) -> list[str]:
        """Addresses of the primaries in the current slot map."""
        state = self.state
        assert state.slot_map is not None
        return list(state.slot_map.primaries)

    def all_nodes(self) -> list[str]:
        """Addresses of every node in the current slot map."""
        state = self.state
        assert state.slot_map is not None
        return list(state.slot_map.nodes)

    def resolve_targets(self, group: str | None, addresses: Sequence[str] = ()) -> list[str]:
        """Addresses of a node group (``"primaries"``, ``"all"``...) in the current map."""
        current = self.state.slot_map
        assert current is not None
        return resolve_group(current, group, addresses, random.choice, self.state.default_address())

    def fan_out(
        self,
        args: tuple[Any, ...],
        spec: CommandSpec | None,
        addresses: Iterable[str],
        *,
        by_node: bool = False,
        undecoded: bool = False,
    ) -> Any:
        """Send one command to several nodes (all writes first), then merge the replies or,
        ``by_node``, answer them by node (:func:`~smartcache.core.fanout.fan_out_reply`);
        ``undecoded`` reads them as bytes whatever ``decode_responses`` says."""
        state = self.state
        addresses = list(addresses)
        taken = []
        replies: list[Any] = []
        try:
            for address in addresses:
                pool = state.pool(address)
                conn = pool.get()
                taken.append((pool, conn))
                conn.send_command(*args)
            for _, conn in taken:
                replies.append(conn.read_undecoded() if undecoded else conn.read_raw())
        finally:
            for i, (pool, conn) in enumerate(taken):
                if i >= len(replies):
                    conn.close()  # its reply was never read: never hand it out again
                pool.release(conn)
        policy = spec.response_policy if spec is not None else ResponsePolicy.DEFAULT
        finish = None if by_node else result_callback(spec, args, _RESULTS)
        name = command_name(args)
        return fan_out_reply(name, policy, addresses, replies, by_node=by_node, finish=finish)

    def run_parts(self, parts: Sequence[tuple[int, tuple[Any, ...]]]) -> list[Any]:
        """Send every part to its node (all writes first), then read; retry failed parts."""
        state = self.state
        results: list[Any] = [None] * len(parts)
        by_pool: dict[int, tuple[ConnectionPool, list[int]]] = {}
        failed: list[int] = []
        for i, (slot, _) in enumerate(parts):
            pool = state.slot_pools[slot]
            if pool is None:
                failed.append(i)
                continue
            by_pool.setdefault(id(pool), (pool, []))[1].append(i)
        sent: list[tuple[ConnectionPool, Any, list[int]]] = []
        for pool, indices in by_pool.values():
            conn = None
            try:
                conn = pool.get()
                conn.send_many([parts[i][1] for i in indices])
                sent.append((pool, conn, indices))
            except (rx.ConnectionError, rx.TimeoutError, OSError):
                if conn is not None:
                    pool.release(conn)
                failed.extend(indices)
            except BaseException:
                if conn is not None:
                    pool.release(conn)  # bad arguments: nothing of this batch was written
                for other_pool, other, _ in sent:
                    other.close()  # replies owed on it: never hand it out again
                    other_pool.release(other)
                raise
        for pool, conn, indices in sent:
            try:
                for i in indices:
                    reply = conn.read_raw()
                    if isinstance(reply, _ERROR):
                        failed.append(i)
                    else:
                        results[i] = reply
            except (rx.ConnectionError, rx.TimeoutError, OSError):
                failed.extend(i for i in indices if results[i] is None and i not in failed)
            finally:
                pool.release(conn)
        for i in failed:
            slot, part = parts[i]
            results[i] = self.keyed(part, self.table.lookup(part), slot)
        return results
