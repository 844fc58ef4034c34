"""What code written for redis-py reads from a client besides the command methods.

redis-py's ``Redis``, ``RedisCluster`` and their ``redis.asyncio`` twins carry attributes and
helpers that application code, and redis-py's own Lock, Script and Monitor, use:
``connection`` (the one connection of ``single_connection_client=True``),
``parse_response()``, ``load_external_module()``, ``from_pool()``, RedisCluster's
``cluster_*`` management commands, ``determine_slot()``, ``startup_nodes``... Those that
need no I/O of their own live here, once, for SmartClient and AsyncSmartClient alike; the
clients add the few that do I/O. The public names of redis-py that neither client has are
listed, each with its reason, in ``tests/integration/test_redis_py_surface.py``.

Never opens a socket: everything here goes through the client's ``execute_command``.
"""

from __future__ import annotations

import dataclasses
import inspect
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis.exceptions as rx
from redis.cluster import ClusterNode, RedisCluster
from redis.commands import AsyncCoreCommands, CoreCommands
from redis.commands.cluster import AsyncClusterManagementCommands, ClusterManagementCommands

from smartcache.core.commands import CommandTable, normalize_command
from smartcache.core.routing import Split, ToNodes, route
from smartcache.core.slots import key_slot
from smartcache.wire import ConnectionSettings

__all__ = [
    "NEVER_DECODE",
    "SETTINGS_FIELDS",
    "AsyncClusterManagement",
    "ClusterManagement",
    "RedisSurface",
    "take_over_pool",
]

EMPTY_RESPONSE = "EMPTY_RESPONSE"
NEVER_DECODE = "NEVER_DECODE"
#: what a redis-py pool's ``connection_kwargs`` may hand over: a connection's settings
SETTINGS_FIELDS = frozenset(
    {f.name for f in dataclasses.fields(ConnectionSettings)} | {"path", "connection_class"}
)


def take_over_pool(
    connection_pool: Any, kwargs: dict[str, Any], fields: frozenset[str]
) -> tuple[dict[str, Any], int | None]:
    """The settings of a redis-py ``ConnectionPool`` as constructor keyword arguments
    (explicit ``kwargs`` win), and its ``max_connections`` (``None`` for unbounded).

    A redis-py pool's kwargs also carry its own internals (``orig_host_address``,
    ``himport_registry``...): only the names in ``fields`` (what describes a connection)
    are taken. The pool itself is never used: smartcache opens its own connections.
    """
    taken = {
        k: v
        for k, v in dict(getattr(connection_pool, "connection_kwargs", {})).items()
        if k in fields
    }
    limit = getattr(connection_pool, "max_connections", None)
    if limit is not None and limit >= 2**31:  # redis-py's "unbounded"
        limit = None
    return {**taken, **kwargs}, limit


class RedisSurface:
    """Attributes and helpers of redis-py's clients that need no I/O of their own."""

    _settings: Any
    _encoder: Any
    _table: CommandTable
    _cluster: Any
    _startup: list[tuple[str, int]]
    read_from: str
    response_callbacks: dict[str, Any]
    execute_command: Callable[..., Any]

    #: As redis-py's: the client owns its connections and closes them with itself.
    auto_close_connection_pool = True
    #: As redis-py's: ``single_connection_client=True`` sends every command over one
    #: connection (a standalone server; ignored by a cluster, as by ``RedisCluster``).
    single_connection_client = False

    def load_external_module(self, funcname: str, func: Any) -> None:
        """Attach ``func`` as attribute ``funcname`` (as ``redis.Redis.load_external_module``,
        used to add a module's command namespace: ``r.foo().dothing()``)."""
        setattr(self, funcname, func)

    # -- RedisCluster's attributes -----------------------------------------------------------
    @property
    def encoder(self) -> Any:
        """The argument encoder (``RedisCluster.encoder``; also ``get_encoder()``)."""
        return self._encoder

    @property
    def connection_kwargs(self) -> dict[str, Any]:
        """Connection settings as redis-py keyword arguments (``RedisCluster``'s attribute;
        secrets included, never logged by smartcache)."""
        return dict(self._settings.to_redis_kwargs())

    @property
    def startup_nodes(self) -> list[ClusterNode]:
        """The nodes the client was given (``RedisCluster.startup_nodes``)."""
        return [ClusterNode(host, port) for host, port in self._startup]  # type: ignore[no-untyped-call]

    def determine_slot(self, *args: Any) -> int:
        """The hash slot ``args`` (a command) goes to, as ``RedisCluster.determine_slot``.

        Raises ``RedisClusterException`` (a :class:`~smartcache.exceptions.CrossSlotError`)
        when its keys span slots, or when it has no key and no single slot serves it.
        """
        args = normalize_command(args)
        slot_of = self._cluster.slot_of if self._cluster is not None else key_slot
        router = getattr(self, "_router", None)
        table = router.table if router is not None else self._table
        where = route(table, args, slot_of, lambda: random.randrange(16384))
        if isinstance(where, Split):
            name = str(args[0]).upper()
            raise rx.RedisClusterException(f"{name} - all keys must map to the same key slot")
        if isinstance(where, ToNodes):
            raise rx.RedisClusterException(
                "No way to dispatch this command to Redis Cluster. Missing key.\n"
                "You can execute the command by specifying target nodes.\n"
                f"Command: {args[0]}"
            )
        return where.slot

    # -- parse_response --------------------------------------------------------------------
    def _parsed(self, command_name: Any, response: Any, options: dict[str, Any]) -> Any:
        """The response callback of ``command_name`` applied as redis-py's
        ``parse_response`` applies it (the options it consumes removed first)."""
        options.pop(EMPTY_RESPONSE, None)
        options.pop(NEVER_DECODE, None)
        options.pop("keys", None)
        callback = self.response_callbacks.get(command_name)
        return callback(response, **options) if callback is not None else response


