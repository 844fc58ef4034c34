"""AsyncSmartClient: ``redis.asyncio.Redis``'s command API, auto-pipelined, routed by itself.

Every command of every task goes over its node's one shared connection: commands issued in
the same event-loop tick are written together and their replies dispatched in order, so
many concurrent tasks get pipelined throughput without writing pipelines. Blocking commands
and transactions take dedicated connections. Routing, redirects, retries and the refresh
rules are the core's (:mod:`smartcache.core`), driven here with ``await``; nothing of it is
written a second time for asyncio.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Sequence
from time import perf_counter as _clock
from types import TracebackType
from typing import Any, Self

import redis.exceptions as rx
from redis.commands import AsyncCoreCommands, AsyncRedisModuleCommands, AsyncSentinelCommands

from smartcache._client_common import BLOCKING as _BLOCKING
from smartcache._cluster_compat import ClusterNodesMixin
from smartcache._near import NearRuntime
from smartcache._near import bypassed as _bypassed
from smartcache._redis_surface import (
    AsyncClusterManagement,
)
from smartcache._scripts import PipelineAwareAsyncScript
from smartcache.asyncio._client_base import AsyncClientBase
from smartcache.asyncio._cluster import AsyncClusterRouter, AsyncClusterState
from smartcache.asyncio._connection import AsyncConnection
from smartcache.asyncio._monitor import AsyncMonitor
from smartcache.asyncio._near_io import LoopWorld
from smartcache.asyncio._pipeline import AsyncPipeline
from smartcache.asyncio._pool import AsyncConnectionPool
from smartcache.asyncio._pubsub import AsyncPubSub
from smartcache.asyncio._sentinel import AsyncSentinelExecutor, AsyncSentinelState
from smartcache.core.flow import (
    Outcome,
    failed_attempt,
)
from smartcache.core.retry import RetryPolicy
from smartcache.core.slotmap import parse_address
from smartcache.wire import ConnectionSettings

__all__ = ["AsyncSmartClient"]

_NET = (rx.ConnectionError, rx.TimeoutError, OSError)


class AsyncSmartClient(  # type: ignore[misc]  # redis-py's own async mixins disagree on command_info
    AsyncClientBase,
    ClusterNodesMixin,
    AsyncClusterManagement,
    AsyncRedisModuleCommands,
    AsyncCoreCommands,
    AsyncSentinelCommands,
):
    """A drop-in ``redis.asyncio.Redis`` that also speaks Redis Cluster, auto-pipelined.

    Construct it like :class:`smartcache.SmartClient` (``host=``/``port=``, ``from_url()``,
    ``startup_nodes=``, redis-py keyword arguments, ``read_from=``, ``retry_policy=``).
    The topology is detected on first use (or ``await client.initialize()``). Many tasks may
    share one client. ``autopipeline=False`` gives each command a connection of its own.
    ``single_connection_client=True`` (a standalone server) sends every command, blocking
    ones included, over the one shared connection (:attr:`connection`); pipelines,
    transactions and pub/sub keep connections of their own, as with redis-py.
    """

    #: the one connection of ``single_connection_client=True`` once initialized (as
    #: ``redis.asyncio.Redis.connection``); ``None`` otherwise
    connection: Any = None

    _event_dispatcher: Any = None  # part of redis-py's client protocol; unused here

    def __init__(
        self,
        host: str = "localhost",
        port: int = 6379,
        *,
        startup_nodes: Sequence[tuple[str, int]] | None = None,
        cluster: bool | None = None,
        retry_policy: RetryPolicy | None = None,
        retry_non_idempotent: bool = False,
        max_connections: int | None = None,
        pool_timeout: float | None = None,
        read_from: str = "primary",
        max_in_flight: int = 10_000,
        autopipeline: bool = True,
        sentinels: Sequence[tuple[str, int]] | None = None,
        service_name: str | None = None,
        sentinel_kwargs: dict[str, Any] | None = None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        wait_aof: bool = False,
        connection_pool: Any = None,
        refresh_interval: float | None = 30.0,
        **kwargs: Any,
    ) -> None:
        self._take_arguments(locals())
        config = self._near_config
        self._near = (
            None
            if config is None
            else NearRuntime(
                config, LoopWorld(), self._encoder.encode, self._near_owner, self._near_live
            )
        )
        self._refresher: asyncio.TimerHandle | None = None
        self.autopipeline = autopipeline
        self._max_in_flight = max_in_flight
        self._pool: AsyncConnectionPool | None = None
        self._cluster: AsyncClusterState | None = None
        self._router: AsyncClusterRouter | None = None
        self._init_lock: asyncio.Lock | None = None
        self._initialized = False
        self._sentinel: AsyncSentinelState | None = None
        self._sentinel_exec: AsyncSentinelExecutor | None = None
        if sentinels is not None:
            self._sentinel, self._sentinel_exec = self._sentinel_parts(
                sentinels, service_name, sentinel_kwargs
            )

    def _new_pool(self, settings: ConnectionSettings) -> AsyncConnectionPool:
        pool = AsyncConnectionPool(
            settings,
            self._max_connections,
            self._pool_timeout,
            max_in_flight=self._max_in_flight,
        )
        return self._adopt_pool(pool)

    async def initialize(self) -> Self:
        """Detect the topology (``INFO cluster`` on the first node that answers)."""
        if self._initialized:
            return self
        if self._init_lock is None:
            self._init_lock = asyncio.Lock()
        async with self._init_lock:
            if not self._initialized:
                await self._detect()
                self._initialized = True
        return self

    async def _detect(self) -> None:
        if self._sentinel is not None:
            await self._sentinel.discover()
            self._sentinel.start_watcher()
            return
        await self._detect_topology(self._cluster_hint)

    async def _standalone_pool(self, pool: AsyncConnectionPool) -> AsyncConnectionPool:
        """The pool a standalone client keeps (its shared connection is
        ``single_connection_client``'s one connection)."""
        if self.single_connection_client:
            self.connection = pool.connection
        return pool

    # -- redis-py surface -------------------------------------------------------------------
    def _single_node_pool(self) -> AsyncConnectionPool | None:
        # ClusterNodesMixin and the pipeline read .settings/.connection only.
        if self._sentinel is not None:
            return self._sentinel.current_pool
        return self._pool

    def pubsub(self, **kwargs: Any) -> AsyncPubSub:
        """A pub/sub object on this client (as ``redis.asyncio.Redis.pubsub``)."""
        return AsyncPubSub(self, **kwargs)

    @property
    def connection_pool(self) -> AsyncConnectionPool | None:
        """The pool of the standalone server (Sentinel: of the primary; a cluster: of its
        first primary); ``None`` until the client has connected."""
        if self._pool is not None:
            return self._pool
        if self._sentinel is not None:
            return self._sentinel.current_pool
        if self._cluster is not None and self._cluster.slot_map is not None:
            return self._cluster.pool(self._cluster.slot_map.primaries[0])
        return None

    def client(self) -> AsyncSmartClient:
        """A new client to the same servers with ``single_connection_client=True`` (as
        ``redis.asyncio.Redis.client``); close it when done."""
        return type(self)(**{**self._given, "single_connection_client": True})

    def monitor(self, target_node: Any = None) -> AsyncMonitor:
        """A ``redis.asyncio.client.Monitor`` on a connection of its own (as
        ``redis.asyncio.Redis.monitor``; on a cluster ``target_node``, else a primary)."""

        async def open_connection() -> AsyncConnection:
            await self.initialize()
            if target_node is not None:
                host, port = parse_address(str(getattr(target_node, "name", target_node)))
            elif self._router is not None:
                host, port = parse_address(self._router.primaries()[0])
            else:
                pool = await self._one_node_pool()
                assert pool is not None
                host, port = pool.settings.host, pool.settings.port
            conn = AsyncConnection(self._settings.with_address(host, port))
            await conn.connect()
            return conn

        return AsyncMonitor(open_connection, self._encoder)

    async def transaction(
        self,
        func: Callable[[AsyncPipeline], Any],
        *watches: Any,
        shard_hint: Any = None,
        value_from_callable: bool = False,
        watch_delay: float | None = None,
    ) -> Any:
        """Run ``func(pipe)`` (a function or a coroutine function) under WATCH ``watches``
        until EXEC succeeds, as ``redis.asyncio.Redis.transaction``."""
        async with self.pipeline(True, shard_hint) as pipe:
            while True:
                try:
                    if watches:
                        await pipe.watch(*watches)
                    func_value = func(pipe)
                    if inspect.isawaitable(func_value):
                        func_value = await func_value
                    exec_value = await pipe.execute()
                    return func_value if value_from_callable else exec_value
                except rx.WatchError:
                    if watch_delay is not None and watch_delay > 0:
                        await asyncio.sleep(watch_delay)

    def register_script(self, script: Any) -> PipelineAwareAsyncScript:  # type: ignore[override]
        """A callable Lua script (as redis.asyncio's), which smartcache pipelines preload."""
        return PipelineAwareAsyncScript(self, script)  # type: ignore[arg-type]  # drop-in client

    async def _ensure_ready(self) -> None:
        """Detect the topology if not done yet (the pipelines call it first)."""
        if not self._initialized:
            await self.initialize()

    async def _one_node_pool(self) -> AsyncConnectionPool | None:
        """The pool of the one node a non-cluster client talks to (None on a cluster)."""
        await self.initialize()
        if self._sentinel is not None:
            return await self._sentinel.primary_pool()
        return self._pool

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> AsyncPipeline:
        """An async pipeline (``transaction=True``: MULTI/EXEC, one slot on a cluster)."""
        return AsyncPipeline(self, transaction, shard_hint)

    def __repr__(self) -> str:
        kind = "cluster" if self._cluster else "standalone"
        return f"<AsyncSmartClient {kind} {self._settings!r}>"

    async def __aenter__(self) -> Self:
        return await self.initialize()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def _start_refresher(self, state: AsyncClusterState) -> None:
        """Ask for a refresh when the slot map is older than ``refresh_interval`` (a loop
        timer waking every half interval; the rule is
        :func:`~smartcache.core.refresh.periodic_refresh_due`). The refresh itself runs
        in the next command, under the usual collapse and rate limit."""
        interval = self._refresh_interval
        if interval is None:
            return
        loop = asyncio.get_running_loop()

        def tick() -> None:
            state.mark_refresh_if_due(interval)
            self._refresher = loop.call_later(interval / 2, tick)

        self._refresher = loop.call_later(interval / 2, tick)

    async def aclose(self) -> None:
        """Close every connection."""
        if self._near is not None:
            self._near.close()
        if self._refresher is not None:
            self._refresher.cancel()
            self._refresher = None
        if self._pool is not None:
            await self._pool.aclose()
        if self._cluster is not None:
            await self._cluster.aclose()
        if self._sentinel is not None:
            await self._sentinel.aclose()

    async def close(self) -> None:
        """Alias of :meth:`aclose`."""
        await self.aclose()

    # -- execution --------------------------------------------------------------------------
    async def execute_command(self, *args: Any, **options: Any) -> Any:
        """Send one command, routed by its keys, and return its parsed reply."""
        telemetry = self._telemetry  # metrics/traces: None when off (one check, no frame)
        if telemetry is not None:
            started = _clock()
            handle = telemetry.begin(args)
        failed: BaseException | None = None
        try:
            near = self._near
            if near is not None and args[0] in near.commands and not _bypassed():
                if not self._initialized:
                    await self.initialize()
                return await self._near_read(args, options)
            if options:
                options.pop("keys", None)
                if options:
                    return await self._execute_slow(args, options)
            if not self._initialized:
                await self.initialize()
            name = args[0]
            pool = self._pool
            if pool is not None:
                if (
                    self.autopipeline
                    and type(name) is str
                    and " " not in name
                    and name not in _BLOCKING
                    and not self._wait[0]
                ):
                    try:
                        reply = await pool.connection.execute(*args)
                    except (*_NET, rx.ResponseError) as exc:
                        # The core decides (MASTERDOWN waits; READONLY, WRONGTYPE... raise).
                        first = failed_attempt(exc, pool.settings.address)
                        reply = await self._single_node_retry(args, first)
                    callback = self.response_callbacks.get(name)
                    return callback(reply) if callback is not None else reply
                return await self._execute_slow(args, options)
            router = self._router
            if router is None:  # Sentinel
                return await self._execute_slow(args, options)
            fast = router.single_key.get(name)
            state = self._cluster
            assert state is not None
            if fast is None or len(args) <= fast[0] or not self.autopipeline:
                return await self._execute_slow(args, options)
            # The node is the general path's choice (primary, or a replica for reads).
            slot = state.slot_of(args[fast[0]])
            node = state.pool_for(slot, fast[1])
            if node is None or state.refresh_pending or state.suspects:
                reply = await router.keyed(args, router.table.lookup(args), slot)
            else:
                try:
                    reply = await node.connection.execute(*args)
                except (rx.ResponseError, *_NET) as exc:
                    first = failed_attempt(exc, node.settings.address)
                    reply = await router.keyed(args, router.table.lookup(args), slot, first=first)
            callback = self.response_callbacks.get(name)
            return callback(reply) if callback is not None else reply
        except BaseException as exc:
            failed = exc
            raise
        finally:
            if telemetry is not None:
                seconds = _clock() - started
                telemetry.finish(handle, args[0], self._peer_of(args), seconds, failed)

    async def _attempt(
        self, pool: AsyncConnectionPool, args: tuple[Any, ...], blocking: bool
    ) -> Outcome:
        """One attempt on the one server: on the pool's shared, auto-pipelined connection,
        or a dedicated one (auto-pipelining off, or a blocking command); a blocking command
        of a ``single_connection_client`` waits on the one shared connection with no read
        timeout."""
        single = self.single_connection_client
        dedicated = (blocking or not self.autopipeline) and not single
        if dedicated or not blocking:
            return await pool.attempt(args, blocking=blocking, dedicated=dedicated)
        try:
            shared = await pool.shared()
            before = shared.timeout
            shared.settimeout(None)  # commands queued before keep their timeout
            pending = shared.execute(*args)
            shared.settimeout(before)  # flushes it with none; later commands get theirs
            reply = await pending
        except (rx.ResponseError, *_NET) as exc:
            return failed_attempt(exc, pool.settings.address)
        return Outcome(reply=reply)
