"""``AsyncWriteBehind``: write-behind over an asyncio client, flushed by an asyncio task.

The same rules as :class:`~smartcache.cache.WriteBehind` (:mod:`._wb_core`), driven with
``await``. A sync store is called in a worker thread (``asyncio.to_thread``) so the event
loop never blocks on the database; an async store (``async def write_many``) is awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Generator, Sequence
from typing import Any

from smartcache.cache._base import REDIS_ERRORS
from smartcache.cache._protocol import AsyncRedisLike
from smartcache.cache._wb_core import (
    SET_SCRIPT,
    RedisBatch,
    RoundResult,
    StoreCall,
    StorePing,
)
from smartcache.cache._write_behind import FlusherBase, WriteBehindBase
from smartcache.exceptions import InvalidArgumentError

__all__ = ["AsyncFlusher", "AsyncWriteBehind"]


async def run_batch_async(client: AsyncRedisLike, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    """Run ``commands`` as one non-transactional pipeline; errors in place."""
    try:
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return list(await pipe.execute(raise_on_error=False))
    except REDIS_ERRORS as exc:
        return [exc] * len(commands)


async def run_round_async(
    gen: Generator[RedisBatch | StoreCall | StorePing, Any, RoundResult],
    client: AsyncRedisLike,
    store: Any,
    store_is_async: bool,
) -> RoundResult:
    """Drive one :func:`flush_round` with awaits."""
    reply: Any = None
    try:
        effect = next(gen)
        while True:
            if isinstance(effect, RedisBatch):
                reply = await run_batch_async(client, effect.commands)
            elif isinstance(effect, StoreCall):
                method = store.write_many if effect.op == "write" else store.delete_many
                try:
                    if store_is_async:
                        await method(list(effect.items))
                    else:
                        await asyncio.to_thread(method, list(effect.items))
                    reply = None
                except Exception as exc:
                    reply = exc
            else:
                ping = getattr(store, "ping", None)
                try:
                    if ping is None:
                        reply = None
                    elif store_is_async:
                        reply = bool(await ping())
                    else:
                        reply = bool(await asyncio.to_thread(ping))
                except Exception:
                    reply = False
            effect = gen.send(reply)
    except StopIteration as stop:
        result: RoundResult = stop.value
        return result


class AsyncFlusher(FlusherBase):
    """The asyncio twin of :class:`~smartcache.cache.Flusher`: ``await run()`` or ``start()``."""

    client: AsyncRedisLike

    def _init_shell(self) -> None:
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def run_once(self) -> RoundResult:
        """One round; what it did."""
        result = await run_round_async(self._round(), self.client, self.store, self.store_is_async)
        self._record(result)
        return result

    async def run(self) -> None:
        """Flush until :meth:`stop`."""
        while not self._stopping:
            delay = self._pause_after(await self.run_once())
            if delay and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), delay)
                self._wake.clear()

    def kick(self) -> None:
        """Cut the current pause short."""
        self._wake.set()

    def start(self) -> asyncio.Task[None]:
        """Run as a task of the running loop; returns it."""
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(
                self.run(), name="smartcache-flusher"
            )
        return self._task

    async def stop(self) -> None:
        """Stop after the current round; the task never outlives this call."""
        self._stopping = True
        self._wake.set()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), 10.0)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task


class AsyncWriteBehind(WriteBehindBase):
    """Write-behind over an asyncio client (``AsyncSmartClient``, ``redis.asyncio``).

    ``wb = AsyncWriteBehind(client, store)``; ``await wb.set(key, value)``; the flusher task
    starts with the first write (``flusher=False`` for writer-only processes); ``await
    wb.flush()``; ``await wb.aclose()`` flushes and stops the task. ``async with`` works.
    """

    client: AsyncRedisLike

    def __init__(
        self, client: AsyncRedisLike, store: Any = None, *, flusher: bool = True, **kw: Any
    ) -> None:
        super().__init__(client, store, **kw)
        if flusher and store is None:
            raise InvalidArgumentError(
                "AsyncWriteBehind(flusher=True) needs a store; pass store=..., or "
                "flusher=False when flush-worker processes write the database"
            )
        self._script = client.register_script(SET_SCRIPT)
        self._checked = False
        self.flusher: AsyncFlusher | None = None
        if flusher:
            self.flusher = AsyncFlusher(
                client,
                store,
                self.layout,
                self.options,
                poll_interval=self.poll_interval,
                max_backoff=self.max_backoff,
                clock=self.clock,
                serializer=self.policy.serializer,
            )

    async def start(self) -> None:
        """Check the queue's partition count and start the flusher task (idempotent)."""
        if not self._checked:
            pipe = self.client.pipeline(transaction=False)
            for command in self._meta_commands():
                pipe.execute_command(*command)
            self._check_meta((await pipe.execute())[1])
            self._checked = True
        if self.flusher is not None:
            self.flusher.start()

    async def set(self, key: str, value: Any) -> str:
        """Cache ``value`` under ``key`` and queue it for the store; the change's version."""
        keys, args = self._set_args(key, value)
        if not self._checked:
            await self.start()
        return self._written(key, await self._script(keys=keys, args=args), "sets")

    async def delete(self, key: str) -> str:
        """Drop ``key`` from the cache and queue its deletion from the store."""
        keys, args = self._delete_args(key)
        if not self._checked:
            await self.start()
        return self._written(key, await self._script(keys=keys, args=args), "deletes")

    async def get(self, key: str, default: Any = None) -> Any:
        """The cached value of ``key`` (``default`` on a miss)."""
        return self._decode_value(await self.client.get(self.key_for(key)), default)

    async def flush(self, timeout: float = 30.0) -> None:
        """Wait until every change this object wrote has reached the store."""
        await self._wait_flushed(self._flush_targets(), timeout)

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait until the whole queue is empty (every writer's changes)."""
        await self._wait_flushed(self._all_targets(), timeout)

    async def _wait_flushed(self, targets: dict[int, str], timeout: float) -> None:
        flow = self._wait_flow(targets, timeout)
        try:
            step = next(flow)
            while True:
                if isinstance(step, RedisBatch):
                    reply = await run_batch_async(self.client, step.commands)
                else:
                    if self.flusher is not None:
                        self.flusher.kick()
                    await asyncio.sleep(step)
                    reply = None
                step = flow.send(reply)
        except StopIteration:
            return

    async def aclose(self, timeout: float = 30.0) -> None:
        """Flush (bounded by ``timeout``), then stop the flusher task."""
        try:
            if self.flusher is not None and self._checked:
                await self.flush(timeout)
        finally:
            if self.flusher is not None:
                await self.flusher.stop()

    async def __aenter__(self) -> AsyncWriteBehind:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def stats(self) -> dict[str, Any]:
        """Counts, ``backlog``, ``dead_letters`` and ``lag_seconds``."""
        pipe = self.client.pipeline(transaction=False)
        for command in self._stats_commands():
            pipe.execute_command(*command)
        flusher = self.flusher.stats.snapshot() if self.flusher is not None else {}
        return self._parse_stats(await pipe.execute(), flusher)

    async def dead_letters(self, count: int = 100) -> list[dict[str, Any]]:
        """Entries moved to the dead-letter streams, oldest first, with their errors."""
        pipe = self.client.pipeline(transaction=False)
        for command in self._dead_commands(count):
            pipe.execute_command(*command)
        return self._parse_dead(await pipe.execute(), count)

    def __repr__(self) -> str:
        return (
            f"AsyncWriteBehind(name={self.layout.name!r}, "
            f"partitions={self.layout.partitions}, store={type(self.store).__name__})"
        )
