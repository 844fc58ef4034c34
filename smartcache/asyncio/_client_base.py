"""What AsyncSmartClient shares with SmartClient: the general execution path and the
commands smartcache implements itself, written once.

``smartcache/sync/_client_base.py`` is generated from this file (``scripts/unasync.py``).
The client modules keep only what differs between the worlds: construction and topology
detection, the inline first attempt of the fast paths (auto-pipelined here, a pooled
socket there), closing, and the per-world objects (pipelines, pub/sub, monitor).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Self

import redis.exceptions as rx
from redis.asyncio.lock import Lock
from redis.commands.helpers import list_or_args

from smartcache._client_common import (
    NEAR_UNSUITED,
    ClientCommon,
    sentinel_url_kwargs,
)
from smartcache._near import MISS, NearRuntime
from smartcache._observe import sentinel_listener
from smartcache._redis_surface import EMPTY_RESPONSE, NEVER_DECODE, RedisSurface
from smartcache.asyncio._cluster import AsyncClusterRouter, AsyncClusterState
from smartcache.asyncio._near_io import borrow_reader, connect_channel, give_back_reader
from smartcache.asyncio._sentinel import AsyncSentinelState
from smartcache.asyncio._sentinel_exec import AsyncSentinelExecutor
from smartcache.core.commands import normalize_command
from smartcache.core.fanout import parse_each
from smartcache.core.flow import Attempt, IsSuspect, Outcome, Sleep, keyed_flow
from smartcache.core.retry import is_network_failure
from smartcache.core.scan import first_step, next_step
from smartcache.core.sentinel_command import check_wait, wait_command
from smartcache.exceptions import NoReachableNodeError
from smartcache.wire import ConnectionSettings

if TYPE_CHECKING:
    from redis.commands import AsyncCoreCommands

    from smartcache.asyncio._pool import AsyncConnectionPool

    _Commands = AsyncCoreCommands
else:
    _Commands = object

__all__ = ["AsyncClientBase"]

_NET = (rx.ConnectionError, rx.TimeoutError, OSError)


class AsyncClientBase(  # type: ignore[misc]  # redis-py's own async mixins disagree on command_info
    ClientCommon, RedisSurface, _Commands
):
    """The execution path behind ``execute_command``'s fast path, and smartcache's own
    commands (``*_nonatomic``, the cluster-wide SCAN), for the client of this world."""

    # Selects the awaitable overloads of redis-py's typed command mixins.
    _is_async_client: Literal[True] = True

    # Set by the client (its constructor and topology detection).
    _pool: AsyncConnectionPool | None
    _cluster: AsyncClusterState | None
    _router: AsyncClusterRouter | None
    _startup: list[tuple[str, int]]
    _sentinel_exec: AsyncSentinelExecutor | None
    _wait: tuple[int, int]
    _wait_aof: bool

    if TYPE_CHECKING:

        def __init__(self, *args: Any, **kwargs: Any) -> None: ...

        async def _ensure_ready(self) -> None: ...

        async def _one_node_pool(self) -> AsyncConnectionPool | None: ...

        def _new_pool(self, settings: ConnectionSettings) -> AsyncConnectionPool: ...

        async def _standalone_pool(self, pool: AsyncConnectionPool) -> AsyncConnectionPool: ...

        def _start_refresher(self, state: AsyncClusterState) -> None: ...

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_pool(cls, connection_pool: Any) -> Self:
        """A client with the settings of a redis-py ``connection_pool`` (as
        ``redis.asyncio.Redis.from_pool``); smartcache opens its own connections."""
        return cls(connection_pool=connection_pool)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Self:
        """Build from ``redis://[[user]:pass@]host[:port][/db]``, ``rediss://...`` (a
        server or a cluster) or ``redis+sentinel://[user:pass@]h1:26379,h2:26380/service[/db]``."""
        sentinel = sentinel_url_kwargs(url, kwargs)
        if sentinel is not None:
            return cls(**sentinel)
        values = ConnectionSettings.from_url(url).to_redis_kwargs()
        values.update(kwargs)
        return cls(**values)

    def _sentinel_parts(
        self,
        sentinels: Sequence[tuple[str, int]],
        service_name: str | None,
        sentinel_kwargs: dict[str, Any] | None,
    ) -> tuple[AsyncSentinelState, AsyncSentinelExecutor]:
        """The Sentinel-discovered primary's state and the executor that runs commands on
        it (nothing discovered yet)."""
        assert service_name is not None  # checked by _init_common
        state = AsyncSentinelState(
            [(str(h), int(p)) for h, p in sentinels],
            service_name,
            self._settings,
            self._sentinel_settings(sentinel_kwargs),
            self._new_pool,
        )
        executor = AsyncSentinelExecutor(
            state,
            self.retry_policy,
            self._table,
            read_from=self.read_from,
            wait_replicas=self._wait[0],
            wait_timeout_ms=self._wait[1],
            wait_aof=self._wait_aof,
            counters=self._counters,
        )
        state.add_listener(sentinel_listener(self._counters, service_name))
        return state, executor

    async def _detect_topology(self, hint: bool | None) -> None:
        """Set the client up for what the startup nodes are: ``INFO cluster`` on the first
        one that answers says cluster or not (``hint``: the caller says it). Refused
        credentials raise at once (every node would refuse them); unreachable nodes are
        skipped, and none answering raises ``NoReachableNodeError``."""
        errors: list[str] = []
        tried: list[str] = []
        for host, port in self._startup:
            settings = self._settings.with_address(host, port)
            pool = self._new_pool(settings)
            tried.append(settings.address)
            try:
                if hint is None:
                    info = await pool.execute("INFO", "cluster")
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    is_cluster = "cluster_enabled:1" in text
                else:
                    is_cluster = hint
            except _NET as exc:
                await pool.aclose()
                if not is_network_failure(exc):
                    raise  # credentials refused: every other node would refuse them too
                errors.append(f"{settings.address}: {exc}")
                continue
            if is_cluster:
                await pool.aclose()
                state = AsyncClusterState(
                    settings, self._startup, pool_factory=self._new_pool, counters=self._counters
                )
                await state.refresh(force=True)
                router = AsyncClusterRouter(
                    state,
                    self.retry_policy,
                    self.read_from,
                    wait=(*self._wait, self._wait_aof),
                )
                self._cluster, self._router, self._pool = state, router, None
                self._start_refresher(state)
            else:
                self._cluster, self._router = None, None
                self._pool = await self._standalone_pool(pool)
            return
        raise NoReachableNodeError(
            f"none of the startup nodes answered: {'; '.join(errors)}", addresses=tried
        )

    # -- redis-py surface -------------------------------------------------------------------
    async def parse_response(self, connection: Any, command_name: Any, **options: Any) -> Any:
        """Read one reply from ``connection`` and apply ``command_name``'s response
        callback, as ``redis.asyncio.Redis.parse_response`` (``EMPTY_RESPONSE`` and
        ``NEVER_DECODE`` included). ``connection``: this client's (``connection``,
        ``connection_pool.get_connection()``) or a redis-py one."""
        try:
            if NEVER_DECODE in options:
                response = await connection.read_response(disable_decoding=True)
            else:
                response = await connection.read_response()
        except rx.ResponseError:
            if EMPTY_RESPONSE in options:
                return options[EMPTY_RESPONSE]
            raise
        return self._parsed(command_name, response, options)

    def keyspace_notifications(
        self, key_prefix: str | bytes | None = None, ignore_subscribe_messages: bool = True
    ) -> Any:
        """redis-py's ``AsyncKeyspaceNotifications`` on this client's pub/sub (as
        ``redis.asyncio.Redis.keyspace_notifications``; a standalone server or Sentinel)."""
        if self._cluster is not None:
            raise NotImplementedError(
                "keyspace notifications on a cluster need one subscription per primary "
                "(redis-py's ClusterKeyspaceNotifications); smartcache does not offer it yet"
            )
        from redis.asyncio.keyspace_notifications import (  # noqa: PLC0415
            AsyncKeyspaceNotifications,
        )

        return AsyncKeyspaceNotifications(
            self,  # type: ignore[arg-type]  # drop-in client
            key_prefix=key_prefix,
            ignore_subscribe_messages=ignore_subscribe_messages,
        )

    def lock(  # noqa: PLR0917 - redis.asyncio.Redis.lock's signature
        self,
        name: Any,
        timeout: float | None = None,
        sleep: float = 0.1,
        blocking: bool = True,
        blocking_timeout: float | None = None,
        lock_class: Any = None,
        thread_local: bool = True,
        raise_on_release_error: bool = True,
    ) -> Any:
        """A ``redis.asyncio.lock.Lock`` on this client (as ``redis.asyncio.Redis.lock``)."""
        cls: Any = lock_class or Lock
        return cls(
            self,
            name,
            timeout=timeout,
            sleep=sleep,
            blocking=blocking,
            blocking_timeout=blocking_timeout,
            thread_local=thread_local,
            raise_on_release_error=raise_on_release_error,
        )

    # -- RedisCluster compatibility ---------------------------------------------------------
    async def mget_nonatomic(self, keys: Any, *args: Any) -> list[Any]:
        """MGET split by slot, as ``RedisCluster.mget_nonatomic``: the values in the order
        of ``keys``, read by one MGET per slot (not atomic across slots; ``mget()`` refuses
        keys on several slots)."""
        await self._ensure_ready()
        command = ("MGET", *list_or_args(keys, args))
        if self._router is None or len(command) == 1:
            return await self.mget(command[1:])
        reply = await self._router.execute(command, None, nonatomic=True)
        return self._nonatomic_reply(command, reply)  # type: ignore[no-any-return]

    async def mset_nonatomic(self, mapping: Mapping[Any, Any]) -> list[bool]:
        """MSET split by slot, as ``RedisCluster.mset_nonatomic``: one MSET per slot, and
        its result per slot (not atomic across slots; ``mset()`` refuses keys on several
        slots). On a single server the one MSET's result."""
        await self._ensure_ready()
        command = self._mset_args(mapping)
        if len(command) == 1:
            return []
        if self._router is None:
            return [await self.mset(mapping)]
        reply = await self._router.execute(command, None, nonatomic=True)
        return self._nonatomic_reply(command, reply)  # type: ignore[no-any-return]

    async def scan(
        self,
        cursor: int = 0,
        match: Any = None,
        count: int | None = None,
        _type: str | None = None,
        **kwargs: Any,
    ) -> Any:
        """SCAN, as ``redis.asyncio.Redis.scan``. On a cluster (without ``target_nodes=``)
        the int cursor runs over every primary in turn (:mod:`smartcache.core.scan`), so a
        loop ``while cursor != 0`` visits every key, as on one server."""
        await self._ensure_ready()
        router = self._router
        if router is None or "target_nodes" in kwargs:
            return await super().scan(cursor, match, count, _type, **kwargs)
        primaries = sorted(router.primaries())
        step = first_step(cursor, len(primaries))
        keys: list[Any] = []
        while True:
            reply_cursor, data = await super().scan(
                step.cursor, match, count, _type, target_nodes=[primaries[step.node]], **kwargs
            )
            keys.extend(data)
            step = next_step(step, reply_cursor, len(primaries))
            if step.done or step.cursor:  # finished, or a primary is part-way: hand back
                return step.to_cursor(), keys

    async def scan_iter(  # type: ignore[override]  # an async iterator, as redis.asyncio
        self,
        match: Any = None,
        count: int | None = None,
        _type: str | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """Iterate over every key (on a cluster: of every primary), as redis-py does."""
        await self._ensure_ready()
        targets: list[Any] = [None]
        if self._router is not None and "target_nodes" not in kwargs:
            targets = [[address] for address in self._router.primaries()]
        for target in targets:
            cursor = 0
            first = True
            extra = {"target_nodes": target} if target is not None else {}
            while first or cursor != 0:
                first = False
                cursor, data = await self.scan(
                    cursor=cursor, match=match, count=count, _type=_type, **extra, **kwargs
                )
                for item in data:
                    yield item

    # -- the near cache ---------------------------------------------------------------------
    async def _near_read(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        """A cacheable read with the near cache on: a kept reply, or a tracked read that
        may be kept (:mod:`smartcache._near`); anything unusual takes the ordinary path."""
        near = self._near
        assert near is not None
        if options:
            options.pop("keys", None)
            if NEAR_UNSUITED.intersection(options):
                return await self._execute_slow(args, options)
        if len(args) < 2:
            return await self._execute_slow(args, options)
        if not near.ready:
            await self._ensure_ready()
            self._near_adopt(near, await self._near_command_info(near))
            if args[0] not in near.commands:
                return await self._execute_slow(args, options)
        if args[0] == "MGET":
            return await self._near_mget(near, args, options)
        value = near.get(args)
        if value is MISS:
            await self._near_settle()
            slot, pool = self._near_route(args[1])
            if pool is not None:
                value = (await self._near_fetch(near, pool, [(args, slot)]))[0]
            if value is MISS:
                return await self._execute_slow(args, options)
        return parse_each(value, self.response_callbacks.get(args[0]), options)

    async def _near_mget(
        self, near: NearRuntime, args: tuple[Any, ...], options: dict[str, Any]
    ) -> Any:
        """MGET served key by key: hits from the near cache, the misses in one tracked
        round trip per node; keys the near path cannot take go in one ordinary MGET."""
        keys = args[1:]
        values = [near.get(("GET", k)) for k in keys]
        missing = [i for i, v in enumerate(values) if v is MISS]
        if missing:
            await self._near_settle()
        groups: dict[int, tuple[Any, list[int], list[tuple[tuple[Any, ...], int]]]] = {}
        for i in missing:
            slot, pool = self._near_route(keys[i])
            if pool is not None:
                group = groups.setdefault(id(pool), (pool, [], []))
                group[1].append(i)
                group[2].append((("GET", keys[i]), slot))
        for pool, where, reads in groups.values():
            for i, value in zip(where, await self._near_fetch(near, pool, reads), strict=True):
                values[i] = value
        rest = [i for i in missing if values[i] is MISS]
        if rest:
            got = await self._execute_slow(("MGET", *[keys[i] for i in rest]), {})
            for i, value in zip(rest, got, strict=True):
                values[i] = value
        return parse_each(values, self.response_callbacks.get("MGET"), options)

    async def _near_settle(self) -> None:
        """Before a miss is routed: the refresh a MOVED asked for, as the ordinary path
        runs it (rate-limited by the router; until it runs, the map MOVED patched routes)."""
        cluster = self._cluster
        if cluster is not None and cluster.refresh_pending:
            router = self._router
            assert router is not None
            await router.try_refresh()

    async def _near_command_info(self, near: NearRuntime) -> Any:
        try:
            return await self._execute_routed(("COMMAND", "INFO", *sorted(near.config.wanted())))
        except (rx.ResponseError, *_NET) as exc:
            return exc

    async def _near_fetch(
        self, near: NearRuntime, pool: Any, reads: list[tuple[tuple[Any, ...], int]]
    ) -> list[Any]:
        """Misses on one node in one tracked round trip: their replies, with
        :data:`~smartcache._near.MISS` where the ordinary path must run the command."""
        failed = [MISS] * len(reads)
        channel = near.channel(pool.settings)
        if channel is None:
            try:
                channel = await connect_channel(near, near.new_channel(pool.settings))
            except (rx.RedisError, OSError):
                return failed  # the ordinary path reports what is wrong with the node
        try:
            conn = await borrow_reader(channel, pool)
        except (rx.RedisError, OSError):
            near.reader_failed(channel)
            return failed
        try:
            plan = near.prepare(reads, pool, channel, conn)
            try:
                replies = await conn.execute_many(plan.commands)
            except (rx.ResponseError, *_NET):
                near.abandon(plan)
                near.reader_failed(channel)
                return failed
        finally:
            give_back_reader(channel)
        return near.complete(plan, replies)

    # -- the general execution path ---------------------------------------------------------
    async def _execute_slow(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        """A command with options (redis-py's ``EMPTY_RESPONSE``, ``NEVER_DECODE``,
        ``target_nodes``, callback options), or one the fast path does not take."""
        await self._ensure_ready()
        command_name = args[0]
        args = normalize_command(args)
        empty = options.pop(EMPTY_RESPONSE, _MISSING)
        undecoded = NEVER_DECODE in options and self._settings.decode_responses
        options.pop(NEVER_DECODE, None)
        options.pop("keys", None)
        target_nodes = options.pop("target_nodes", None)
        try:
            if undecoded:
                reply = await self._execute_undecoded(args, target_nodes)
            else:
                reply = await self._execute_routed(args, target_nodes)
        except rx.ResponseError:
            if empty is not _MISSING:
                return empty
            raise
        return parse_each(reply, self.response_callbacks.get(command_name), options)

    async def _execute_routed(self, args: tuple[Any, ...], target_nodes: Any = None) -> Any:
        """Run a normalised command on whatever topology this client talks to."""
        if self._sentinel_exec is not None:
            return await self._sentinel_exec.execute(args)
        if self._pool is not None:
            if self._wait[0]:
                spec = self._table.lookup(args)
                if spec is None or spec.replicates:
                    return await self._write_and_wait(args)
            return await self._single_node_retry(args, None)
        assert self._router is not None
        return await self._router.execute(args, target_nodes)

    async def _write_and_wait(self, args: tuple[Any, ...]) -> Any:
        """A write followed by WAIT on the same (dedicated) connection, in one round trip,
        through the command flow; too few acknowledgements raise ``DurabilityError``
        (``check_wait``, the Sentinel path's rule)."""
        wanted, timeout_ms = self._wait
        wait = wait_command(wanted, timeout_ms, aof=self._wait_aof)
        reply, acked = await self._single_node_retry(args, None, then=wait)
        check_wait(args, acked, wanted, timeout_ms, aof=self._wait_aof)
        return reply

    async def _execute_undecoded(self, args: tuple[Any, ...], target_nodes: Any) -> Any:
        """A command whose reply must stay bytes (redis-py's NEVER_DECODE, e.g. DUMP), on a
        dedicated connection (an auto-pipelined reader must never meet a reply it cannot
        decode)."""
        if self._router is not None:
            return await self._router.execute(args, target_nodes, undecoded=True)
        pool = await self._one_node_pool()
        assert pool is not None
        outcome = await pool.attempt(args, undecoded=True)
        if outcome.error is not None:
            raise outcome.error
        return outcome.reply

    async def _single_node_retry(
        self,
        args: tuple[Any, ...],
        first: Outcome | None,
        then: tuple[Any, ...] | None = None,
    ) -> Any:
        """A command on the one server, through the same flow the cluster uses (from the
        failure ``first``, if the fast path met one: MASTERDOWN waits; READONLY,
        WRONGTYPE... raise at once; a lost connection is retried only where that is safe).
        ``then``: ``WAIT`` behind each attempt, the reply then being ``(reply, WAIT's
        reply)``."""
        pool = self._pool
        assert pool is not None
        blocking = self._table.is_blocking(args)
        flow = keyed_flow(
            args,
            self._table.lookup(args),
            0,
            policy=self.retry_policy,
            read_from="primary",
            clock=time.monotonic,
            first=first,
            reroutable=False,  # one fixed server: a retry reaches the same node
            counters=self._counters,
        )
        result: Any = None
        try:
            while True:
                effect = flow.send(result)
                result = None
                if isinstance(effect, Attempt):
                    if then is not None:
                        result = await pool.attempt(
                            args, then=then, then_timeout=self._wait[1] / 1000
                        )
                    else:
                        result = await self._attempt(pool, args, blocking)
                elif isinstance(effect, IsSuspect):
                    result = False
                elif isinstance(effect, Sleep):
                    await asyncio.sleep(effect.seconds)
        except StopIteration as done:
            return done.value

    async def _attempt(
        self, pool: AsyncConnectionPool, args: tuple[Any, ...], blocking: bool
    ) -> Outcome:
        """One attempt of a command on the one server (the client may choose the
        connection otherwise: auto-pipelining off, one shared connection)."""
        return await pool.attempt(args, blocking=blocking)


class _Missing:
    pass


_MISSING = _Missing()
