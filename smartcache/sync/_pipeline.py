"""Pipelines and transactions for SmartClient, with redis-py's ``Pipeline`` API.

Non-transactional pipelines are planned by :mod:`smartcache.core.pipeline`: commands are
grouped per node, every node's batch is written before any reply is read (the nodes work
in parallel without threads), and only the commands that failed (MOVED, ASK, TRYAGAIN, a
lost connection) are re-run one by one through the client's normal retry path. Results
come back in the caller's order. Transactions (``transaction=True``, WATCH) run on one
connection and, on a cluster, must keep every key on one slot.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

import redis.exceptions as rx
from redis.commands import CoreCommands, RedisModuleCommands, SentinelCommands

from smartcache._scripts import missing_scripts
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
from smartcache.sync._connection import Connection
from smartcache.sync._pool import ConnectionPool
from smartcache.wire import Undecoded

if TYPE_CHECKING:
    from smartcache.sync.client import SmartClient

__all__ = ["Pipeline"]


class Pipeline(RedisModuleCommands, CoreCommands, SentinelCommands):
    """Queue commands and send them together; see ``redis.client.Pipeline``.

    ``execute(raise_on_error=True)`` returns the replies in order; with
    ``raise_on_error=False`` failed commands leave their exception in place.
    """

    _is_async_client: Literal[False] = False
    _event_dispatcher: Any = None  # part of redis-py's client protocol; unused here

    def __init__(
        self, client: SmartClient, transaction: bool = True, shard_hint: Any = None
    ) -> None:
        self._client = client
        self.transaction = transaction
        self.shard_hint = shard_hint
        self.response_callbacks = client.response_callbacks
        self.command_stack: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
        self.watching = False
        self.explicit_transaction = False
        self._pinned: tuple[ConnectionPool, Connection] | None = None
        #: scripts called on this pipeline, loaded (if missing) before it executes
        self.scripts: set[Any] = set()

    # -- redis-py surface -----------------------------------------------------------------
    def get_encoder(self) -> Any:
        """The client's encoder."""
        return self._client.get_encoder()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.reset()

    def __len__(self) -> int:
        return len(self.command_stack)

    def __bool__(self) -> bool:
        return True

    def _load_scripts(self) -> None:
        scripts = list(self.scripts)
        exists = self._client.script_exists(*[s.sha for s in scripts])
        for script in missing_scripts(scripts, list(exists)):
            script.sha = self._client.script_load(script.script)

    def reset(self) -> None:  # type: ignore[override]  # redis-py's Pipeline.reset too
        """Forget queued commands and release a WATCH connection."""
        self.command_stack = []
        self.scripts = set()
        if self._pinned is not None:
            pool, conn = self._pinned
            self._pinned = None
            if self.watching:
                try:
                    conn.execute("UNWATCH")
                except _NET:
                    conn.close()
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

    def watch(self, *names: Any) -> Any:
        """WATCH keys (on a cluster they must share a slot)."""
        if self.explicit_transaction:
            raise rx.RedisError("Cannot issue a WATCH after a MULTI")
        return self.execute_command("WATCH", *names)

    def unwatch(self) -> Any:
        """UNWATCH."""
        return (self.watching and self.execute_command("UNWATCH")) or True

    def discard(self) -> None:
        """DISCARD: drop the queued commands."""
        self.execute_command("DISCARD")

    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Queue a command (or run it at once while WATCHing, as redis-py does)."""
        if (self.watching or args[0] == "WATCH") and not self.explicit_transaction:
            return self._immediate(args, options)
        self.command_stack.append((args, options))
        return self

    # -- immediate mode (WATCH ... MULTI) -----------------------------------------------
    def _immediate(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        name = str(args[0]).upper()
        wire_args = normalize_command(args)
        if self._pinned is None:
            self._pinned = self._pin(wire_args)
        _, conn = self._pinned
        try:
            reply = conn.execute(*wire_args)
        except _NET as exc:
            was_watching = self.watching
            self.reset()
            if was_watching:
                raise rx.WatchError(
                    "A ConnectionError occurred on while watching one or more keys"
                ) from exc
            raise
        if name in _UNWATCH:
            self.watching = False
        elif name == "WATCH":
            self.watching = True
        return apply_callback(self.response_callbacks, args[0], reply, options)

    def _pin(self, args: tuple[Any, ...]) -> tuple[ConnectionPool, Connection]:
        client = self._client
        single = client._single_node_pool()
        if single is not None:
            pool = single
        else:
            state = client._cluster
            assert state is not None
            slot = transaction_slot(client._command_table, [args], state.slot_of)
            address = client._address_for_slot(slot) if slot is not None else None
            state = client._cluster
            assert state is not None
            pool = state.pool(address or client._any_address())
        return pool, pool.get()

    # -- execute --------------------------------------------------------------------------
    def execute(self, raise_on_error: bool = True) -> list[Any]:
        """Send every queued command; return the replies in order."""
        stack = self.command_stack
        if not stack and not self.watching:
            return []
        try:
            if self.scripts:
                self._load_scripts()
            if self.transaction or self.explicit_transaction:
                return self._execute_transaction(stack, raise_on_error)
            return self._execute_pipeline(stack, raise_on_error)
        finally:
            self.reset()

    def _execute_transaction(
        self, stack: list[tuple[tuple[Any, ...], dict[str, Any]]], raise_on_error: bool
    ) -> list[Any]:
        commands = [normalize_command(args) for args, _ in stack]
        batch = [("MULTI",), *commands, ("EXEC",)]
        if self._pinned is not None:
            _, conn = self._pinned
            try:
                replies = conn.execute_many(batch)
            except _NET:
                self._pinned = None
                if self.watching:
                    raise rx.WatchError(
                        "A ConnectionError occurred on while watching one or more keys"
                    ) from None
                raise
        else:
            replies = self._send_transaction(commands, batch)
        self.watching = False
        return finish_transaction(stack, replies, self.response_callbacks, raise_on_error)

    def _send_transaction(
        self, commands: Sequence[tuple[Any, ...]], batch: list[tuple[Any, ...]]
    ) -> list[Any]:
        """Send ``MULTI ... EXEC``; on a cluster, the sync driver of ``transaction_flow``."""
        client = self._client
        single = client._single_node_pool()
        state = client._cluster
        if single is not None or state is None:
            assert single is not None
            return _send_batch(single, batch)
        slot = transaction_slot(client._command_table, commands, state.slot_of)
        if slot is None:  # no key: any primary, nothing can redirect it
            return _send_batch(state.pool(client._any_address()), batch)
        flow = transaction_flow(slot, policy=client.retry_policy, clock=time.monotonic)
        result: Any = None
        try:
            while True:
                effect = flow.send(result)
                result = None
                match effect:
                    case Attempt(slot=at, asking=asking):
                        if asking is not None:
                            pool = state.pool(asking)
                            replies = _send_batch(pool, [("ASKING",), *batch])[1:]
                        else:
                            maybe = state.slot_pools[at]
                            pool = maybe or state.pool(client._address_for_slot(at))
                            replies = _send_batch(pool, batch)
                        result = Outcome(reply=replies, sent=True, address=pool.settings.address)
                    case RefreshIfPending():
                        if state.refresh_pending:
                            client._try_refresh()
                    case ApplyMoved(slot=moved_slot, address=address):
                        state.apply_moved(moved_slot, address)
                    case RequestRefresh():
                        state.refresh_pending = True
                    case Sleep(seconds=seconds):
                        time.sleep(seconds)
        except StopIteration as done:
            final: list[Any] = done.value
            return final

    def _execute_pipeline(
        self, stack: list[tuple[tuple[Any, ...], dict[str, Any]]], raise_on_error: bool
    ) -> list[Any]:
        client = self._client
        decode = client._settings.decode_responses
        commands = [
            Undecoded(normalize_command(a)) if reads_undecoded(o, decode) else normalize_command(a)
            for a, o in stack
        ]
        single = client._single_node_pool()
        if single is not None:
            raw = self._run_on_pool(single, commands)
        else:
            raw = self._run_on_cluster(commands)
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

    def _run_on_pool(self, pool: ConnectionPool, commands: list[tuple[Any, ...]]) -> list[Any]:
        conn = pool.get()
        connected = conn.is_connected
        results: list[Any] = []
        try:
            conn.send_many(commands)
            for args in commands:
                results.append(conn.read_for(args))
        except _NET as exc:
            if not results and not connected:
                pool.release(conn)
                return [self._rerun(args, None) for args in commands]  # nothing was sent
            results.extend(self._after_loss(commands[len(results) :], exc))
        finally:
            pool.release(conn)
        return results

    def _after_loss(self, unread: Sequence[tuple[Any, ...]], exc: BaseException) -> list[Any]:
        client = self._client
        table = client._command_table
        verdicts = after_loss(client.retry_policy, table, unread, sent=request_written(exc))
        out: list[Any] = []
        for args, error in zip(unread, verdicts, strict=True):
            out.append(self._rerun(args, None) if error is None else error)
        return out

    def _rerun(self, args: tuple[Any, ...], slot: int | None, first: Outcome | None = None) -> Any:
        """Run one command alone through the client's retry path; ``first`` hands over the
        reply that failed in the pipeline (a MOVED is followed as a single command's is)."""
        client = self._client
        undecoded = args.__class__ is Undecoded
        try:
            if client._router is None:
                if undecoded:
                    return client._execute_undecoded(args, None)
                return client._execute_routed(args)
            router = client._router
            if slot is None or slot < 0:
                return unfinished(router.execute(args, None, undecoded))
            spec = router.table.lookup(args)
            return router.keyed(args, spec, slot, first=first, undecoded=undecoded)
        except rx.RedisError as exc:
            return exc

    def _run_on_cluster(self, commands: list[tuple[Any, ...]]) -> list[Any]:
        client = self._client
        table = client._command_table
        state = client._cluster
        assert state is not None and state.slot_map is not None
        plans = [plan_command(table, args, state.slot_of) for args in commands]
        primaries = list(state.slot_map.primaries)
        default = state.default_address()
        # wire operations: (command index, op index, slot, args, pool)
        ops: list[tuple[int, int, int, tuple[Any, ...], ConnectionPool | None]] = []
        for ci, plan in enumerate(plans):
            for oi, (slot, args) in enumerate(plan.ops):
                if slot == ALL_PRIMARIES:
                    ops.extend(
                        (ci, -1 - j, slot, args, state.pool(p)) for j, p in enumerate(primaries)
                    )
                elif slot == ANY_SLOT:
                    ops.append((ci, oi, slot, args, state.pool(default)))
                else:
                    ops.append((ci, oi, slot, args, state.slot_pools[slot]))
        replies: list[Any] = [None] * len(ops)
        self._send_grouped(ops, replies)
        for i, (_, _, slot, args, pool) in enumerate(ops):
            reply = replies[i]
            if reply is _RERUN:
                replies[i] = self._rerun(args, slot)
            elif isinstance(reply, _RETRYABLE) and pool is not None:
                # MOVED, ASK, TRYAGAIN...: the command's own flow follows it, knowing which
                # node answered (``MOVED 3999 :6381`` names that node's host).
                failed = Outcome(error=reply, sent=True, address=pool.settings.address)
                replies[i] = self._rerun(args, slot, failed)
        owners = [op[0] for op in ops]
        return assemble(plans, owners, replies, table)

    def _send_grouped(
        self,
        ops: list[tuple[int, int, int, tuple[Any, ...], ConnectionPool | None]],
        replies: list[Any],
    ) -> None:
        groups: dict[int, tuple[ConnectionPool, list[int]]] = {}
        for i, (_, _, _, _, pool) in enumerate(ops):
            if pool is None:
                replies[i] = _RERUN
                continue
            groups.setdefault(id(pool), (pool, []))[1].append(i)
        sent: list[tuple[ConnectionPool, Connection, list[int]]] = []
        for pool, indices in groups.values():
            conn: Connection | None = None
            try:
                conn = pool.get()
                conn.send_many([ops[i][3] for i in indices])
                sent.append((pool, conn, indices))
            except _NET:
                if conn is not None:
                    pool.release(conn)
                for i in indices:
                    replies[i] = _RERUN  # not sent: safe to re-run
            except BaseException:
                if conn is not None:
                    pool.release(conn)  # bad arguments: nothing of this batch was written
                for other_pool, other, _ in sent:
                    other.close()  # replies owed on it: never hand it out again
                    other_pool.release(other)
                raise
        for pool, conn, indices in sent:
            done = 0
            try:
                for i in indices:
                    replies[i] = conn.read_for(ops[i][3])
                    done += 1
            except _NET as exc:
                unread = indices[done:]
                outcomes = self._after_loss([ops[i][3] for i in unread], exc)
                for i, outcome in zip(unread, outcomes, strict=True):
                    replies[i] = outcome
            finally:
                pool.release(conn)


class _Rerun:
    def __repr__(self) -> str:
        return "<re-run>"


_RERUN = _Rerun()


def _send_batch(pool: ConnectionPool, batch: list[tuple[Any, ...]]) -> list[Any]:
    """Send ``batch`` on one connection of ``pool`` and read every reply."""
    conn = pool.get()
    try:
        return conn.execute_many(batch)
    finally:
        pool.release(conn)