def _then(result: Any, parse: Callable[..., Any]) -> Any:
    """``parse(result)``, now or, for a coroutine (the async client), once it is awaited."""
    if inspect.isawaitable(result):

        async def later() -> Any:
            return parse(await result)

        return later()
    return parse(result)


def _cluster_methods(source: type) -> dict[str, Any]:
    """redis-py's own ``cluster_*`` methods of ``source``: thin ``execute_command`` calls
    with ``target_nodes=``, which both clients route."""
    return {name: getattr(source, name) for name in dir(source) if name.startswith("cluster_")}


def _with_cluster_callback(command: str, method: str) -> Callable[..., Any]:
    # RedisCluster applies these three parsers (its CLUSTER_COMMANDS_RESPONSE_CALLBACKS) to
    # what its cluster_* methods return, node by node when several answer; redis.Redis has
    # none for them, so a plain execute_command("CLUSTER SLOTS") stays redis.Redis's raw reply.
    parse: Callable[..., Any] = RedisCluster.CLUSTER_COMMANDS_RESPONSE_CALLBACKS[command]
    # Some releases' CLUSTER MYSHARDID parser decodes the reply itself (8.1: resp.decode()),
    # others accept both: read it undecoded, so every parser gets the bytes it can take.
    options: dict[str, Any] = {NEVER_DECODE: []} if command == "CLUSTER MYSHARDID" else {}

    def each(reply: Any) -> Any:
        if isinstance(reply, dict):  # nodes named by target_nodes=: {'host:port': reply}
            return {node: parse(value) for node, value in reply.items()}
        return parse(reply)

    def call(self: Any, target_nodes: Any = None) -> Any:
        return _then(self.execute_command(command, target_nodes=target_nodes, **options), each)

    call.__name__ = method
    call.__doc__ = f"``{command}``, parsed as ``RedisCluster.{method}`` returns it."
    return call


_PARSED = {
    "cluster_slots": "CLUSTER SLOTS",
    "cluster_shards": "CLUSTER SHARDS",
    "cluster_myshardid": "CLUSTER MYSHARDID",
}


def _management_class(name: str, source: type) -> type:
    methods = _cluster_methods(source)
    methods.update({m: _with_cluster_callback(c, m) for m, c in _PARSED.items()})
    methods["__doc__"] = (
        "redis-py ``RedisCluster``'s ``cluster_*`` management commands (``cluster_info``, "
        "``cluster_nodes``, ``cluster_countkeysinslot``...), routed by the client."
    )
    methods["__module__"] = __name__
    return type(name, (), methods)


if TYPE_CHECKING:  # the cluster_* methods' own signatures, as redis-py types them

    class ClusterManagement(ClusterManagementCommands):
        """Typing view. Only the ``cluster_*`` methods exist at run time; the commands
        RedisCluster overrides for cluster mode stay redis.Redis's (``CoreCommands``)."""

        slaveof = CoreCommands.slaveof  # type: ignore[assignment]
        replicaof = CoreCommands.replicaof  # type: ignore[assignment]
        swapdb = CoreCommands.swapdb  # type: ignore[assignment]
        readonly = CoreCommands.readonly  # type: ignore[assignment]
        readwrite = CoreCommands.readwrite  # type: ignore[assignment]
        client_tracking_on = CoreCommands.client_tracking_on
        client_tracking_off = CoreCommands.client_tracking_off
        hotkeys_start = CoreCommands.hotkeys_start
        hotkeys_stop = CoreCommands.hotkeys_stop
        hotkeys_reset = CoreCommands.hotkeys_reset
        hotkeys_get = CoreCommands.hotkeys_get  # type: ignore[assignment]

    class AsyncClusterManagement(AsyncClusterManagementCommands):
        """Typing view, as :class:`ClusterManagement`."""

        client_tracking_on = AsyncCoreCommands.client_tracking_on
        client_tracking_off = AsyncCoreCommands.client_tracking_off
        hotkeys_start = AsyncCoreCommands.hotkeys_start  # type: ignore[assignment]
        hotkeys_stop = AsyncCoreCommands.hotkeys_stop  # type: ignore[assignment]
        hotkeys_reset = AsyncCoreCommands.hotkeys_reset  # type: ignore[assignment]
        hotkeys_get = AsyncCoreCommands.hotkeys_get  # type: ignore[assignment]

else:
    #: ``cluster_*`` methods for SmartClient (redis-py's ``ClusterManagementCommands``),
    #: and only those: its other overrides (SLAVEOF, SWAPDB...) would refuse commands a
    #: standalone server takes.
    ClusterManagement = _management_class("ClusterManagement", ClusterManagementCommands)
    #: ``cluster_*`` methods for AsyncSmartClient (``AsyncClusterManagementCommands``)
    AsyncClusterManagement = _management_class(
        "AsyncClusterManagement", AsyncClusterManagementCommands
    )
