"""Pipelines and transactions for AsyncSmartClient, with ``redis.asyncio``'s Pipeline API.

Non-transactional pipelines are planned by :mod:`smartcache.core.pipeline`: commands are
grouped per node and sent with the pool's ``run_batches`` (every node at once), and only
the commands that failed (MOVED, ASK, TRYAGAIN, a lost connection) are re-run one by one
through the client's normal retry path; a command whose connection was lost after it was
written is re-run only where that is safe (``core.pipeline.after_loss``). Results come
back in the caller's order. Transactions (``transaction=True``, WATCH) run on a connection
of their own and, on a cluster, must keep every key on one slot; MOVED and ASK before EXEC
are followed by ``core.pipeline.transaction_flow``.

``smartcache/sync/_pipeline.py`` is generated from this file (``scripts/unasync.py``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import redis.exceptions as rx
from redis.commands import AsyncCoreCommands, AsyncRedisModuleCommands, AsyncSentinelCommands

from smartcache._scripts import missing_scripts
from smartcache.asyncio._cluster import AsyncClusterRouter
from smartcache.asyncio._connection import AsyncConnection
from smartcache.asyncio._pool import AsyncConnectionPool, run_batches
from smartcache.core.commands import CommandTable, normalize_command
from smartcache.core.fanout import unfinished
from smartcache.core.flow import (
    ApplyMoved,
    Attempt,
    Outcome,
    RefreshIfPending,
    RequestRefresh,
    Sleep,
    failed_attempt,
)
from smartcache.core.pipeline import (
    ALL_PRIMARIES,
    ANY_SLOT,
    after_loss,
    apply_callback,
    assemble,
    finish_transaction,
    plan_command,
    raise_first_error,
    reads_undecoded,
    transaction_flow,
    transaction_slot,
)
from smartcache.core.pipeline import (
    EMPTY_RESPONSE as _EMPTY_RESPONSE,
)
from smartcache.core.pipeline import (
    RETRYABLE_REPLIES as _RETRYABLE,
)
from smartcache.core.pipeline import (
    TRANSPORT_ERRORS as _NET,
)
from smartcache.core.pipeline import (
    UNWATCH_COMMANDS as _UNWATCH,
)
from smartcache.core.retry import RetryPolicy, request_written
from smartcache.core.sentinel_command import check_wait, wait_command
from smartcache.wire import ConnectionSettings, Undecoded

__all__ = ["AsyncPipeline"]


class _Client(Protocol):
    """What a pipeline needs of its client (``AsyncSmartClient``): a Protocol, so this module
    does not import the client's, which imports this one."""

    _router: AsyncClusterRouter | None
    _table: CommandTable
    _settings: ConnectionSettings
    _telemetry: Any  # smartcache._otel.Telemetry, or None (metrics off)
    _wait: tuple[int, int]  # wait_replicas=, wait_timeout_ms=
    _wait_aof: bool
    retry_policy: RetryPolicy
    response_callbacks: Any

    def get_encoder(self) -> Any: ...
    async def _ensure_ready(self) -> None: ...
    async def _one_node_pool(self) -> AsyncConnectionPool | None: ...
    async def _execute_routed(self, args: tuple[Any, ...], target_nodes: Any = None) -> Any: ...
    async def _execute_undecoded(self, args: tuple[Any, ...], target_nodes: Any) -> Any: ...
    def script_exists(self, *args: Any) -> Any: ...
    def script_load(self, script: Any) -> Any: ...


#: redis-py's words when the connection of a WATCH breaks
_WATCH_LOST = "A ConnectionError occurred on while watching one or more keys"

Stack = list[tuple[tuple[Any, ...], dict[str, Any]]]


