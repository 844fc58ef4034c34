"""What SmartClient and AsyncSmartClient share before any I/O: options, settings, callbacks.

Constructor arguments are validated here once (``read_from``, ``startup_nodes``, Sentinel
and durability options), redis-py keyword arguments become one immutable
:class:`~smartcache.wire.ConnectionSettings`, and redis-py's response callbacks and encoder
are set up as ``redis.Redis`` does, so both clients return the same shapes.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from redis._parsers.encoders import Encoder
from redis._parsers.response_callbacks import get_response_callbacks
from redis.client import CaseInsensitiveDict

from smartcache._metrics import Fanout, Recorder, time_acquisitions
from smartcache._near import NearRuntime, near_config_from, with_mget
from smartcache._otel import Telemetry, telemetry_from
from smartcache._prom import register as prometheus_register
from smartcache._redis_surface import (
    EMPTY_RESPONSE,
    NEVER_DECODE,
    SETTINGS_FIELDS,
    take_over_pool,
)
from smartcache._tracing import Tracing, tracer_from
from smartcache.core.commands import CommandTable
from smartcache.core.nearcache import cacheable_commands
from smartcache.core.node_choice import READ_FROM
from smartcache.core.retry import RetryPolicy
from smartcache.core.sentinel import parse_sentinel_url
from smartcache.core.slots import key_slot
from smartcache.core.stats import ClientStats, Counters, PoolUsage
from smartcache.exceptions import ConfigurationError
from smartcache.wire import ConnectionSettings
from smartcache.wire.settings import POOL_KWARGS

__all__ = ["BLOCKING", "READ_FROM", "ClientCommon", "sentinel_url_kwargs"]

# Commands that may block; on a single node they run without a read timeout.
#: ``execute_command`` options that send a read past the near cache (raw replies, a
#: fallback value, an explicit node)
NEAR_UNSUITED = frozenset({EMPTY_RESPONSE, NEVER_DECODE, "target_nodes"})

BLOCKING = frozenset(
    {
        "BLPOP",
        "BRPOP",
        "BLMOVE",
        "BRPOPLPUSH",
        "BLMPOP",
        "BZPOPMIN",
        "BZPOPMAX",
        "BZMPOP",
        "XREAD",
        "XREADGROUP",
        "WAIT",
        "WAITAOF",
    }
)


def sentinel_url_kwargs(url: str, kwargs: dict[str, Any]) -> dict[str, Any] | None:
    """Constructor arguments for a ``redis+sentinel://`` URL (None for another scheme)."""
    if not url.lower().startswith(("redis+sentinel://", "rediss+sentinel://")):
        return None
    parsed = parse_sentinel_url(url)
    return {
        "sentinels": list(parsed.sentinels),
        "service_name": parsed.service_name,
        "sentinel_kwargs": {**parsed.sentinel_kwargs(), **kwargs.pop("sentinel_kwargs", {})},
        **parsed.connection_kwargs(),
        **kwargs,
    }


#: a pool type (sync or asyncio)
_P = TypeVar("_P", bound=Any)


