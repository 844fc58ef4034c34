"""Async pipelines and transactions for AsyncSmartClient (``redis.asyncio`` Pipeline API).

Planning and result handling are the sync pipeline's, from :mod:`smartcache.core.pipeline`.
A non-transactional pipeline sends each node's batch contiguously on that node's shared
connection (all nodes at once) and re-runs only the commands that failed through the normal
retry flow. A transaction (and WATCH) takes a dedicated connection.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import redis.exceptions as rx
from redis.commands import AsyncCoreCommands, AsyncRedisModuleCommands, AsyncSentinelCommands

from smartcache._scripts import missing_scripts
from smartcache.asyncio._connection import AsyncConnection
from smartcache.asyncio._pool import AsyncConnectionPool
from smartcache.core.commands import normalize_command
from smartcache.core.fanout import unfinished
from smartcache.core.flow import (
    ApplyMoved,
    Attempt,
    Outcome,
    RefreshIfPending,
    RequestRefresh,
    Sleep,
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
from smartcache.core.retry import request_written
from smartcache.wire import Undecoded

if TYPE_CHECKING:
    from smartcache.asyncio.client import AsyncSmartClient

__all__ = ["AsyncPipeline"]


class AsyncPipeline(  # type: ignore[misc]  # redis-py's own async mixins disagree on command_info
    AsyncRedisModuleCommands, AsyncCoreCommands, AsyncSentinelCommands
):
    """Queue commands (``pipe.set(...)`` returns the pipeline), then ``await pipe.execute()``."""

    _is_async_client: Literal[True] = True
    _event_dispatcher: Any = None

    def __init__(self, client: AsyncSmartClient, transaction: bool = True) -> None:
        self._client = client
        self.transaction = transaction
        self.response_callbacks = client.response_callbacks
        self.command_stack: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.watching = False
        self.explicit_transaction = False
        self._pinned: tuple[AsyncConnectionPool, AsyncConnection] | None = None
        #: scripts called on this pipeline, loaded (if missing) before it executes
        self.scripts: set[Any] = set()

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
        """Forget queued commands and release a WATCH connection."""
        self.command_stack = []
        self.scripts = set()
        if self._pinned is not None:
            pool, conn = self._pinned
            self._pinned = None
            conn.close() if self.watching else None  # closing also ends the WATCH
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

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Queue a command; while WATCHing (before MULTI) run it at once (awaitable)."""
        if self.watching and not self.explicit_transaction:
            return self._immediate(args, options)
        self.command_stack.append((args, options))
        return self

    async def _immediate(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        client = await self._client.initialize()
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
                raise rx.WatchError("A ConnectionError occurred while watching keys") from exc
            raise
        name = str(args[0]).upper()
        if name in _UNWATCH:
            self.watching = False
        elif name == "WATCH":
            self.watching = True
        del client
        return apply_callback(self.response_callbacks, args[0], reply, options)

    async def _pool_for(self, commands: Sequence[tuple[Any, ...]]) -> AsyncConnectionPool:
        client = self._client
        single = await client._one_node_pool()
        if single is not None:
            return single
        router = client._router
        assert router is not None
        slot = transaction_slot(router.table, commands, router.state.slot_of)
        state = router.state
        if slot is None:
            return state.pool(router.primaries()[0])
        pool = state.slot_pools[slot]
        return pool if pool is not None else state.pool(router.primaries()[0])

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send every queued command; return the replies in order."""
        stack = self.command_stack
        if not stack and not self.watching:
            return []
        await self._client.initialize()
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

    async def _execute_transaction(
        self, stack: list[tuple[tuple[Any, ...], dict[str, Any]]], raise_on_error: bool
    ) -> list[Any]:
        commands = [normalize_command(args) for args, _ in stack]
        batch = [("MULTI",), *commands, ("EXEC",)]
        if self._pinned is not None:
            _, conn = self._pinned
            replies = await conn.execute_many(batch)
        else:
            replies = await self._send_transaction(commands, batch)
        self.watching = False
        return finish_transaction(stack, replies, self.response_callbacks, raise_on_error)

    async def _send_transaction(
        self, commands: Sequence[tuple[Any, ...]], batch: list[tuple[Any, ...]]
    ) -> list[Any]:
        """Send ``MULTI ... EXEC``; on a cluster, the async driver of ``transaction_flow``."""
        router = self._client._router
        if router is None:
            return await _send_batch(await self._pool_for(commands), batch)
        await router.ensure_table()
        state = router.state
        slot = transaction_slot(router.table, commands, state.slot_of)
        if slot is None:  # no key: any primary, nothing can redirect it
            return await _send_batch(await self._pool_for(commands), batch)
        flow = transaction_flow(slot, policy=router.policy, clock=time.monotonic)
        result: Any = None
        try:
            while True:
                effect = flow.send(result)
                result = None
                match effect:
                    case Attempt(slot=at, asking=asking):
                        if asking is not None:
                            pool = state.pool(asking)
                            replies = (await _send_batch(pool, [("ASKING",), *batch]))[1:]
                        else:
                            maybe = state.slot_pools[at]
                            pool = maybe or state.pool(router.primaries()[0])
                            replies = await _send_batch(pool, batch)
                        result = Outcome(reply=replies, sent=True, address=pool.settings.address)
                    case RefreshIfPending():
                        if state.refresh_pending:
                            await router.try_refresh()
                    case ApplyMoved(slot=moved_slot, address=address):
                        state.apply_moved(moved_slot, address)
                    case RequestRefresh():
                        state.refresh_pending = True
                    case Sleep(seconds=seconds):
                        await asyncio.sleep(seconds)
        except StopIteration as done:
            final: list[Any] = done.value
            return final

    async def _execute_pipeline(
        self, stack: list[tuple[tuple[Any, ...], dict[str, Any]]], raise_on_error: bool
    ) -> list[Any]:
        client = self._client
        decode = client._settings.decode_responses
        commands = [
            Undecoded(normalize_command(a)) if reads_undecoded(o, decode) else normalize_command(a)
            for a, o in stack
        ]
        single = await client._one_node_pool()
        if single is not None:
            raw = await self._on_pool(single, commands)
        else:
            raw = await self._on_cluster(commands)
        results = []
        for reply, (args, options) in zip(raw, stack, strict=True):
            if isinstance(reply, Exception):
                empty = _EMPTY_RESPONSE in options and isinstance(reply, rx.ResponseError)
                results.append(options[_EMPTY_RESPONSE] if empty else reply)
            else:
                results.append(apply_callback(self.response_callbacks, args[0], reply, options))
        if raise_on_error:
            raise_first_error(stack, results)
        return results

    async def _on_pool(
        self, pool: AsyncConnectionPool, commands: list[tuple[Any, ...]]
    ) -> list[Any]:
        try:
            return await pool.connection.execute_many(commands)
        except _NET as exc:
            return await self._after_loss(commands, exc)

    async def _after_loss(
        self, commands: Sequence[tuple[Any, ...]], exc: BaseException
    ) -> list[Any]:
        client = self._client
        table = client._router.table if client._router else client._table
        verdicts = after_loss(client.retry_policy, table, commands, sent=request_written(exc))
        out: list[Any] = []
        for args, error in zip(commands, verdicts, strict=True):
            out.append(await self._rerun(args, -1) if error is None else error)
        return out

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

    async def _on_cluster(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        router = self._client._router
        assert router is not None
        await router.ensure_table()
        state = router.state
        plans = [plan_command(router.table, args, state.slot_of) for args in commands]
        primaries = router.primaries()
        ops: list[tuple[int, int, tuple[Any, ...], AsyncConnectionPool | None]] = []
        for ci, plan in enumerate(plans):
            for slot, args in plan.ops:
                if slot == ALL_PRIMARIES:
                    ops.extend((ci, slot, args, state.pool(p)) for p in primaries)
                elif slot == ANY_SLOT:
                    ops.append((ci, slot, args, state.pool(state.default_address())))
                else:
                    ops.append((ci, slot, args, state.slot_pools[slot]))
        replies: list[Any] = [None] * len(ops)
        groups: dict[int, tuple[AsyncConnectionPool, list[int]]] = {}
        rerun: list[int] = []
        for i, (_, _, _, pool) in enumerate(ops):
            if pool is None:
                rerun.append(i)
            else:
                groups.setdefault(id(pool), (pool, []))[1].append(i)

        async def send(pool: AsyncConnectionPool, indices: list[int]) -> None:
            batch = [ops[i][2] for i in indices]
            try:
                answers = await pool.connection.execute_many(batch)
            except _NET as exc:
                answers = await self._after_loss(batch, exc)
            for i, answer in zip(indices, answers, strict=True):
                replies[i] = answer

        await asyncio.gather(*(send(pool, indices) for pool, indices in groups.values()))
        failed: dict[int, Outcome] = {}
        for i, (_, _slot, _args, pool) in enumerate(ops):
            reply = replies[i]
            if isinstance(reply, _RETRYABLE) and pool is not None:
                # MOVED, ASK, TRYAGAIN...: the command's own flow follows it, knowing which
                # node answered (``MOVED 3999 :6381`` names that node's host).
                failed[i] = Outcome(error=reply, sent=True, address=pool.settings.address)
                rerun.append(i)
        for i in sorted(set(rerun)):
            _, slot, args, _ = ops[i]
            replies[i] = await self._rerun(args, slot, failed.get(i))
        return assemble(plans, [op[0] for op in ops], replies, router.table)


async def _send_batch(pool: AsyncConnectionPool, batch: list[tuple[Any, ...]]) -> list[Any]:
    """Send ``batch`` on a dedicated connection of ``pool`` and read every reply."""
    async with pool.dedicated() as conn:
        return await conn.execute_many(batch)