class AsyncPipeline(  # type: ignore[misc]  # redis-py's own async mixins disagree on command_info
    AsyncRedisModuleCommands, AsyncCoreCommands, AsyncSentinelCommands
):
    """Queue commands (``pipe.set(...)`` returns the pipeline) and send them together with
    ``execute()``, as redis-py's ``Pipeline``: it returns the replies in order; with
    ``raise_on_error=False`` failed commands leave their exception in place."""

    _is_async_client: Literal[True] = True
    _event_dispatcher: Any = None  # part of redis-py's client protocol; unused here

    def __init__(self, client: _Client, transaction: bool = True, shard_hint: Any = None) -> None:
        self._client = client
        self.transaction = transaction
        self.shard_hint = shard_hint
        self.response_callbacks = client.response_callbacks
        self.command_stack: Stack = []
        self.watching = False
        self.explicit_transaction = False
        self._pinned: tuple[AsyncConnectionPool, AsyncConnection] | None = None
        #: scripts called on this pipeline, loaded (if missing) before it executes
        self.scripts: set[Any] = set()

    # -- redis-py surface -----------------------------------------------------------------
    def get_encoder(self) -> Any:
        """The client's encoder."""
        return self._client.get_encoder()

    async def __aenter__(self) -> AsyncPipeline:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.reset()

    def __len__(self) -> int:
        return len(self.command_stack)

    def __bool__(self) -> bool:
        return True

    async def reset(self) -> None:  # type: ignore[override]  # redis-py's Pipeline.reset too
        """Forget queued commands; end a WATCH and give its connection back."""
        self.command_stack = []
        self.scripts = set()
        if self._pinned is not None:
            pool, conn = self._pinned
            self._pinned = None
            if self.watching:
                try:
                    await conn.execute("UNWATCH")
                except _NET:
                    conn.close()  # a broken connection ends the WATCH too
            pool.release(conn)
        self.watching = False
        self.explicit_transaction = False

    def multi(self) -> None:
        """Start the transactional block after WATCH."""
        if self.explicit_transaction:
            raise rx.RedisError("Cannot issue nested calls to MULTI")
        if self.command_stack:
            raise rx.RedisError("Commands without an initial WATCH have already been issued")
        self.explicit_transaction = True

    async def watch(self, *names: Any) -> Any:  # type: ignore[override]  # awaitable, as redis.asyncio
        """WATCH keys (on a cluster they must share a slot)."""
        if self.explicit_transaction:
            raise rx.RedisError("Cannot issue a WATCH after a MULTI")
        return await self._immediate(("WATCH", *names), {})

    async def unwatch(self) -> Any:  # type: ignore[override]  # awaitable, as redis.asyncio
        """UNWATCH."""
        return (self.watching and await self._immediate(("UNWATCH",), {})) or True

    def discard(self) -> None:
        """DISCARD, as redis-py's ``Pipeline.discard``."""
        self.execute_command("DISCARD")

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Queue a command; while WATCHing (before MULTI) run it at once, as redis-py does."""
        if (self.watching or args[0] == "WATCH") and not self.explicit_transaction:
            return self._immediate(args, options)
        self.command_stack.append((args, options))
        return self

    # -- immediate mode (WATCH ... MULTI) -----------------------------------------------
    async def _immediate(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        await self._client._ensure_ready()
        wire = normalize_command(args)
        if self._pinned is None:
            pool = await self._pool_for([wire])
            self._pinned = (pool, await pool.acquire_dedicated())
        _, conn = self._pinned
        try:
            reply = await conn.execute(*wire)
        except _NET as exc:
            was_watching = self.watching
            await self.reset()
            if was_watching:
                raise rx.WatchError(_WATCH_LOST) from exc
            raise
        name = str(args[0]).upper()
        if name in _UNWATCH:
            self.watching = False
        elif name == "WATCH":
            self.watching = True
        return apply_callback(self.response_callbacks, args[0], reply, options)

    async def _pool_for(self, commands: Sequence[tuple[Any, ...]]) -> AsyncConnectionPool:
        """The pool of the node a transaction (or WATCH) on ``commands`` goes to."""
        client = self._client
        single = await client._one_node_pool()
        if single is not None:
            return single
        router = client._router
        assert router is not None
        await router.ensure_table()
        state = router.state
        slot = transaction_slot(router.table, commands, state.slot_of)
        pool = state.slot_pools[slot] if slot is not None else None
        return pool if pool is not None else state.pool(state.default_address())

    # -- durability (wait_replicas=) ------------------------------------------------------
    def _wait_after(self, commands: Sequence[tuple[Any, ...]]) -> tuple[Any, ...] | None:
        """The WAIT that follows ``commands`` on their connection when durability is asked
        and one of them writes (the single-command rule: ``spec is None or replicates``)."""
        client = self._client
        wanted, timeout_ms = client._wait
        if not wanted:
            return None
        table = client._router.table if client._router is not None else client._table
        for args in commands:
            spec = table.lookup(args)
            if spec is None or spec.replicates:
                return wait_command(wanted, timeout_ms, aof=client._wait_aof)
        return None

    def _check_acks(self, acks: Sequence[Any], name: str) -> None:
        """``DurabilityError`` unless every batch's WAIT saw enough replicas; a WAIT cut
        by a lost connection is skipped (its commands were re-run, each with its own
        WAIT, or stand as ``AmbiguousCommandError``)."""
        client = self._client
        wanted, timeout_ms = client._wait
        for acked in acks:
            if isinstance(acked, _NET):
                continue
            check_wait((name,), acked, wanted, timeout_ms, aof=client._wait_aof)

    async def _send_waited(
        self, pool: AsyncConnectionPool, batch: list[tuple[Any, ...]], wait: tuple[Any, ...]
    ) -> tuple[list[Any], Any]:
        """``batch`` then ``wait`` on one connection; the batch's replies (a transport error
        raised, as ``_send_batch`` does) and WAIT's."""
        answers = await pool.run_followed(batch, wait, self._client._wait[1] / 1000)
        if isinstance(answers[0], _NET):
            raise answers[0]
        return answers[:-1], answers[-1]

    # -- execute --------------------------------------------------------------------------
    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send every queued command; return the replies in order."""
        stack = self.command_stack
        if not stack and not self.watching:
            return []
        await self._client._ensure_ready()
        telemetry = self._client._telemetry
        if telemetry is None:
            return await self._execute(stack, raise_on_error)
        transaction, start = self.transaction or self.explicit_transaction, time.perf_counter()
        try:
            replies = await self._execute(stack, raise_on_error)
        except BaseException as exc:
            telemetry.record_batch(transaction, len(stack), time.perf_counter() - start, exc)
            raise
        telemetry.record_batch(transaction, len(stack), time.perf_counter() - start, None)
        return replies

    async def _execute(self, stack: Stack, raise_on_error: bool) -> list[Any]:
        try:
            if self.scripts:
                scripts = list(self.scripts)
                exists = await self._client.script_exists(*[s.sha for s in scripts])
                for script in missing_scripts(scripts, list(exists)):
                    script.sha = await self._client.script_load(script.script)
            if self.transaction or self.explicit_transaction:
                return await self._execute_transaction(stack, raise_on_error)
            return await self._execute_pipeline(stack, raise_on_error)
        finally:
            await self.reset()

    async def _execute_transaction(self, stack: Stack, raise_on_error: bool) -> list[Any]:
        commands = [normalize_command(args) for args, _ in stack]
        batch = [("MULTI",), *commands, ("EXEC",)]
        wait = self._wait_after(commands)
        acks: list[Any] = []
        if self._pinned is not None:
            _, conn = self._pinned
            try:
                replies = await conn.execute_many(batch if wait is None else [*batch, wait])
            except _NET:
                self._pinned = None
                if self.watching:
                    raise rx.WatchError(_WATCH_LOST) from None
                raise
            if wait is not None:
                acks.append(replies.pop())
        else:
            replies = await self._send_transaction(commands, batch, wait, acks)
        self.watching = False
        results = finish_transaction(stack, replies, self.response_callbacks, raise_on_error)
        self._check_acks(acks, "MULTI")
        return results

    async def _send_transaction(
        self,
        commands: Sequence[tuple[Any, ...]],
        batch: list[tuple[Any, ...]],
        wait: tuple[Any, ...] | None = None,
        acks: list[Any] | None = None,
    ) -> list[Any]:
        """Send ``MULTI ... EXEC``; on a cluster, the driver of ``transaction_flow``.
        ``wait``: WAIT behind it on the same connection, its reply appended to ``acks``."""

        async def send(pool: AsyncConnectionPool, sent: list[tuple[Any, ...]]) -> list[Any]:
            if wait is None:
                return await _send_batch(pool, sent)
            replies, acked = await self._send_waited(pool, sent, wait)
            if acks is not None:
                acks.append(acked)
            return replies

        router = self._client._router
        if router is None:
            return await send(await self._pool_for(commands), batch)
        await router.ensure_table()
        state = router.state
        slot = transaction_slot(router.table, commands, state.slot_of)
        if slot is None:  # no key: any primary, nothing can redirect it
            return await send(await self._pool_for(commands), batch)
        flow = transaction_flow(
            slot, policy=router.policy, clock=time.monotonic, counters=state.counters
        )
        result: Any = None
        try:
            while True:
                effect = flow.send(result)
                result = None
                match effect:
                    case Attempt(slot=at, asking=asking):
                        if asking is not None:
                            pool = state.pool(asking)
                            replies = (await send(pool, [("ASKING",), *batch]))[1:]
                        else:
                            maybe = state.slot_pools[at]
                            pool = maybe or state.pool(state.default_address())
                            replies = await send(pool, batch)
                        result = Outcome(reply=replies, sent=True, address=pool.settings.address)
                    case RefreshIfPending():
                        if state.refresh_pending:
                            await router.try_refresh()
                    case ApplyMoved(slot=moved_slot, address=address):
                        state.apply_moved(moved_slot, address)
                    case RequestRefresh():
                        state.request_refresh("retry")
                    case Sleep(seconds=seconds):
                        await asyncio.sleep(seconds)
        except StopIteration as done:
            final: list[Any] = done.value
            return final

    async def _execute_pipeline(self, stack: Stack, raise_on_error: bool) -> list[Any]:
        client = self._client
        decode = client._settings.decode_responses
        commands = [
            Undecoded(normalize_command(a)) if reads_undecoded(o, decode) else normalize_command(a)
            for a, o in stack
        ]
        single = await client._one_node_pool()
        acks: list[Any] = []
        raw = await (
            self._on_cluster(commands, acks)
            if single is None
            else self._on_pool(single, commands, acks)
        )
        results = []
        for reply, (args, options) in zip(raw, stack, strict=True):
            if isinstance(reply, Exception):
                empty = _EMPTY_RESPONSE in options and isinstance(reply, rx.ResponseError)
                results.append(options[_EMPTY_RESPONSE] if empty else reply)
            else:
                results.append(apply_callback(self.response_callbacks, args[0], reply, options))
        if raise_on_error:
            raise_first_error(stack, results)
        self._check_acks(acks, "PIPELINE")
        return results

    async def _on_pool(
        self, pool: AsyncConnectionPool, commands: list[tuple[Any, ...]], acks: list[Any]
    ) -> list[Any]:
        """The batch on one server (or a Sentinel's primary); with ``wait_replicas=``, WAIT
        behind it on its connection (its reply appended to ``acks``)."""
        wait = self._wait_after(commands)
        if wait is not None:
            answers = await pool.run_followed(commands, wait, self._client._wait[1] / 1000)
            acks.append(answers.pop())
        else:
            (answers,) = await run_batches([(pool, commands)])
        results: list[Any] = []
        for args, answer in zip(commands, answers, strict=True):
            if isinstance(answer, _NET):
                results.append(await self._recover(args, -1, answer))
            else:
                results.append(answer)
        return results

    async def _recover(self, args: tuple[Any, ...], slot: int, lost: BaseException) -> Any:
        """A command whose connection was lost in the pipeline: re-run alone where that is
        safe (``core.pipeline.after_loss``), else the ``AmbiguousCommandError`` in its place."""
        client = self._client
        table = client._router.table if client._router else client._table
        (error,) = after_loss(client.retry_policy, table, [args], sent=request_written(lost))
        return await self._rerun(args, slot) if error is None else error

    async def _rerun(self, args: tuple[Any, ...], slot: int, first: Outcome | None = None) -> Any:
        """Run one command alone through the client's retry path; ``first`` hands over the
        reply that failed in the pipeline (a MOVED is followed as a single command's is)."""
        client = self._client
        undecoded = args.__class__ is Undecoded
        try:
            if undecoded and (client._router is None or slot < 0):
                return unfinished(await client._execute_undecoded(args, None))
            if client._router is None or slot < 0:
                return unfinished(await client._execute_routed(args))
            router = client._router
            spec = router.table.lookup(args)
            return await router.keyed(args, spec, slot, first=first, undecoded=undecoded)
        except rx.RedisError as exc:
            return exc

    async def _on_cluster(self, commands: list[tuple[Any, ...]], acks: list[Any]) -> list[Any]:
        """The batch on a cluster: one contiguous batch per node, every node at once; with
        ``wait_replicas=``, each node's batch that writes is followed by WAIT on its
        connection (per shard; the replies go to ``acks``)."""
        router = self._client._router
        assert router is not None
        await router.ensure_table()
        state = router.state
        plans = [plan_command(router.table, args, state.slot_of) for args in commands]
        primaries = router.primaries()
        default = state.default_address()
        # wire operations: (command index, slot, args, pool)
        ops: list[tuple[int, int, tuple[Any, ...], AsyncConnectionPool | None]] = []
        for ci, plan in enumerate(plans):
            for slot, args in plan.ops:
                if slot == ALL_PRIMARIES:
                    ops.extend((ci, slot, args, state.pool(p)) for p in primaries)
                elif slot == ANY_SLOT:
                    ops.append((ci, slot, args, state.pool(default)))
                else:
                    ops.append((ci, slot, args, state.slot_pools[slot]))
        replies: list[Any] = [None] * len(ops)
        groups: dict[int, tuple[AsyncConnectionPool, list[int]]] = {}
        for i, (_, _, _, pool) in enumerate(ops):
            if pool is not None:
                groups.setdefault(id(pool), (pool, []))[1].append(i)
        batches = [(pool, [ops[i][2] for i in indices]) for pool, indices in groups.values()]
        waits = [self._wait_after(batch) for _, batch in batches]
        if any(w is not None for w in waits):
            answers = []
            for (pool, batch), wait in zip(batches, waits, strict=True):
                if wait is None:
                    answers.extend(await run_batches([(pool, batch)]))
                    continue
                got = await pool.run_followed(batch, wait, self._client._wait[1] / 1000)
                acks.append(got.pop())
                answers.append(got)
        else:
            answers = await run_batches(batches)
        for (_, indices), got in zip(groups.values(), answers, strict=True):
            for i, answer in zip(indices, got, strict=True):
                replies[i] = answer
        for i, (_, slot, args, pool) in enumerate(ops):
            reply = replies[i]
            if pool is None:  # the slot had no node: the flow waits for one
                replies[i] = await self._rerun(args, slot)
            elif isinstance(reply, _NET):
                replies[i] = await self._recover(args, slot, reply)
            elif isinstance(reply, _RETRYABLE):
                # MOVED, ASK, TRYAGAIN...: the command's own flow follows it, knowing which
                # node answered (``MOVED 3999 :6381`` names that node's host).
                failed = failed_attempt(reply, pool.settings.address)
                replies[i] = await self._rerun(args, slot, failed)
        return assemble(plans, [op[0] for op in ops], replies, router.table)


async def _send_batch(pool: AsyncConnectionPool, batch: list[tuple[Any, ...]]) -> list[Any]:
    """Send ``batch`` on a connection of ``pool`` no one else uses and read every reply."""
    conn = await pool.acquire_dedicated()
    try:
        return await conn.execute_many(batch)
    finally:
        pool.release(conn)
