"""SmartClient: redis-py's command API over our own lean execution path, routed by itself.

The command methods (``get``, ``hset``, ``xadd``, ...) come from redis-py's mixins, so their
signatures and return types are redis-py's; every one ends in :meth:`execute_command`,
which is ours. On a standalone server that is one pool, one pack, one write, one parse. On
a cluster it computes the slot, picks the node from the slot map, and follows the core's
decisions on redirects and failures (:mod:`smartcache.core.retry`).
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Literal, Self

import redis.exceptions as rx
from redis._parsers.encoders import Encoder
from redis._parsers.response_callbacks import get_response_callbacks
from redis.client import CaseInsensitiveDict
from redis.commands import CoreCommands, RedisModuleCommands, SentinelCommands
from redis.lock import Lock

from smartcache._cluster_state import ClusterState
from smartcache._pipeline import Pipeline
from smartcache.core.commands import (
    CommandSpec,
    CommandTable,
    RequestPolicy,
    ResponsePolicy,
    merge_replies,
    normalize_command,
    split_multi_key,
)
from smartcache.core.retry import Action, RetryPolicy, decide
from smartcache.core.slotmap import parse_address
from smartcache.core.slots import key_slot
from smartcache.exceptions import (
    AmbiguousCommandError,
    ClusterUnavailableError,
    ConfigurationError,
    CrossSlotError,
    NoReachableNodeError,
)
from smartcache.wire import Connection, ConnectionPool, ConnectionSettings
from smartcache.wire.settings import POOL_KWARGS

__all__ = ["SmartClient"]

_NEVER_DECODE = "NEVER_DECODE"
_EMPTY_RESPONSE = "EMPTY_RESPONSE"
_TARGETS = {"primaries", "replicas", "all", "random"}
_ERROR = rx.RedisError


class SmartClient(RedisModuleCommands, CoreCommands, SentinelCommands):
    """A drop-in ``redis.Redis`` that also speaks Redis Cluster, routing by itself.

    Construct it as you would ``redis.Redis`` (``host=``, ``port=``, ``db=``, ``password=``,
    ``decode_responses=``, ``protocol=``, ``ssl=``...), with ``SmartClient.from_url(...)``,
    with ``startup_nodes=[(host, port), ...]`` for a cluster, or with a redis-py
    ``connection_pool=`` whose settings it takes over. Whether the server is a cluster is
    detected from the first node that answers (``INFO cluster``).

    ``retry``: a :class:`~smartcache.core.retry.RetryPolicy` (bounded attempts and deadline,
    backoff with jitter); ``retry_non_idempotent=True`` re-sends commands such as INCR after
    a connection loss that leaves their outcome unknown (default: raise
    :class:`~smartcache.exceptions.AmbiguousCommandError`).
    """

    # Selects the synchronous overloads of redis-py's typed command mixins.
    _is_async_client: Literal[False] = False

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
        **kwargs: Any,
    ) -> None:
        if connection_pool is not None:
            kwargs = {**dict(getattr(connection_pool, "connection_kwargs", {})), **kwargs}
            if max_connections is None:
                max_connections = getattr(connection_pool, "max_connections", None)
                if max_connections is not None and max_connections >= 2**31:
                    max_connections = None
            host = kwargs.pop("host", host)
            port = kwargs.pop("port", port)
        for name in POOL_KWARGS:
            kwargs.pop(name, None)
        self._settings = ConnectionSettings.from_redis_kwargs(host=host, port=port, **kwargs)
        self._max_connections = max_connections
        self._pool_timeout = pool_timeout
        policy = retry_policy or RetryPolicy()
        if retry_non_idempotent and not policy.retry_non_idempotent:
            policy = RetryPolicy(
                stop=policy.stop,
                wait=policy.wait,
                max_redirects=policy.max_redirects,
                retry_non_idempotent=True,
            )
        self.retry_policy = policy
        self.response_callbacks: dict[str, Any] = CaseInsensitiveDict(
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
        self._table_loaded = False
        # command name (as the caller spelled it) -> position of its only key
        self._single_key: dict[str, int] = {}
        nodes = list(startup_nodes) if startup_nodes else [(host, int(port))]
        if not nodes:
            raise ConfigurationError("startup_nodes is empty: give at least one (host, port)")
        self._startup = [(str(h), int(p)) for h, p in nodes]
        self._cluster: ClusterState | None = None
        self._pool: ConnectionPool | None = None
        self._closed = False
        self._detect(cluster)

    # -- construction -----------------------------------------------------------------
    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> SmartClient:
        """Build from ``redis://[[user]:pass@]host[:port][/db]`` or ``rediss://...``."""
        settings = ConnectionSettings.from_url(url)
        values = settings.to_redis_kwargs()
        values.update(kwargs)
        return cls(**values)

    def _new_pool(self, settings: ConnectionSettings) -> ConnectionPool:
        return ConnectionPool(
            settings, max_connections=self._max_connections, timeout=self._pool_timeout
        )

    def _detect(self, cluster: bool | None) -> None:
        errors: list[str] = []
        tried: list[str] = []
        for host, port in self._startup:
            settings = self._settings.with_address(host, port)
            pool = self._new_pool(settings)
            tried.append(f"{host}:{port}")
            try:
                if cluster is None:
                    conn = pool.get()
                    try:
                        info = conn.execute("INFO", "cluster")
                    finally:
                        pool.release(conn)
                    text = info.decode() if isinstance(info, bytes) else str(info)
                    is_cluster = "cluster_enabled:1" in text
                else:
                    is_cluster = cluster
            except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
                errors.append(f"{host}:{port}: {exc}")
                pool.close()
                continue
            if is_cluster:
                pool.close()
                self._cluster = ClusterState(settings, self._startup, pool_factory=self._new_pool)
                self._cluster.refresh(force=True)
            else:
                self._pool = pool
            return
        raise NoReachableNodeError(
            f"none of the startup nodes answered: {'; '.join(errors)}", addresses=tried
        )

    # -- redis-py surface -------------------------------------------------------------
    @property
    def is_cluster(self) -> bool:
        """True when talking to a Redis Cluster."""
        return self._cluster is not None

    def get_encoder(self) -> Encoder:
        """The encoder used for arguments (as ``redis.Redis.get_encoder``)."""
        return self._encoder

    def get_connection_kwargs(self) -> dict[str, Any]:
        """Connection settings as redis-py keyword arguments (no secrets are logged)."""
        return self._settings.to_redis_kwargs()

    @property
    def connection_pool(self) -> ConnectionPool:
        """The pool of the standalone server (on a cluster: of the first primary)."""
        if self._pool is not None:
            return self._pool
        assert self._cluster is not None and self._cluster.slot_map is not None
        return self._cluster.pool(self._cluster.slot_map.primaries[0])

    def set_response_callback(self, command: str, callback: Any) -> None:
        """Set a custom response callback (as ``redis.Redis``)."""
        self.response_callbacks[command] = callback

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Pipeline:
        """A pipeline (``transaction=True``: MULTI/EXEC, keys on one slot on a cluster)."""
        return Pipeline(self, transaction, shard_hint)

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

    def lock(  # noqa: PLR0917 - redis.Redis.lock's signature
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
        """A ``redis.lock.Lock`` on this client (as ``redis.Redis.lock``)."""
        if lock_class is None:
            lock_class = Lock
        return lock_class(
            self,
            name,
            timeout=timeout,
            sleep=sleep,
            blocking=blocking,
            blocking_timeout=blocking_timeout,
            thread_local=thread_local,
            raise_on_release_error=raise_on_release_error,
        )

    def client(self) -> SmartClient:
        """A client sharing nothing mutable with this one but its settings (as redis-py)."""
        return self

    def __repr__(self) -> str:
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
        """Close every connection."""
        self._closed = True
        if self._pool is not None:
            self._pool.close()
        if self._cluster is not None:
            self._cluster.close()

    # -- execution ----------------------------------------------------------------------
    def execute_command(self, *args: Any, **options: Any) -> Any:
        """Send one command, routed by its keys, and return its parsed reply."""
        if options:
            options.pop("keys", None)  # redis-py's client-side-cache hint
            if options:
                return self._execute_slow(args, options)
        name = args[0]
        pool = self._pool
        if pool is not None:
            if type(name) is str and " " not in name:
                reply = self._standalone_round_trip(pool, args)
                callback = self.response_callbacks.get(name)
                return callback(reply) if callback is not None else reply
            return self._execute_slow(args, options)
        index = self._single_key.get(name)
        if index is None or len(args) <= index:
            return self._execute_slow(args, options)
        # Cluster fast path: one key at a known position, no option, no pending refresh.
        state = self._cluster
        assert state is not None
        slot = key_slot(args[index])
        pool = state.slot_pools[slot]
        if pool is None or state.refresh_pending:
            reply = self._keyed(args, self._table.lookup(args), slot)
        else:
            conn = pool.get()
            connected = conn.is_connected
            try:
                reply = conn.execute(*args)
            except rx.ResponseError as exc:
                pool.release(conn)
                reply = self._keyed(
                    args,
                    self._table.lookup(args),
                    slot,
                    first_error=exc,
                    first_sent=True,
                    first_pool=pool,
                )
            except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
                pool.release(conn)
                reply = self._keyed(
                    args,
                    self._table.lookup(args),
                    slot,
                    first_error=exc,
                    first_sent=connected,
                    first_pool=pool,
                )
            else:
                pool.release(conn)
        callback = self.response_callbacks.get(name)
        return callback(reply) if callback is not None else reply

    def _standalone_round_trip(self, pool: ConnectionPool, args: tuple[Any, ...]) -> Any:
        conn = pool.get()
        connected = conn.is_connected
        try:
            reply = conn.execute(*args)
        except rx.ResponseError:
            pool.release(conn)
            raise
        except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
            pool.release(conn)
            # A fresh connection failed while connecting: nothing was sent.
            return self._retry_standalone(pool, args, exc, sent=connected)
        pool.release(conn)
        return reply

    def _retry_standalone(
        self, pool: ConnectionPool, args: tuple[Any, ...], first: BaseException, *, sent: bool
    ) -> Any:
        start = time.monotonic()
        error: BaseException = first
        attempt = 1
        idempotent = self._table.is_idempotent(args)
        while True:
            decision = decide(
                self.retry_policy,
                error,
                attempt=attempt,
                redirects=0,
                elapsed=time.monotonic() - start,
                idempotent=idempotent,
                sent=sent,
            )
            if decision.action is not Action.RETRY:
                self._raise(error, decision.ambiguous, args, attempt)
            time.sleep(decision.delay)
            attempt += 1
            conn = pool.get()
            sent = conn.is_connected
            try:
                return conn.execute(*args)
            except rx.ResponseError:
                raise
            except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
                error = exc
            finally:
                pool.release(conn)

    def _raise(
        self, error: BaseException, ambiguous: bool, args: Sequence[Any], attempts: int
    ) -> Any:
        name = _name(args)
        if ambiguous:
            raise AmbiguousCommandError(
                f"{name}: the connection was lost after the command was sent, so it may or "
                "may not have run; it was not re-sent because it is not idempotent (pass "
                "retry_non_idempotent=True to re-send such commands)",
                command=name,
                node=getattr(error, "node", None),
                attempts=attempts,
            ) from error
        if isinstance(error, rx.ClusterDownError | rx.TryAgainError):
            raise ClusterUnavailableError(
                f"{name}: the cluster kept refusing the command after {attempts} attempt(s): "
                f"{error}",
                command=name,
                attempts=attempts,
            ) from error
        raise error

    def _execute_slow(self, args: tuple[Any, ...], options: dict[str, Any]) -> Any:
        command_name = args[0]
        args = normalize_command(args)
        empty = options.pop(_EMPTY_RESPONSE, _MISSING)
        options.pop(_NEVER_DECODE, None)
        options.pop("keys", None)
        target_nodes = options.pop("target_nodes", None)
        try:
            if self._pool is not None:
                reply = self._standalone_round_trip(self._pool, args)
            else:
                reply = self._cluster_execute(args, target_nodes)
        except rx.ResponseError:
            if empty is not _MISSING:
                return empty
            raise
        callback = self.response_callbacks.get(command_name)
        return callback(reply, **options) if callback is not None else reply

    # -- cluster ------------------------------------------------------------------------
    def _ensure_table(self) -> None:
        if self._table_loaded or self._cluster is None:
            return
        self._table_loaded = True
        state = self._cluster
        assert state.slot_map is not None
        pool = state.pool(state.slot_map.primaries[0])
        conn = pool.get()
        try:
            self._table = CommandTable.from_command_reply(conn.execute("COMMAND"))
        except (rx.RedisError, ValueError):
            self._table = CommandTable.fallback()
        finally:
            pool.release(conn)

    def _cluster_execute(self, args: tuple[Any, ...], target_nodes: Any) -> Any:
        self._ensure_table()
        spec = self._table.lookup(args)
        if target_nodes is not None:
            return self._fan_out(args, spec, self._resolve_targets(target_nodes))
        keys = spec.keys(args) if spec is not None else ()
        if (
            spec is not None
            and spec.single_key_index
            and spec.request_policy is RequestPolicy.KEYED
            and type(args[0]) is str
        ):
            self._single_key[args[0]] = spec.single_key_index
        if not keys:
            policy = spec.request_policy if spec is not None else RequestPolicy.DEFAULT_KEYLESS
            if policy is RequestPolicy.ALL_SHARDS:
                return self._fan_out(args, spec, self._primaries())
            if policy is RequestPolicy.ALL_NODES:
                return self._fan_out(args, spec, self._all_nodes())
            return self._keyed(args, spec, random.randrange(16384))
        slot = key_slot(keys[0])
        if len(keys) > 1:
            slots = {key_slot(k) for k in keys}
            if len(slots) > 1:
                if spec is not None and spec.request_policy is RequestPolicy.MULTI_SHARD:
                    return self._multi_shard(args, spec)
                name = _name(args)
                raise CrossSlotError(
                    f"{name}: its keys hash to {len(slots)} different slots, and {name} "
                    "cannot be split without losing atomicity; use a hash tag such as "
                    "'{user:1}:a' and '{user:1}:b' to keep keys on one slot",
                    command=name,
                    slots=sorted(slots),
                )
        return self._keyed(args, spec, slot)

    def _keyed(
        self,
        args: tuple[Any, ...],
        spec: CommandSpec | None,
        slot: int,
        *,
        first_error: BaseException | None = None,
        first_sent: bool = False,
        first_pool: ConnectionPool | None = None,
    ) -> Any:
        """Run a command on the node serving ``slot``, following the core's decisions.

        ``first_error`` lets the fast path hand over a failure it already met.
        """
        state = self._cluster
        assert state is not None
        start = time.monotonic()
        attempt = redirects = 0
        asking_target: str | None = None
        error, sent, pool = first_error, first_sent, first_pool
        while True:
            if error is None:
                if state.refresh_pending:
                    self._try_refresh()
                outcome = self._attempt(state, args, slot, asking_target)
                if outcome[0] is None:
                    return outcome[1]
                error, sent, pool = outcome
            asking_target = None
            if isinstance(error, rx.AskError):
                redirects += 1
            else:
                attempt += 1
            idempotent = spec.is_idempotent(args) if spec is not None else False
            decision = decide(
                self.retry_policy,
                error,
                attempt=attempt,
                redirects=redirects,
                elapsed=time.monotonic() - start,
                idempotent=idempotent,
                sent=sent,
            )
            if decision.action is Action.RAISE:
                self._raise(error, decision.ambiguous, args, attempt)
            target = decision.target
            if target is not None and target.startswith(":") and pool is not None:
                target = parse_address(pool.settings.address)[0] + target
            if decision.action is Action.MOVED:
                assert target is not None and decision.slot is not None
                state.apply_moved(decision.slot, target)
            elif decision.action is Action.ASK:
                asking_target = target
            else:
                if decision.refresh:
                    state.refresh_pending = True
                time.sleep(decision.delay)
            error = None

    def _attempt(
        self, state: ClusterState, args: tuple[Any, ...], slot: int, asking: str | None
    ) -> tuple[Any, Any, Any]:
        """One try: ``(None, reply, None)`` on success, else ``(error, sent, pool)``."""
        if asking is not None:
            pool = state.pool(asking)
        else:
            maybe = state.slot_pools[slot]
            if maybe is None:
                down = rx.ClusterDownError(f"CLUSTERDOWN Hash slot {slot} is not served")
                return down, False, None
            pool = maybe
        conn = None
        sent = False
        try:
            conn = pool.get()
            if asking is not None:
                sent = True
                reply = conn.execute_many([("ASKING",), args])[1]
            else:
                conn.send_command(*args)
                sent = True
                reply = conn.read_raw()
        except (rx.ConnectionError, rx.TimeoutError, OSError) as exc:
            return exc, sent and (conn is not None), pool
        finally:
            if conn is not None:
                pool.release(conn)
        if isinstance(reply, _ERROR):
            return reply, True, pool
        return None, reply, None

    def _try_refresh(self) -> None:
        state = self._cluster
        assert state is not None
        # On failure keep the old map; the command's own budget decides when to give up.
        with contextlib.suppress(NoReachableNodeError):
            state.refresh()

    def _primaries(self) -> list[str]:
        state = self._cluster
        assert state is not None and state.slot_map is not None
        return list(state.slot_map.primaries)

    def _all_nodes(self) -> list[str]:
        state = self._cluster
        assert state is not None and state.slot_map is not None
        return list(state.slot_map.nodes)

    def _resolve_targets(self, target: Any) -> list[str]:
        if isinstance(target, str):
            lowered = target.lower()
            if lowered not in _TARGETS:
                raise ConfigurationError(
                    f"target_nodes={target!r}: use one of {sorted(_TARGETS)} or node objects"
                )
            if lowered == "primaries":
                return self._primaries()
            if lowered == "all":
                return self._all_nodes()
            if lowered == "replicas":
                primaries = set(self._primaries())
                return [n for n in self._all_nodes() if n not in primaries]
            return [random.choice(self._primaries())]
        items = target if isinstance(target, list | tuple) else [target]
        out = []
        for item in items:
            name = getattr(item, "name", item)
            out.append(str(name))
        return out

    def _fan_out(
        self, args: tuple[Any, ...], spec: CommandSpec | None, addresses: Iterable[str]
    ) -> Any:
        state = self._cluster
        assert state is not None
        addresses = list(addresses)
        taken = []
        try:
            for address in addresses:
                pool = state.pool(address)
                conn = pool.get()
                taken.append((pool, conn))
                conn.send_command(*args)
            replies = [conn.read_raw() for _, conn in taken]
        finally:
            for pool, conn in taken:
                pool.release(conn)
        if len(replies) == 1:
            if isinstance(replies[0], BaseException):
                raise replies[0]
            return replies[0]
        policy = spec.response_policy if spec is not None else ResponsePolicy.DEFAULT
        return _merge_special(_name(args), policy, replies)

    def _multi_shard(self, args: tuple[Any, ...], spec: CommandSpec) -> Any:
        plan = split_multi_key(args, spec, key_slot)
        results = self._run_parts([(slot, part) for slot, part, _ in plan.parts])
        return plan.merge(results)

    def _run_parts(self, parts: Sequence[tuple[int, tuple[Any, ...]]]) -> list[Any]:
        """Send every part to its node (all writes first), then read; retry failed parts."""
        state = self._cluster
        assert state is not None
        results: list[Any] = [None] * len(parts)
        by_pool: dict[int, tuple[ConnectionPool, list[int]]] = {}
        failed: list[int] = []
        for i, (slot, _) in enumerate(parts):
            pool = state.slot_pools[slot]
            if pool is None:
                failed.append(i)
                continue
            by_pool.setdefault(id(pool), (pool, []))[1].append(i)
        sent: list[tuple[ConnectionPool, Any, list[int]]] = []
        for pool, indices in by_pool.values():
            conn = None
            try:
                conn = pool.get()
                conn.send_many([parts[i][1] for i in indices])
                sent.append((pool, conn, indices))
            except (rx.ConnectionError, rx.TimeoutError, OSError):
                if conn is not None:
                    pool.release(conn)
                failed.extend(indices)
        for pool, conn, indices in sent:
            try:
                for i in indices:
                    reply = conn.read_raw()
                    if isinstance(reply, _ERROR):
                        failed.append(i)
                    else:
                        results[i] = reply
            except (rx.ConnectionError, rx.TimeoutError, OSError):
                failed.extend(i for i in indices if results[i] is None and i not in failed)
            finally:
                pool.release(conn)
        for i in failed:
            slot, part = parts[i]
            results[i] = self._keyed(part, self._table.lookup(part), slot)
        return results

    # -- dedicated connections (pub/sub, blocking commands) -------------------------------
    def _address_for_slot(self, slot: int) -> str:
        """Address of the primary serving ``slot`` (the standalone server's address)."""
        if self._cluster is None:
            assert self._pool is not None
            return self._pool.settings.address
        state = self._cluster
        assert state.slot_map is not None
        address = state.slot_map.primary_for_slot(slot)
        if address is None:
            raise ClusterUnavailableError(f"slot {slot} is not served by any node", slot=slot)
        return address

    def _any_address(self) -> str:
        """Address of some node that can serve keyless commands."""
        if self._cluster is None:
            assert self._pool is not None
            return self._pool.settings.address
        return random.choice(self._primaries())

    def _new_dedicated_connection(self, address: str | None = None) -> Connection:
        """A new, unpooled connection to ``address`` (default: any node); caller closes it."""
        address = address or self._any_address()
        host, port = parse_address(address)
        return Connection(self._settings.with_address(host, port))

    # -- RedisCluster compatibility -----------------------------------------------------
    def keyslot(self, key: Any) -> int:
        """The hash slot of ``key`` (as ``RedisCluster.keyslot``)."""
        return key_slot(self._encoder.encode(key))  # type: ignore[no-untyped-call]

    def mget_nonatomic(self, keys: Any, *args: Any) -> list[Any]:
        """MGET across slots (as ``RedisCluster.mget_nonatomic``)."""
        return self.mget(keys, *args)

    def mset_nonatomic(self, mapping: dict[Any, Any]) -> bool:
        """MSET across slots (as ``RedisCluster.mset_nonatomic``)."""
        return bool(self.mset(mapping))

    def scan_iter(
        self, match: Any = None, count: int | None = None, _type: str | None = None, **kwargs: Any
    ) -> Iterator[Any]:
        """Iterate over every key (on a cluster: of every primary), as redis-py does."""
        if self._cluster is None:
            yield from super().scan_iter(match=match, count=count, _type=_type, **kwargs)
            return
        for address in self._primaries():
            cursor = 0
            first = True
            while first or cursor != 0:
                first = False
                cursor, data = self.scan(
                    cursor=cursor,
                    match=match,
                    count=count,
                    _type=_type,
                    target_nodes=[address],
                    **kwargs,
                )
                yield from data


class _Missing:
    pass


_MISSING = _Missing()


def _name(args: Sequence[Any]) -> str:
    first = args[0]
    text = first.decode(errors="replace") if isinstance(first, bytes) else str(first)
    return text.upper()


def _merge_special(name: str, policy: ResponsePolicy, replies: list[Any]) -> Any:
    merged = merge_replies(policy, replies, name)
    if policy is ResponsePolicy.SPECIAL:
        for reply in replies:
            if isinstance(reply, BaseException):
                raise reply
        return replies[0]
    return merged
