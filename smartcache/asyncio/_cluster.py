"""A client on a cluster: the cluster state and the router, the asyncio drivers of the core.

Routing (:func:`smartcache.core.routing.route`), the per-command redirect/retry flow
(:func:`smartcache.core.flow.keyed_flow`) and the refresh rules
(:func:`smartcache.core.refresh.refresh_flow`) are decided in the core; this module only
does the I/O they ask for, through the pool's primitives (``attempt``, ``execute``,
``run_batches``). Concurrent refreshes collapse into one (a lock plus a generation
counter) and are rate-limited.

``smartcache/sync/_cluster.py`` is generated from this file (``scripts/unasync.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from asyncio import Lock
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import redis.exceptions as rx
from redis.asyncio.cluster import RedisCluster

from smartcache._cluster_compat import merged_by
from smartcache._slot_routing import SlotRouting
from smartcache.asyncio._connection import AsyncConnection
from smartcache.asyncio._pool import AsyncConnectionPool, run_batches
from smartcache.core.commands import CommandSpec, CommandTable, ResponsePolicy
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
    failed_attempt,
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
from smartcache.core.sentinel_command import check_wait, wait_command
from smartcache.core.slotmap import SlotMap, parse_address
from smartcache.core.stats import Counters
from smartcache.exceptions import NoReachableNodeError
from smartcache.wire import ConnectionSettings, Undecoded

__all__ = ["AsyncClusterRouter", "AsyncClusterState"]

#: what RedisCluster merges when the caller names several nodes (the rest answer by node)
_MERGED = merged_by(RedisCluster)
#: RedisCluster's result callbacks, which finish what its default node answers
_RESULTS = dict(getattr(RedisCluster, "RESULT_CALLBACKS", {}))
_UNSENT: Any = object()
#: a part's answer that sends it through the command flow (with the unsent marker)
_PART_FAILED = (rx.RedisError, OSError)


class AsyncClusterState(SlotRouting[AsyncConnectionPool]):
    """Slot map, node pools and refresh of one cluster client."""

    def __init__(
        self,
        settings: ConnectionSettings,
        startup: Iterable[tuple[str, int]],
        *,
        pool_factory: Callable[[ConnectionSettings], AsyncConnectionPool],
        min_refresh_interval: float = 0.1,
        counters: Counters | None = None,
    ) -> None:
        super().__init__(
            settings,
            startup,
            pool_factory=pool_factory,
            discard=AsyncConnectionPool.close_soon,
            min_refresh_interval=min_refresh_interval,
            counters=counters,
        )
        self._refresh_lock = Lock()

    async def aclose(self) -> None:
        """Close every pool."""
        for pool in self.take_all_pools():
            await pool.aclose()

    async def refresh(self, *, force: bool = False) -> SlotMap:
        """Fetch the topology from several nodes and swap the majority view in.

        Callers that arrive while a refresh runs wait for it and reuse its result.
        """
        seen = self._generation
        async with self._refresh_lock:
            if self._generation != seen and self.slot_map is not None:
                return self.slot_map  # someone refreshed while we waited
            recent = time.monotonic() - self._last_refresh < self.min_refresh_interval
            if recent and not force and self.slot_map is not None:
                # Rate limit without making callers wait: the flag stays up, so the first
                # command after the interval refreshes (MOVED has patched the map already).
                return self.slot_map
            flow = self.refresh_steps()
            answer: Any = None
            try:
                while True:
                    step = flow.send(answer)
                    if isinstance(step, AskTopology):
                        try:
                            answer = await self._ask(step.address)
                        except (rx.RedisError, OSError) as exc:
                            answer = exc
                    else:
                        answer = await self._probe(step.address, step.quick)
                        self.probed(step.address, answer)
            except StopIteration as done:
                outcome: tuple[SlotMap, set[str]] = done.value
            new_map, cleared = outcome
            self.install(new_map, cleared)
            return new_map

    async def _probe(self, address: str, quick: bool) -> bool:
        conn = AsyncConnection(self.probe_settings(address, quick))
        try:
            return bool(await conn.execute("PING"))
        except (rx.RedisError, OSError):
            return False
        finally:
            await conn.aclose()

    async def _ask(self, address: str) -> SlotMap:
        host, _ = parse_address(address)
        conn = AsyncConnection(self.short_settings(address))
        try:
            try:
                return SlotMap.from_cluster_shards(await conn.execute("CLUSTER", "SHARDS"), host)
            except rx.ResponseError:  # servers before 7.0
                return SlotMap.from_cluster_slots(await conn.execute("CLUSTER", "SLOTS"), host)
        finally:
            await conn.aclose()


class AsyncClusterRouter:
    """Routes commands over an :class:`AsyncClusterState` under one retry policy."""

    def __init__(
        self,
        state: AsyncClusterState,
        policy: RetryPolicy,
        read_from: str = "primary",
        *,
        wait: tuple[int, int, bool] | None = None,
    ) -> None:
        self.state = state
        self.policy = policy
        self.read_from = read_from
        #: ``wait_replicas=``: (replicas, timeout ms, WAITAOF?); each write is followed by
        #: WAIT on its own connection to the primary that applied it (per shard)
        self.wait = wait if wait and wait[0] else None
        self.table = CommandTable.fallback()
        self.table_loaded = False
        self._table_lock = Lock()
        #: command name (as the caller spelled it) -> (position of its only key, whether it
        #: reads from a replica): what the fast path needs to make the general path's choice
        self.single_key: dict[str, tuple[int, bool]] = {}

    async def ensure_table(self) -> None:
        """Load the server's COMMAND table once (fallback: the built-in table)."""
        if self.table_loaded:
            return
        async with self._table_lock:
            if self._loaded():  # loaded while we waited for the lock
                return
            current = self.state.slot_map
            assert current is not None
            pool = self.state.pool(current.primaries[0])
            try:
                self.table = CommandTable.from_command_reply(await pool.execute("COMMAND"))
            except (rx.RedisError, ValueError):
                self.table = CommandTable.fallback()
            self.table_loaded = True

    def _loaded(self) -> bool:
        return self.table_loaded

    async def try_refresh(self) -> None:
        """Refresh the slot map, keeping the old one if no node answers."""
        with contextlib.suppress(NoReachableNodeError):
            await self.state.refresh()

    async def execute(
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
            await self.try_refresh()
        await self.ensure_table()
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
        if fast is not None and self._then(where.spec) is None:  # writes that WAIT: no
            self.single_key[args[0]] = fast
        match where:
            case ToSlot(spec=spec, slot=slot, default_node=default_node):
                reply = await self.keyed(args, spec, slot, undecoded=undecoded)
                if not default_node:
                    return reply
                finish = result_callback(spec, args, _RESULTS)
                return default_node_reply(reply, self.state.default_address(), finish)
            case Split(plan=plan):
                if self._then(where.spec) is not None:  # each part WAITs on its shard
                    lookup = self.table.lookup
                    return plan.merge([await self.keyed(p, lookup(p), s) for s, p, _ in plan.parts])
                return plan.merge(await self.run_parts([(s, p) for s, p, _ in plan.parts]))
            case ToNodes(spec=spec, group=group, addresses=addresses, by_node=by_node):
                targets = self.resolve_targets(group, addresses)
                return await self.fan_out(args, spec, targets, by_node=by_node, undecoded=undecoded)
        raise AssertionError(where)  # pragma: no cover - route() returns one of the above

    async def keyed(
        self,
        args: tuple[Any, ...],
        spec: CommandSpec | None,
        slot: int,
        *,
        first: Outcome | None = None,
        undecoded: bool = False,
    ) -> Any:
        """Run a command on the node serving ``slot``: the driver of ``keyed_flow``.

        ``first`` hands over a failure the fast path already met; ``undecoded`` reads the
        reply as bytes whatever ``decode_responses`` says (redis-py's NEVER_DECODE).
        """
        then = self._then(spec)
        flow = keyed_flow(
            args,
            spec,
            slot,
            policy=self.policy,
            read_from=self.read_from,
            clock=time.monotonic,
            first=first,
            counters=self.state.counters,
        )
        state = self.state
        result: Any = None
        try:
            while True:
                effect = flow.send(result)
                result = None
                match effect:
                    case Attempt():
                        result = await self.attempt(args, effect, undecoded=undecoded, then=then)
                    case RefreshIfPending():
                        if state.refresh_pending:
                            await self.try_refresh()
                    case IsSuspect(slot=suspect_slot):
                        result = state.is_suspect(suspect_slot)
                    case MarkSuspect(address=address):
                        state.mark_suspect(address)
                    case ApplyMoved(slot=moved_slot, address=address):
                        state.apply_moved(moved_slot, address)
                    case RequestRefresh():
                        state.request_refresh("retry")
                    case Sleep(seconds=seconds):
                        await asyncio.sleep(seconds)
        except StopIteration as done:
            if then is None or self.wait is None:
                return done.value
            reply, acked = done.value
            wanted, timeout_ms, aof = self.wait
            check_wait(args, acked, wanted, timeout_ms, aof=aof)
            return reply

    def _then(self, spec: CommandSpec | None) -> tuple[Any, ...] | None:
        """The WAIT that follows ``spec``'s command, if it writes and durability is asked."""
        if self.wait is None or (spec is not None and not spec.replicates):
            return None
        wanted, timeout_ms, aof = self.wait
        return wait_command(wanted, timeout_ms, aof=aof)

    async def attempt(
        self,
        args: tuple[Any, ...],
        step: Attempt,
        *,
        undecoded: bool = False,
        then: tuple[Any, ...] | None = None,
    ) -> Outcome:
        """Send the command once, as ``step`` says, and tell what happened (``then``: the
        WAIT behind it on the same connection, the reply being ``(reply, WAIT's reply)``)."""
        pool = self.state.attempt_pool(step)
        if pool is None:
            return unserved(step.slot)
        asking = step.asking is not None
        if then is not None:
            assert self.wait is not None
            return await pool.attempt(
                args, asking=asking, then=then, then_timeout=self.wait[1] / 1000
            )
        return await pool.attempt(args, asking=asking, blocking=step.blocking, undecoded=undecoded)

    async def run_parts(self, parts: Sequence[tuple[int, tuple[Any, ...]]]) -> list[Any]:
        """Send each node's parts as one contiguous batch, all nodes at once; parts that
        fail (MOVED, ASK, a lost connection...) go through the command flow one by one,
        handing it the failure (so a part that may have run is not sent again blindly)."""
        slot_pools = self.state.slot_pools
        groups: dict[int, tuple[AsyncConnectionPool, list[int], list[tuple[Any, ...]]]] = {}
        results: list[Any] = [_UNSENT] * len(parts)
        for i, (slot, part) in enumerate(parts):
            pool = slot_pools[slot]
            if pool is not None:
                group = groups.get(id(pool))
                if group is None:
                    group = groups[id(pool)] = (pool, [], [])
                group[1].append(i)
                group[2].append(part)
        answers = await run_batches([(pool, commands) for pool, _, commands in groups.values()])
        for (_, indices, _), replies in zip(groups.values(), answers, strict=True):
            for i, reply in zip(indices, replies, strict=True):
                results[i] = reply
        for i, result in enumerate(results):
            if result is _UNSENT or isinstance(result, _PART_FAILED):
                slot, part = parts[i]
                pool = self.state.slot_pools[slot]
                first = None
                if result is not _UNSENT:
                    address = pool.settings.address if pool is not None else None
                    first = failed_attempt(result, address)
                results[i] = await self.keyed(part, self.table.lookup(part), slot, first=first)
        return results

    def primaries(self) -> list[str]:
        """Addresses of the primaries in the current slot map."""
        current = self.state.slot_map
        assert current is not None
        return list(current.primaries)

    def all_nodes(self) -> list[str]:
        """Addresses of every node in the current slot map."""
        current = self.state.slot_map
        assert current is not None
        return list(current.nodes)

    def resolve_targets(self, group: str | None, addresses: Sequence[str] = ()) -> list[str]:
        """Addresses of a node group (``"primaries"``, ``"all"``...) in the current map."""
        current = self.state.slot_map
        assert current is not None
        return resolve_group(current, group, addresses, random.choice, self.state.default_address())

    async def fan_out(
        self,
        args: tuple[Any, ...],
        spec: CommandSpec | None,
        addresses: Iterable[str],
        *,
        by_node: bool = False,
        undecoded: bool = False,
    ) -> Any:
        """Send one command to several nodes at once, then merge the replies or, ``by_node``,
        answer them by node (:func:`~smartcache.core.fanout.fan_out_reply`); ``undecoded``
        reads them as bytes whatever ``decode_responses`` says."""
        addresses = list(addresses)
        command = Undecoded(args) if undecoded else args
        answers = await run_batches([(self.state.pool(a), [command]) for a in addresses])
        replies = [answer[0] for answer in answers]
        policy = spec.response_policy if spec is not None else ResponsePolicy.DEFAULT
        finish = None if by_node else result_callback(spec, args, _RESULTS)
        name = command_name(args)
        return fan_out_reply(name, policy, addresses, replies, by_node=by_node, finish=finish)
