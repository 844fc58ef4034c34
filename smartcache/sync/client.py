"""SmartClient: redis-py's command API over our own lean execution path, routed by itself.

The command methods (``get``, ``hset``, ``xadd``, ...) come from redis-py's mixins, so their
signatures and return types are redis-py's; every one ends in :meth:`execute_command`,
which is ours. On a standalone server that is one pool, one pack, one write, one parse. On
a cluster it computes the slot, picks the node from the slot map, and follows the core's
decisions on redirects and failures (:mod:`smartcache.core.retry`).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Sequence
from time import perf_counter as _clock
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

import redis.exceptions as rx
from redis.commands import CoreCommands, RedisModuleCommands, SentinelCommands

from smartcache._client_common import BLOCKING as _BLOCKING
from smartcache._cluster_compat import ClusterNodesMixin
from smartcache._near import NearRuntime
from smartcache._near import bypassed as _bypassed
from smartcache._redis_surface import (
    ClusterManagement,
)
from smartcache._scripts import PipelineAwareScript
from smartcache.core.commands import (
    CommandTable,
)
from smartcache.core.flow import (
    failed_attempt,
)
from smartcache.core.retry import (
    RetryPolicy,
)
from smartcache.core.slotmap import parse_address
from smartcache.exceptions import (
    ClusterUnavailableError,
)
from smartcache.sync._client_base import ClientBase
from smartcache.sync._cluster import ClusterRouter, ClusterState
from smartcache.sync._connection import Connection
from smartcache.sync._monitor import Monitor
from smartcache.sync._near_io import ThreadWorld
from smartcache.sync._pipeline import Pipeline
from smartcache.sync._pool import ConnectionPool, SingleConnectionPool
from smartcache.sync._pubsub import PubSub
from smartcache.sync._sentinel import SentinelState
from smartcache.sync._sentinel_exec import SentinelExecutor
from smartcache.wire import ConnectionSettings

__all__ = ["SmartClient"]

_NET = (rx.ConnectionError, rx.TimeoutError, OSError)
#: attributes that exist once the topology is detected
_DETECTED = frozenset({"_cluster", "_router", "_pool"})


class SmartClient(
    ClientBase,
    ClusterNodesMixin,
    ClusterManagement,
    RedisModuleCommands,
    CoreCommands,
    SentinelCommands,
):
    """A drop-in ``redis.Redis`` that also speaks Redis Cluster, routing by itself.

    Construct it as you would ``redis.Redis`` (``host=``, ``port=``, ``db=``, ``password=``,
    ``decode_responses=``, ``protocol=``, ``ssl=``...), with ``SmartClient.from_url(...)``,
    with ``startup_nodes=[(host, port), ...]`` for a cluster, or with a redis-py
    ``connection_pool=`` whose settings it takes over. Making the client connects to
    nothing, as with redis-py: whether the server is a cluster is detected from the first
    node that answers (``INFO cluster``) when the client is first used, so an unreachable
    server or refused credentials raise then (``redis.exceptions.ConnectionError``,
    ``AuthenticationError``). ``single_connection_client=True`` sends every command over
    one connection, opened at construction (on a standalone server, as redis-py;
    :attr:`connection` is that connection).

    ``wait_replicas=N`` (with ``wait_timeout_ms=``) follows every write with ``WAIT`` and
    raises :class:`~smartcache.exceptions.DurabilityError` when fewer replicas acknowledged;
    ``wait_aof=True`` uses ``WAITAOF 0 N`` instead (replicas fsynced their AOF; needs
    Redis >= 7.2 or Valkey >= 8 with ``appendonly yes`` on the replicas).

    ``retry``: a :class:`~smartcache.core.retry.RetryPolicy` (bounded attempts and deadline,
    backoff with jitter); ``retry_non_idempotent=True`` re-sends commands such as INCR after
    a connection loss that leaves their outcome unknown (default: raise
    :class:`~smartcache.exceptions.AmbiguousCommandError`).
    """

    def __init__(
        self,
        host: str = "localhost",
        port: int = 6379,
        *,
        startup_nodes: Sequence[tuple[str, int]] | None = None,
        connection_pool: Any = None,
        cluster: bool | None = None,
        retry_policy: RetryPolicy | None = None,
        retry_non_idempotent: bool = False,
        max_connections: int | None = None,
        pool_timeout: float | None = None,
        read_from: str = "primary",
        read_from_replicas: bool = False,
        refresh_interval: float | None = 30.0,
        sentinels: Sequence[tuple[str, int]] | None = None,
        service_name: str | None = None,
        sentinel_kwargs: dict[str, Any] | None = None,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        wait_aof: bool = False,
        **kwargs: Any,
    ) -> None:
        self._take_arguments(locals())
        config = self._near_config
        self._near = (
            None
            if config is None
            else NearRuntime(
                config, ThreadWorld(), self._encoder.encode, self._near_owner, self._near_live
            )
        )
        self._refresher: _PeriodicRefresh | None = None
        #: held while a command uses the one connection (redis-py's attribute of this name)
        self.single_connection_lock = threading.RLock()
        self._sentinel: SentinelState | None = None
        self._sentinel_exec: SentinelExecutor | None = None
        self._closed = False
        self._detect_lock = threading.Lock()
        if sentinels is not None:
            self._cluster, self._router, self._pool = None, None, None
            self._start_sentinel(sentinels, service_name, sentinel_kwargs)
            return
        if self.single_connection_client:
            # as redis-py, which opens the one connection here
            self._detect_topology(self._cluster_hint)
        # Otherwise the topology is detected on first use, as redis-py connects on the
        # first command: a client made before its server is up (or with wrong credentials)
        # raises then, not here (``__getattr__`` below).

    #: set by :meth:`_detect_topology`, on first use (see ``__getattr__``)
    _cluster: ClusterState | None
    _router: ClusterRouter | None
    _pool: ConnectionPool | None

    if not TYPE_CHECKING:  # at run time only: type checkers keep flagging unknown names

        def __getattr__(self, name: str) -> Any:
            # Reached only for attributes not set yet: the topology's, before first use.
            if name in _DETECTED and "_cluster_hint" in self.__dict__:
                with self._detect_lock:
                    if name not in self.__dict__:
                        self._detect_topology(self._cluster_hint)
                return self.__dict__[name]
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @property
    def _detected(self) -> bool:
        """Whether the topology is known (no I/O: for close() and repr())."""
        return "_pool" in self.__dict__

    def _new_pool(self, settings: ConnectionSettings) -> ConnectionPool:
        pool = ConnectionPool(
            settings, max_connections=self._max_connections, timeout=self._pool_timeout
        )
        return self._adopt_pool(pool)

    def _start_sentinel(
        self,
        sentinels: Sequence[tuple[str, int]],
        service_name: str | None,
        sentinel_kwargs: dict[str, Any] | None,
    ) -> None:
        state, executor = self._sentinel_parts(sentinels, service_name, sentinel_kwargs)
        try:
            state.discover()
            state.start_watcher()
        except BaseException:
            state.close()
            raise
        self._sentinel, self._sentinel_exec = state, executor

    def _standalone_pool(self, pool: ConnectionPool) -> ConnectionPool:
        """The pool a standalone client keeps (``single_connection_client``: one
        connection, used under :attr:`single_connection_lock`)."""
        if not self.single_connection_client:
            return pool
        pool.close()
        return self._single_pool(pool.settings)

    def _start_refresher(self, state: ClusterState) -> None:
        if self._refresh_interval is not None:
            self._refresher = _PeriodicRefresh(state, self._refresh_interval)

    # -- redis-py surface -------------------------------------------------------------
    @property
    def connection_pool(self) -> ConnectionPool:
        """The pool of the standalone server (on a cluster: of the first primary)."""
        if self._pool is not None:
            return self._pool
        if self._sentinel is not None:
            return self._sentinel.primary_pool()
        assert self._cluster is not None and self._cluster.slot_map is not None
        return self._cluster.pool(self._cluster.slot_map.primaries[0])

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        """A pipeline (``transaction=True``: MULTI/EXEC, keys on one slot on a cluster)."""
        return Pipeline(self, transaction, shard_hint)

    def pubsub(self, **kwargs: Any) -> PubSub:
        """A PubSub object (as ``redis.Redis.pubsub``); SSUBSCRIBE is routed by slot."""
        return PubSub(self, **kwargs)

    def register_script(self, script: Any) -> PipelineAwareScript:
        """A callable Lua script (as redis-py's), which smartcache pipelines preload."""
        return PipelineAwareScript(self, script)  # type: ignore[arg-type]  # drop-in client

    def transaction(self, func: Any, *watches: Any, **kwargs: Any) -> Any:
        """Run ``func(pipe)`` under WATCH ``watches`` until EXEC succeeds (as redis-py)."""
        shard_hint = kwargs.pop("shard_hint", None)
        value_from_callable = kwargs.pop("value_from_callable", False)
        watch_delay = kwargs.pop("watch_delay", None)
        with self.pipeline(True, shard_hint) as pipe:
            while True:
                try:
                    if watches:
                        pipe.watch(*watches)
                    func_value = func(pipe)
                    exec_value = pipe.execute()
                    return func_value if value_from_callable else exec_value
                except rx.WatchError:
                    if watch_delay is not None and watch_delay > 0:
                        time.sleep(watch_delay)
                    continue

    def client(self) -> SmartClient:
        """A client sharing nothing mutable with this one but its settings (as redis-py)."""
        return self

    def __repr__(self) -> str:
        if not self._detected:
            return f"<SmartClient (not connected yet) {self._settings!r}>"
        kind = "cluster" if self._cluster else "standalone"
        return f"<SmartClient {kind} {self._settings!r}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close every connection (on a server or cluster the client stays usable; a
        Sentinel client stops following the sentinels)."""
        self._closed = True
        if self._near is not None:
            self._near.close()
        if self._refresher is not None:
            self._refresher.stop()
        self._drop_connections()
        if self._sentinel is not None:
            self._sentinel.close()

    def disconnect_connection_pools(self) -> None:
        """Close every pooled connection, as ``RedisCluster.disconnect_connection_pools``;
        the client stays usable and reconnects on the next command."""
        self._drop_connections()

    def _drop_connections(self) -> None:
        if not self._detected:
            return  # never used: nothing to close
        if self._pool is not None:
            # As redis-py: the connections go; the client reconnects if used again.
            old, self._pool = self._pool, self._pool_like(self._pool)
            old.close()
        if self._cluster is not None:
            self._cluster.close()
            if self._cluster.slot_map is not None:
                self._cluster.install(self._cluster.slot_map, ())

    def _single_pool(self, settings: ConnectionSettings) -> SingleConnectionPool:
        return SingleConnectionPool(settings, self.single_connection_lock)

    def _pool_like(self, pool: ConnectionPool) -> ConnectionPool:
        """A fresh, empty pool of the same kind as ``pool``."""
        if isinstance(pool, SingleConnectionPool):
            return self._single_pool(pool.settings)
        return self._new_pool(pool.settings)

    @property
    def connection(self) -> Connection | None:
        """The one connection of ``single_connection_client=True`` on a standalone server
        (as ``redis.Redis.connection``); ``None`` otherwise."""
        pool = self._pool
        return pool.connection if isinstance(pool, SingleConnectionPool) else None

    def monitor(self, target_node: Any = None) -> Monitor:
        """A ``redis.client.Monitor`` on a connection of its own (as ``redis.Redis.monitor``;
        on a cluster, as ``RedisCluster.monitor``: ``target_node``, else any primary)."""
        address = None if target_node is None else str(getattr(target_node, "name", target_node))
        return Monitor(lambda: self._new_dedicated_connection(address), self._encoder)

    # -- execution ----------------------------------------------------------------------
    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Send one command, routed by its keys, and return its parsed reply."""
        telemetry = self._telemetry  # metrics/traces: None when off (one check, no frame)
        if telemetry is not None:
            started = _clock()
            handle = telemetry.begin(args)
        failed: BaseException | None = None
        try:
            near = self._near
            if near is not None and args[0] in near.commands and not _bypassed():
                return self._near_read(args, options)
            if options:
                options.pop("keys", None)  # redis-py's client-side-cache hint
                if options:
                    return self._execute_slow(args, options)
            name = args[0]
            pool = self._pool
            if pool is not None:
                if (
                    type(name) is str
                    and " " not in name
                    and name not in _BLOCKING
                    and not self._wait[0]
                ):
                    reply = self._standalone_round_trip(pool, args)
                    callback = self.response_callbacks.get(name)
                    return callback(reply) if callback is not None else reply
                return self._execute_slow(args, options)
            router = self._router
            if router is None:  # Sentinel
                return self._execute_slow(args, options)
            fast = router.single_key.get(name)
            if fast is None or len(args) <= fast[0]:
                return self._execute_slow(args, options)
            # Cluster fast path: one key at a known position, no option, no pending refresh;
            # the node is the general path's choice (primary, or a replica for reads).
            state = self._cluster
            assert state is not None
            slot = state.slot_of(args[fast[0]])
            pool = state.pool_for(slot, fast[1])
            if pool is None or state.refresh_pending or state.suspects:
                reply = router.keyed(args, router.table.lookup(args), slot)
            else:
                conn = pool.get()
                try:
                    reply = conn.execute(*args)
                except (rx.ResponseError, *_NET) as exc:
                    pool.release(conn)
                    first = failed_attempt(exc, pool.settings.address)
                    reply = router.keyed(args, router.table.lookup(args), slot, first=first)
                except BaseException:
                    pool.release(conn)  # bad arguments (DataError), interrupts
                    raise
                else:
                    pool.release(conn)
            callback = self.response_callbacks.get(name)
            return callback(reply) if callback is not None else reply
        except BaseException as exc:
            failed = exc
            raise
        finally:
            if telemetry is not None:
                seconds = _clock() - started
                telemetry.finish(handle, args[0], self._peer_of(args), seconds, failed)

    def _standalone_round_trip(self, pool: ConnectionPool, args: tuple[Any, ...]) -> Any:
        """One command on the one server; a failure goes to the retry flow every path uses
        (:func:`~smartcache.core.flow.keyed_flow`: MASTERDOWN waits; READONLY, WRONGTYPE...
        raise at once; a lost connection is retried only where that is safe)."""
        conn = pool.get()
        try:
            reply = conn.execute(*args)
        except (rx.ResponseError, *_NET) as exc:
            pool.release(conn)
            first = failed_attempt(exc, pool.settings.address)
            return self._single_node_retry(args, first)
        except BaseException:
            pool.release(conn)  # bad arguments (DataError), interrupts
            raise
        pool.release(conn)
        return reply

    def _ensure_ready(self) -> None:
        """Nothing to do: the topology is detected on the first access to it (see
        ``__getattr__``)."""

    def _one_node_pool(self) -> ConnectionPool | None:
        """The pool of the one node a non-cluster client talks to (None on a cluster)."""
        return self._single_node_pool()

    def _single_node_pool(self) -> ConnectionPool | None:
        """The pool of the one node a non-cluster client talks to (None on a cluster)."""
        if self._pool is not None:
            return self._pool
        if self._sentinel is not None:
            return self._sentinel.primary_pool()
        return None

    @property
    def _command_table(self) -> CommandTable:
        """The command table in use (the server's own on a cluster)."""
        if self._router is None:
            return self._table
        self._router.ensure_table()
        return self._router.table

    def _try_refresh(self) -> None:
        """Refresh the slot map now (a no-op on a standalone server)."""
        if self._router is not None:
            self._router.try_refresh()

    # -- dedicated connections (pub/sub, blocking commands) -------------------------------
    def _address_for_slot(self, slot: int) -> str:
        """Address of the primary serving ``slot`` (the standalone server's address)."""
        single = self._single_node_pool()
        if single is not None:
            return single.settings.address
        state = self._cluster
        assert state is not None and state.slot_map is not None
        address = state.slot_map.primary_for_slot(slot)
        if address is None:
            raise ClusterUnavailableError(f"slot {slot} is not served by any node", slot=slot)
        return address

    def _any_address(self) -> str:
        """Address of some node that can serve keyless commands."""
        single = self._single_node_pool()
        if single is not None:
            return single.settings.address
        assert self._router is not None
        return random.choice(self._router.primaries())

    def _new_dedicated_connection(self, address: str | None = None) -> Connection:
        """A new, unpooled connection to ``address`` (default: any node); caller closes it."""
        address = address or self._any_address()
        host, port = parse_address(address)
        return Connection(self._settings.with_address(host, port))


class _PeriodicRefresh:
    """Asks for a refresh when the slot map is older than ``interval`` seconds (a daemon
    thread waking every ``interval / 2``; the rule is
    :func:`~smartcache.core.refresh.periodic_refresh_due`).

    It only sets a flag that the next command sees, so the refresh itself runs on a caller's
    thread under the usual collapse and rate limit. Stopped by ``close()``.
    """

    def __init__(self, state: ClusterState, interval: float) -> None:
        self._state = state
        self._interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name="smartcache-cluster-refresh", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval / 2):
            self._state.mark_refresh_if_due(self._interval)

    def stop(self) -> None:
        """Stop the thread (idempotent)."""
        self._stop.set()