class ClientCommon:
    """Options, settings, callbacks and encoder of one client (sync or async)."""

    _settings: ConnectionSettings
    _encoder: Encoder
    _table: CommandTable
    _cluster: Any
    retry_policy: RetryPolicy
    read_from: str
    response_callbacks: dict[str, Any]

    def _take_arguments(self, arguments: dict[str, Any]) -> None:
        """Check and keep a client constructor's arguments (its ``locals()``, taken first
        thing in ``__init__``): the options both clients share are handled here once; the
        client keeps reading its own (``autopipeline=``...) from its parameters."""
        a = {k: v for k, v in arguments.items() if k not in {"self", "__class__"}}
        kwargs = dict(a.pop("kwargs"))
        host, port, max_connections = a["host"], a["port"], a["max_connections"]
        #: the arguments again, for ``client()`` (never shown: they may hold secrets)
        self._given = {k: v for k, v in a.items() if k != "connection_pool"} | kwargs
        #: the near cache's settings (``near_cache=``, or redis-py's ``cache_config=`` /
        #: ``cache=``); the client builds its runtime from it
        self._near_config = near_config_from(
            kwargs.pop("near_cache", None),
            kwargs.pop("cache", None),
            kwargs.pop("cache_config", None),
        )
        #: OpenTelemetry's meter provider (``meter_provider=``; None: metrics off)
        self._meter_provider = telemetry_from(kwargs.pop("meter_provider", None))
        #: OpenTelemetry's tracer provider (``tracer_provider=``; None: no spans)
        self._tracer_provider = tracer_from(kwargs.pop("tracer_provider", None))
        statements = kwargs.pop("trace_statements", False)
        if statements not in (True, False):
            raise ConfigurationError(
                f"trace_statements must be True or False, got {statements!r} (True records "
                "db.query.text with every argument as '?')"
            )
        self._trace_statements = bool(statements)
        #: prometheus-client registry (``prometheus_registry=``; None: not exported)
        self._prometheus_registry = kwargs.pop("prometheus_registry", None)
        value = kwargs.pop("single_connection_client", False)
        if value not in (True, False, None, 0, 1):
            raise ConfigurationError(f"single_connection_client must be a bool, got {value!r}")
        #: every command over one connection (redis-py's option of this name)
        self.single_connection_client = bool(value)
        if a["connection_pool"] is not None:
            kwargs, pool_limit = take_over_pool(a["connection_pool"], kwargs, SETTINGS_FIELDS)
            if max_connections is None:
                max_connections = pool_limit
            host = kwargs.pop("host", host)
            port = kwargs.pop("port", port)
            self._given.update(kwargs, host=host, port=port, max_connections=max_connections)
        if a.get("read_from_replicas"):
            kwargs["read_from_replicas"] = True
        startup_nodes = a["startup_nodes"]
        self._init_common(
            host,
            port,
            kwargs,
            startup_nodes=startup_nodes,
            retry_policy=a["retry_policy"],
            retry_non_idempotent=a["retry_non_idempotent"],
            read_from=a["read_from"],
            wait_replicas=a["wait_replicas"],
            wait_timeout_ms=a["wait_timeout_ms"],
            sentinels=a["sentinels"],
            service_name=a["service_name"],
            sentinel_kwargs=a["sentinel_kwargs"],
            refresh_interval=a["refresh_interval"],
        )
        self._max_connections: int | None = max_connections
        self._pool_timeout: float | None = a["pool_timeout"]
        self._wait = (int(a["wait_replicas"]), int(a["wait_timeout_ms"]))
        self._wait_aof = bool(a["wait_aof"])
        nodes = list(startup_nodes) if startup_nodes else [(host, int(port))]
        self._startup = [(str(h), int(p)) for h, p in nodes]
        self._cluster_hint: bool | None = a["cluster"]

    def _init_common(
        self,
        host: str,
        port: int,
        kwargs: dict[str, Any],
        *,
        startup_nodes: Sequence[tuple[str, int]] | None,
        retry_policy: RetryPolicy | None,
        retry_non_idempotent: bool,
        read_from: str,
        wait_replicas: int,
        wait_timeout_ms: int,
        sentinels: Sequence[tuple[str, int]] | None,
        service_name: str | None,
        sentinel_kwargs: dict[str, Any] | None,
        refresh_interval: float | None = 30.0,
    ) -> None:
        if kwargs.pop("read_from_replicas", False) and read_from == "primary":
            read_from = "replica_preferred"  # redis-py RedisCluster's spelling
        if read_from not in READ_FROM:
            raise ConfigurationError(
                f"read_from={read_from!r}: use one of {', '.join(sorted(READ_FROM))}"
            )
        if refresh_interval is not None and refresh_interval <= 0:
            raise ConfigurationError(
                f"refresh_interval={refresh_interval!r}: give seconds > 0, or None for no "
                "periodic refresh"
            )
        #: a cluster's slot map is refreshed when older than this (seconds; None: never)
        self._refresh_interval = refresh_interval
        if startup_nodes is not None and not list(startup_nodes):
            raise ConfigurationError("startup_nodes is empty: give at least one (host, port)")
        if wait_replicas < 0 or wait_timeout_ms < 0:
            raise ConfigurationError("wait_replicas and wait_timeout_ms must be >= 0")
        if sentinels is not None:
            if not service_name:
                raise ConfigurationError(
                    "Sentinel needs service_name= (the name in `sentinel monitor <name> ...`)"
                )
            if not list(sentinels):
                raise ConfigurationError("sentinels is empty: give at least one (host, port)")
        elif service_name is not None or sentinel_kwargs is not None:
            raise ConfigurationError(
                "service_name=/sentinel_kwargs= need sentinels=[(host, port), ...]"
            )
        for name in POOL_KWARGS:
            kwargs.pop(name, None)
        self._settings = ConnectionSettings.from_redis_kwargs(host=host, port=port, **kwargs)
        policy = retry_policy or RetryPolicy()
        if retry_non_idempotent and not policy.retry_non_idempotent:
            policy = dataclasses.replace(policy, retry_non_idempotent=True)
        self.retry_policy = policy
        self.read_from = read_from
        #: reads may go to replicas (``RedisCluster.read_from_replicas``)
        self.read_from_replicas = read_from != "primary"
        self.response_callbacks = CaseInsensitiveDict(
            get_response_callbacks(  # type: ignore[arg-type]
                user_protocol=self._settings.protocol,
                legacy_responses=self._settings.legacy_responses,
            )
        )
        self._encoder = Encoder(  # type: ignore[no-untyped-call]
            self._settings.encoding,
            self._settings.encoding_errors,
            self._settings.decode_responses,
        )
        self._table = CommandTable.fallback()
        self._counters = Counters(threading.Lock())
        self._pools_made: weakref.WeakSet[Any] = weakref.WeakSet()
        #: ``server.address`` / ``server.port`` of the metrics and spans: as configured (the
        #: first startup node of a cluster, the first sentinel of a Sentinel service)
        first = (startup_nodes or sentinels or [(host, port)])[0]
        self._server_id: tuple[str, int] = (str(first[0]), int(first[1]))
        recorders: list[Recorder] = []
        if self._meter_provider is not None:
            recorders.append(
                Telemetry(
                    self._meter_provider,
                    self,
                    server_address=self._server_id[0],
                    server_port=self._server_id[1],
                    namespace=str(self._settings.db),
                )
            )
        if self._tracer_provider is not None:
            tracing = Tracing(
                self._tracer_provider,
                server_address=self._server_id[0],
                server_port=self._server_id[1],
                namespace=str(self._settings.db),
                statements=self._trace_statements,
            )
            self._counters.listener = tracing.decided
            recorders.append(tracing)
        if self._prometheus_registry not in (None, False):
            recorders.append(prometheus_register(self, self._prometheus_registry))
        #: where timed operations go (None: metrics off, nothing timed)
        self._telemetry: Recorder | None = (
            None if not recorders else recorders[0] if len(recorders) == 1 else Fanout(recorders)
        )

    def _adopt_pool(self, pool: _P) -> _P:
        """Every pool the client makes passes here: its timeouts are counted, and its
        usage is read by the metrics."""
        pool.counters = self._counters
        telemetry = self._telemetry
        if telemetry is not None:
            pool.on_connected = telemetry.connected
            time_acquisitions(pool, telemetry.waited)
        self._pools_made.add(pool)
        return pool

    def pool_usage(self) -> list[PoolUsage]:
        """Each open pool of this client now: address, idle, used, pending, max."""
        out = []
        for pool in list(self._pools_made):
            if not pool.closed:
                idle, used, pending = pool.usage()
                pipelining = getattr(pool, "pipelining", None)
                writes, commands = (0, 0) if pipelining is None else pipelining()
                out.append(
                    PoolUsage(
                        pool.address, idle, used, pending, pool.max_connections, writes, commands
                    )
                )
        return out

    def _peer_of(self, args: tuple[Any, ...]) -> str | None:
        """The node that serves ``args`` now (metrics and spans, after the command): the
        server; Sentinel's primary; on a cluster the primary of the command's one key's
        slot. ``None`` when that is not known for sure: reads that may go to replicas, a
        command with no single key. After an ASK redirect this names the slot's owner,
        not the node that answered."""
        cluster = self._cluster
        if cluster is None and self._sentinel is None:  # one server: the common case first
            pool = self.__dict__.get("_pool")
            return None if pool is None else pool.address
        if self.read_from != "primary":
            return None
        if cluster is not None:
            router = self._router
            fast = None if router is None else router.single_key.get(args[0])
            if fast is None or len(args) <= fast[0]:
                return None
            pool = cluster.slot_pools[cluster.slot_of(args[fast[0]])]
        else:
            pool = self._sentinel.current_pool
        return None if pool is None else pool.address

    def _register_cache(self, name: str, stats: Any, kind: str = "cache") -> None:
        """A cache user on this client (``@cached``, ``Cache``; ``kind="write_behind"``: a
        write-behind flusher) reports its statistics (``stats.snapshot()``) in
        :meth:`stats` and the metrics under ``name``."""
        self._counters.add_cache(name, stats, kind)

    def stats(self) -> ClientStats:
        """What this client did for you so far: redirects followed, retries by reason,
        ambiguous failures, slot-map refreshes by cause, nodes added and removed, Sentinel
        failovers followed and the time writes were held for them, and the near cache's
        statistics (:class:`~smartcache.core.stats.ClientStats`, a copy). Counting costs
        nothing while nothing goes wrong: only those events are counted."""
        near = self._near
        return self._counters.snapshot(near.stats() if near is not None else None)

    # -- near cache -----------------------------------------------------------------------
    _near: NearRuntime | None
    _sentinel: Any
    _pool: Any
    _router: Any

    @property
    def near_cache(self) -> NearRuntime | None:
        """The near cache (``stats()``, ``clear()``, ``bypass()``), or ``None`` when the
        client was made without ``near_cache=``."""
        return self._near

    def get_cache(self) -> NearRuntime | None:
        """The near cache, or ``None`` (redis-py's name for its client-side cache)."""
        return self._near

    def _near_owner(self, slot: int) -> object:
        """What serves ``slot`` now (a pool): the slot's primary, the Sentinel primary, the
        server. A kept reply is served only while its owner is still this."""
        cluster = self._cluster
        if cluster is not None:
            return cluster.slot_pools[slot]
        sentinel = self._sentinel
        if sentinel is not None:
            return sentinel.current_pool
        return self._pool

    def _near_live(self) -> set[str] | None:
        """The addresses that serve reads now (``None``: not known yet)."""
        if "_pool" not in self.__dict__ and self._sentinel is None:
            return None  # topology not detected yet: nothing to judge by
        cluster = self._cluster
        if cluster is not None:
            slot_map = cluster.slot_map
            return None if slot_map is None else set(slot_map.primaries)
        sentinel = self._sentinel
        pool = sentinel.current_pool if sentinel is not None else self._pool
        return None if pool is None else {pool.settings.address}

    def _near_route(self, key: Any) -> tuple[int, Any]:
        """The slot (-1 off a cluster) and the pool a near-cache miss of ``key`` reads
        from, or ``None`` for the pool when the ordinary path must run it (no primary
        known yet, a suspect node). A refresh still pending (rate-limited) does not stop
        it: MOVED patched the map, and a node that does not serve the slot answers
        MOVED/ASK, which sends the read down the ordinary path."""
        cluster = self._cluster
        if cluster is None:
            return -1, self._near_owner(-1)
        slot = cluster.slot_of(key)
        if cluster.suspects:
            return slot, None
        return slot, cluster.slot_pools[slot]

    def _near_adopt(self, near: NearRuntime, reply: Any) -> None:
        """Settle which commands the near cache serves from the server's ``COMMAND INFO``
        reply for :data:`~smartcache.core.nearcache.CACHEABLE` (an error: the static table)."""
        names = sorted(near.config.wanted())
        readonly: dict[str, bool | None] = {}
        if isinstance(reply, list) and len(reply) == len(names):
            for name, info in zip(names, reply, strict=True):
                if not isinstance(info, list | tuple) or len(info) < 3:
                    readonly[name] = None
                    continue
                flags = {f.decode() if isinstance(f, bytes) else str(f) for f in info[2]}
                readonly[name] = "readonly" in flags
        else:
            for name in names:
                spec = self._table.get(name)
                readonly[name] = None if spec is None else spec.readonly
        near.commands = with_mget(cacheable_commands(readonly.get))
        near.keep_missing = self._cluster is None
        near.ready = True

    @staticmethod
    def _sentinel_settings(sentinel_kwargs: dict[str, Any] | None) -> ConnectionSettings:
        return ConnectionSettings.from_redis_kwargs(**(sentinel_kwargs or {}))

    # -- redis-py surface ----------------------------------------------------------------
    @property
    def is_cluster(self) -> bool:
        """True when talking to a Redis Cluster (known once the client has connected)."""
        return self._cluster is not None

    def get_encoder(self) -> Encoder:
        """The encoder used for arguments (as ``redis.Redis.get_encoder``)."""
        return self._encoder

    def get_connection_kwargs(self) -> dict[str, Any]:
        """Connection settings as redis-py keyword arguments (secrets included, never
        logged by smartcache)."""
        return self._settings.to_redis_kwargs()

    def set_response_callback(self, command: str, callback: Any) -> None:
        """Set a custom response callback (as ``redis.Redis``)."""
        self.response_callbacks[command] = callback

    def keyslot(self, key: Any) -> int:
        """The hash slot of ``key`` (as ``RedisCluster.keyslot``)."""
        return key_slot(self._encoder.encode(key))  # type: ignore[no-untyped-call]

    # -- RedisCluster's *_nonatomic: the split itself is the router's (nonatomic=True) ------
    @staticmethod
    def _mset_args(mapping: Mapping[Any, Any]) -> tuple[Any, ...]:
        return ("MSET", *(item for pair in mapping.items() for item in pair))

    def _nonatomic_reply(self, command: tuple[Any, ...], reply: Any) -> Any:
        """What ``RedisCluster.mget_nonatomic`` / ``mset_nonatomic`` return for ``reply``
        (the merged reply of the split command): MGET's values in the caller's order, or
        MSET's result once per slot, in the order the slots first appear."""
        callback = self.response_callbacks.get(command[0])
        value = callback(reply) if callback is not None else reply
        if command[0] != "MSET":
            return value
        slot_of = self._cluster.slot_of if self._cluster is not None else key_slot
        return [value] * len({slot_of(key) for key in command[1::2]})
