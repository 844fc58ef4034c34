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
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal, Self

import redis.exceptions as rx
from redis.asyncio.lock import Lock
from redis.commands import AsyncCoreCommands, AsyncRedisModuleCommands, AsyncSentinelCommands
from redis.commands.helpers import list_or_args

from smartcache._client_common import BLOCKING as _BLOCKING
from smartcache._client_common import WAIT_ON_CLUSTER, ClientCommon, sentinel_url_kwargs
from smartcache._cluster_compat import ClusterNodesMixin
from smartcache._redis_surface import (
    SETTINGS_FIELDS,
    AsyncClusterManagement,
    RedisSurface,
    take_over_pool,
)
from smartcache._scripts import PipelineAwareAsyncScript
from smartcache.asyncio._cluster import AsyncClusterRouter, AsyncClusterState
from smartcache.asyncio._connection import AsyncConnection
from smartcache.asyncio._monitor import AsyncMonitor
from smartcache.asyncio._pipeline import AsyncPipeline
from smartcache.asyncio._pool import AsyncConnectionPool
from smartcache.asyncio._pubsub import AsyncPubSub
from smartcache.asyncio._sentinel import AsyncSentinelExecutor, AsyncSentinelState
from smartcache.core.commands import normalize_command
from smartcache.core.fanout import parse_each
from smartcache.core.flow import (
    Attempt,
    IsSuspect,
    Outcome,
    Sleep,
    failed_attempt,
    keyed_flow,
)
from smartcache.core.retry import RetryPolicy, is_network_failure
from smartcache.core.scan import first_step, next_step
from smartcache.core.sentinel_command import check_wait, wait_command
from smartcache.core.slotmap import parse_address
from smartcache.exceptions import ConfigurationError, NoReachableNodeError
from smartcache.wire import ConnectionSettings

__all__ = ["AsyncSmartClient"]

_EMPTY_RESPONSE = "EMPTY_RESPONSE"
_NEVER_DECODE = "NEVER_DECODE"
_NET = (rx.ConnectionError, rx.TimeoutError, OSError)


class AsyncSmartClient(  # type: ignore[misc]  # redis-py's own async mixins disagree on command_info
    ClientCommon,
    RedisSurface,
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

    _is_async_client: Literal[True] = True
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
        given = dict(locals())  # for client(): the same arguments again
        del given["self"], given["kwargs"], given["connection_pool"]
        self._given = {**given, **kwargs}
        self.single_connection_client = self._check_single_connection(kwargs)
        if connection_pool is not None:
            kwargs, pool_limit = take_over_pool(connection_pool, kwargs, SETTINGS_FIELDS)
            if max_connections is None:
                max_connections = pool_limit
            host = kwargs.pop("host", host)
            port = kwargs.pop("port", port)
            self._given.update(kwargs, host=host, port=port, max_connections=max_connections)
        self._init_common(
            host,
            port,
            kwargs,
            startup_nodes=startup_nodes,
            retry_policy=retry_policy,
            retry_non_idempotent=retry_non_idempotent,
            read_from=read_from,
            wait_replicas=wait_replicas,
            wait_timeout_ms=wait_timeout_ms,
            sentinels=sentinels,
            service_name=service_name,
            sentinel_kwargs=sentinel_kwargs,
            refresh_interval=refresh_interval,
        )
        self._refresher: asyncio.TimerHandle | None = None
        self._wait = (wait_replicas, wait_timeout_ms)
        self._wait_aof = wait_aof
        self.autopipeline = autopipeline
        self._max_connections = max_connections
        self._pool_timeout = pool_timeout
        self._max_in_flight = max_in_flight
        nodes = list(startup_nodes) if startup_nodes else [(host, int(port))]
        self._startup = [(str(h), int(p)) for h, p in nodes]
        self._cluster_hint = cluster
        self._pool: AsyncConnectionPool | None = None
        self._cluster: AsyncClusterState | None = None
        self._router: AsyncClusterRouter | None = None
        self._init_lock: asyncio.Lock | None = None
        self._initialized = False
        self._sentinel: AsyncSentinelState | None = None
        self._sentinel_exec: AsyncSentinelExecutor | None = None
        if sentinels is not None:
            assert service_name is not None  # checked by _init_common
            self._sentinel = AsyncSentinelState(
                [(str(h), int(p)) for h, p in sentinels],
                service_name,
                self._settings,
                self._sentinel_settings(sentinel_kwargs),
                self._new_pool,
            )
            self._sentinel_exec = AsyncSentinelExecutor(
                self._sentinel,
                self.retry_policy,
                self._table,
                read_from=read_from,
                wait_replicas=wait_replicas,
                wait_timeout_ms=wait_timeout_ms,
                wait_aof=wait_aof,
            )
        elif wait_replicas and startup_nodes:
            raise ConfigurationError(WAIT_ON_CLUSTER)

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_pool(cls, connection_pool: Any) -> AsyncSmartClient:
        """A client with the settings of a redis-py ``connection_pool`` (as
        ``redis.asyncio.Redis.from_pool``); smartcache opens its own connections."""
        return cls(connection_pool=connection_pool)

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> AsyncSmartClient:
        """Build from ``redis://...``, ``rediss://...`` (a server or a cluster) or
        ``redis+sentinel://[user:pass@]h1:26379,h2:26380/service[/db]``."""
        sentinel = sentinel_url_kwargs(url, kwargs)
        if sentinel is not None:
            return cls(**sentinel)
        values = ConnectionSettings.from_url(url).to_redis_kwargs()
        values.update(kwargs)
        return cls(**values)

    def _new_pool(self, settings: ConnectionSettings) -> AsyncConnectionPool:
        return AsyncConnectionPool(
            settings,
            self._max_connections,
            self._pool_timeout,
            max_in_flight=self._max_in_flight,
        )

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
        errors: list[str] = []
        tried: list[str] = []
        for host, port in self._startup:
            settings = self._settings.with_address(host, port)
            pool = self._new_pool(settings)
            tried.append(settings.address)
            try:
                if self._cluster_hint is None:
                    info = await pool.connection.execute("INFO", "cluster")
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    is_cluster = "cluster_enabled:1" in text
                else:
                    is_cluster = self._cluster_hint
            except _NET as exc:
                await pool.aclose()
                if not is_network_failure(exc):
                    raise  # credentials refused: every other node would refuse them too
                errors.append(f"{settings.address}: {exc}")
                continue
            if is_cluster:
                await pool.aclose()
                if self._wait[0]:
                    raise ConfigurationError(WAIT_ON_CLUSTER)
                state = AsyncClusterState(settings, self._startup, pool_factory=self._new_pool)
                await state.refresh(force=True)
                self._cluster = state
                self._router = AsyncClusterRouter(state, self.retry_policy, self.read_from)
                self._start_refresher(state)
            else:
                self._pool = pool
                if self.single_connection_client:
                    self.connection = pool.connection
            return
        raise NoReachableNodeError(
            f"none of the startup nodes answered: {'; '.join(errors)}", addresses=tried
        )

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

    async def parse_response(self, connection: Any, command_name: Any, **options: Any) -> Any:
        """Read one reply from ``connection`` (any connection with redis-py's awaitable
        ``read_response``) and apply ``command_name``'s response callback, as
        ``redis.asyncio.Redis.parse_response`` (``EMPTY_RESPONSE``, ``NEVER_DECODE``)."""
        try:
            if _NEVER_DECODE in options:
                response = await connection.read_response(disable_decoding=True)
            else:
                response = await connection.read_response()
        except rx.ResponseError:
            if _EMPTY_RESPONSE in options:
                return options[_EMPTY_RESPONSE]
            raise
        return self._parsed(command_name, response, options)

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
        """A ``redis.asyncio.lock.Lock`` on this client."""
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

    async def mget_nonatomic(self, keys: Any, *args: Any) -> list[Any]:
        """MGET split by slot, as ``RedisCluster.mget_nonatomic``: the values in the order
        of ``keys``, read by one MGET per slot (not atomic across slots; ``mget()`` refuses
        keys on several slots)."""
        await self.initialize()
        command = ("MGET", *list_or_args(keys, args))
        if self._router is None or len(command) == 1:
            return await self.mget(command[1:])
        reply = await self._router.execute(command, None, nonatomic=True)
        return self._nonatomic_reply(command, reply)  # type: ignore[no-any-return]

    async def mset_nonatomic(self, mapping: Mapping[Any, Any]) -> list[bool]:
        """MSET split by slot, as ``RedisCluster.mset_nonatomic``: one MSET per slot, and
        its result per slot (not atomic across slots; ``mset()`` refuses keys on several
        slots). On a single server the one MSET's result."""
        await self.initialize()
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
        await self.initialize()
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

    async def scan_iter(  # type: ignore[override]
        self,
        match: Any = None,
        count: int | None = None,
        _type: str | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        """Iterate over every key (on a cluster: of every primary)."""
        await self.initialize()
        targets: list[Any] = [None]
        if self._router is not None:
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
                    reply = await self._single_node_retry(args, exc)
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

    async def _execute_slow(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        if not self._initialized:
            await self.initialize()
        command_name = args[0]
        args = normalize_command(args)
        empty = options.pop(_EMPTY_RESPONSE, _MISSING)
        undecoded = _NEVER_DECODE in options and self._settings.decode_responses
        options.pop(_NEVER_DECODE, None)
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
        """A write followed by WAIT on the same (dedicated) connection, through the command
        flow; too few acknowledgements raise ``DurabilityError`` (``check_wait``)."""
        wanted, timeout_ms = self._wait
        wait = wait_command(wanted, timeout_ms, aof=self._wait_aof)
        reply, acked = await self._single_node_retry(args, None, then=wait)
        check_wait(args, acked, wanted, timeout_ms, aof=self._wait_aof)
        return reply

    async def _execute_undecoded(self, args: tuple[Any, ...], target_nodes: Any) -> Any:
        """A command whose reply must stay bytes (redis-py's NEVER_DECODE, e.g. DUMP), on a
        dedicated connection: the shared one must never meet a reply it cannot decode."""
        if self._router is not None:
            return await self._router.execute(args, target_nodes, undecoded=True)
        pool = await self._one_node_pool()
        assert pool is not None
        async with pool.dedicated() as conn:
            return await conn.execute_undecoded(*args)

    async def _single_node_retry(
        self,
        args: tuple[Any, ...],
        first: BaseException | None,
        then: tuple[Any, ...] | None = None,
    ) -> Any:
        """A command on the one server, through the same flow the cluster uses; ``then``:
        ``WAIT`` behind each attempt, the reply then being ``(reply, WAIT's reply)``."""
        pool = self._pool
        assert pool is not None
        spec = self._table.lookup(args)
        blocking = spec is not None and spec.blocking and spec.is_blocking(args)
        start = None if first is None else failed_attempt(first, pool.settings.address)
        flow = keyed_flow(
            args,
            spec,
            0,
            policy=self.retry_policy,
            read_from="primary",
            clock=time.monotonic,
            first=start,
            reroutable=False,  # one fixed server: a retry reaches the same node
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
                        continue
                    result = await _attempt_on(
                        pool,
                        args,
                        (blocking or not self.autopipeline) and not self.single_connection_client,
                        blocking=blocking,
                    )
                elif isinstance(effect, IsSuspect):
                    result = False
                elif isinstance(effect, Sleep):
                    await asyncio.sleep(effect.seconds)
        except StopIteration as done:
            return done.value


async def _attempt_on(
    pool: AsyncConnectionPool, args: tuple[Any, ...], dedicated: bool, *, blocking: bool = False
) -> Outcome:
    """One attempt on a single server: the pool's (``dedicated``: auto-pipelining off, or
    a blocking command), except a blocking command of a ``single_connection_client``,
    which waits on the one shared connection with no read timeout."""
    if dedicated or not blocking:
        return await pool.attempt(args, blocking=blocking, dedicated=dedicated)
    address = pool.settings.address
    try:
        shared = await pool.shared()
        before = shared.timeout
        shared.settimeout(None)  # commands queued before keep their timeout
        pending = shared.execute(*args)
        shared.settimeout(before)  # flushes it with none; later commands get theirs
        reply = await pending
    except (rx.ResponseError, *_NET) as exc:
        return failed_attempt(exc, address)
    return Outcome(reply=reply)


class _Missing:
    pass


_MISSING = _Missing()
