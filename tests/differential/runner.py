"""Runs every enumerated method through a reference and a candidate and compares them.

A ``Combo`` is one client pair in one variant: the topology (standalone or cluster), sync
(``redis.Redis`` / ``redis.cluster.RedisCluster`` against ``SmartClient``) or async (the
``redis.asyncio`` twins against ``AsyncSmartClient``, autopipelining on or off), the
protocol (RESP2/RESP3) and ``decode_responses``. For each method: reset the servers
(FLUSHALL, script and function caches, test user) and seed ``{df}:a`` and ``{df}:b`` with
data of the command's group, call the reference; reset and seed again, call the
candidate; compare typed values (exact types, exceptions by class and message), after the
normalisation ``recipes.NORMALISE`` allows. Never touches the server on port 6379.
"""

from __future__ import annotations

import asyncio
import collections.abc
import contextlib
import dataclasses
import gc
import inspect
import warnings
from collections.abc import Iterable, Iterator
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from smartcache import SmartClient
from smartcache.asyncio import AsyncSmartClient
from tests.differential import allowlist, recipes
from tests.differential.methods import CLUSTER, MODULE, SENTINEL, Method, command_methods

TOPOLOGIES = ("standalone", "cluster")
#: socket timeout of every client: a call that would block for ever fails instead
TIMEOUT = 5.0
#: module method -> a command of the module (its presence says the server has the module)
MODULE_PROBES = {
    "json": "json.get",
    "ft": "ft.search",
    "ts": "ts.add",
    "bf": "bf.add",
    "cf": "cf.add",
    "cms": "cms.query",
    "tdigest": "tdigest.add",
    "topk": "topk.add",
    "vset": "vadd",
}
#: methods that only compute locally (no command goes to the server)
LOCAL_ONLY = frozenset({"digest_local"})


@dataclasses.dataclass(frozen=True)
class Combo:
    topology: str
    client: str  # "sync" | "async"
    autopipeline: bool | None
    protocol: int
    decode: bool

    @property
    def id(self) -> str:
        pair = self.client
        if self.autopipeline is not None:
            pair += "-autopipeline" if self.autopipeline else "-noautopipeline"
        raw = "decode" if self.decode else "raw"
        return f"{self.topology}-{pair}-resp{self.protocol}-{raw}"

    def where(self, server: str) -> dict[str, Any]:
        return {
            "topology": self.topology,
            "client": self.client,
            "autopipeline": self.autopipeline,
            "protocol": self.protocol,
            "decode": self.decode,
            "server": server,
        }

    def kwargs(self) -> dict[str, Any]:
        return {
            "protocol": self.protocol,
            "decode_responses": self.decode,
            "socket_timeout": TIMEOUT,
        }


PAIRS = (("sync", None), ("async", True), ("async", False))
VARIANTS = ((3, True), (2, False), (3, False), (2, True))
FULL = tuple(Combo(t, c, ap, p, d) for t in TOPOLOGIES for c, ap in PAIRS for p, d in VARIANTS)
#: one variant per client pair, rotated so each variant runs on both topologies
DEFAULT = tuple(
    Combo(t, c, ap, *VARIANTS[i % len(VARIANTS)])
    for i, (t, (c, ap)) in enumerate((t, pair) for t in TOPOLOGIES for pair in PAIRS)
)


# -- results -----------------------------------------------------------------------------
SAME, DIVERGES, SKIPPED = "same", "diverges", "skipped"


@dataclasses.dataclass
class Result:
    combo: str
    method: str
    category: str
    status: str
    #: skip reason, or the call's source ("generated" / the override's reason)
    note: str
    reference: str = ""
    candidate: str = ""
    allowed_by: str | None = None
    #: an allow-list entry that covers this case although it no longer diverges
    stale: str | None = None
    #: the reference raised (the call exercised an error path)
    reference_raised: bool = False


# -- the servers -------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class Servers:
    """Direct raw connections to every primary of a topology: reset and seed, never the
    clients under test."""

    def __init__(self, url: str, primary_ports: list[int], owner_port: int) -> None:
        assert 6379 not in primary_ports, "never the shared server on 6379"
        self.url = url
        self.primaries = [redis.Redis(host="127.0.0.1", port=p, protocol=3) for p in primary_ports]
        self.owner = redis.Redis(host="127.0.0.1", port=owner_port, protocol=3)
        self.owner.set_response_callback("COMMAND", lambda r, **_: r)
        docs = self.owner.execute_command("COMMAND", "DOCS")  # type: ignore[no-untyped-call]
        self.docs: dict[str, Any] = _plain(docs)
        info = self.owner.info("server")
        self.flavor = "valkey" if "valkey_version" in info else "redis"
        self.version = str(info.get("valkey_version", info["redis_version"]))

    def reset(self, group: str, prepare: tuple[tuple[Any, ...], ...] = ()) -> None:
        for node in self.primaries:
            pipe = node.pipeline(transaction=False)
            pipe.flushall()
            pipe.slowlog_reset()
            pipe.script_flush()
            pipe.function_flush()
            pipe.execute_command("ACL", "DELUSER", recipes.USER)  # type: ignore[no-untyped-call]
            pipe.script_load(recipes.SCRIPT)
            pipe.function_load(recipes.FUNCTION_CODE, replace=True)
            for command in prepare:
                pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            pipe.execute()
        pipe = self.owner.pipeline(transaction=False)
        for command in recipes.seed_commands(group):
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        pipe.execute()

    def close(self) -> None:
        """Leave the shared servers as found: no keys, scripts, functions or test user."""
        for node in self.primaries:
            pipe = node.pipeline(transaction=False)
            pipe.flushall()
            pipe.script_flush()
            pipe.function_flush()
            pipe.execute_command("ACL", "DELUSER", recipes.USER)  # type: ignore[no-untyped-call]
            pipe.execute()
        for node in [*self.primaries, self.owner]:
            node.close()


# -- planning ----------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Plan:
    method: Method
    call: recipes.Call
    source: str
    group: str
    prepare: tuple[tuple[Any, ...], ...] = ()

    def reset(self, servers: Servers) -> None:
        servers.reset(self.group, self.prepare)


def plan(method: Method, servers: Servers, topology: str) -> Plan | str:
    """How to exercise ``method`` here, or why it is skipped."""
    name = method.name
    if name in recipes.EXCLUDED:
        return f"excluded: {recipes.EXCLUDED[name]}"
    if method.category == SENTINEL:
        return "sentinel: needs a Sentinel (the check runs on standalone and cluster)"
    if method.category == MODULE:
        probe = MODULE_PROBES.get(name, name)
        if probe not in servers.docs:
            return f"server lacks module {name} ({probe.upper()})"
        return f"module {name}: the server has it, its sub-API is not enumerated yet"
    if method.category == CLUSTER and topology == "standalone":
        return "reference lacks it: redis.Redis has no cluster-only method"
    command = recipes.resolve(name, servers.docs)
    if command is None and name not in LOCAL_ONLY:
        return f"server lacks {recipes.guess_command(name, servers.docs)}"
    call, source = recipes.call_for(method, command)
    group = command.group if command else recipes.STRING_LIKE
    group = recipes.SEED_AS.get(name, (group, ""))[0]
    prepare = recipes.PREPARE.get(name, ((), ""))[0]
    return Plan(method, call, source, group, prepare)


# -- comparison --------------------------------------------------------------------------
def typed(value: Any) -> Any:
    """``value`` with every element tagged by its exact type, so ``1 != 1.0 != True``."""
    kind = type(value)
    name = kind.__name__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__name__}"
    if isinstance(value, BaseException):
        return ("raise", name, str(value))
    if isinstance(value, list | tuple):
        return (name, tuple(typed(v) for v in value))
    if isinstance(value, dict):
        return (name, frozenset((typed(k), typed(v)) for k, v in value.items()))
    if isinstance(value, set | frozenset):
        return (name, frozenset(typed(v) for v in value))
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return (name, value)
    return (name, repr(value))


def shape(value: Any) -> Any:
    """Types and dict keys only; list lengths dropped (a set of element shapes)."""
    if isinstance(value, BaseException):
        return typed(value)
    kind = type(value).__name__
    if isinstance(value, dict):
        return (kind, frozenset((typed(k), shape(v)) for k, v in value.items()))
    if isinstance(value, list | tuple | set | frozenset):
        return (kind, frozenset(shape(v) for v in value))
    return kind


def normalised(method: str, value: Any) -> Any:
    how = recipes.NORMALISE.get(method, (None, ""))[0]
    if how == recipes.TYPE and not isinstance(value, BaseException):
        return type(value).__name__
    if how == recipes.SHAPE:
        return shape(value)
    if how == recipes.UNORDERED and isinstance(value, list):
        return ("list", tuple(sorted((typed(v) for v in value), key=repr)))
    return typed(value)


def show(value: Any) -> str:
    if isinstance(value, BaseException):
        return f"{type(value).__module__}.{type(value).__name__}({str(value)!r})"
    text = repr(value)
    return text if len(text) <= 300 else text[:300] + "..."


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a call returned or raised, and the warnings it issued (by category)."""

    value: Any
    warned: tuple[str, ...]

    def key(self, method: str) -> Any:
        return normalised(method, self.value), self.warned

    def show(self) -> str:
        text = show(self.value)
        return text + (f" warning {', '.join(self.warned)}" if self.warned else "")


@contextlib.contextmanager
def recording() -> Iterator[list[warnings.WarningMessage]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield caught


def _warned(caught: list[warnings.WarningMessage]) -> tuple[str, ...]:
    # ResourceWarning: a socket the garbage collector closed, not something the call said
    return tuple(
        sorted({w.category.__name__ for w in caught if not issubclass(w.category, ResourceWarning)})
    )


def judge(
    combo: Combo,
    plan_: Plan,
    ref: Outcome,
    got: Outcome,
    entries: Iterable[allowlist.Entry],
    server: str,
) -> Result:
    name = plan_.method.name
    differs = ref.key(name) != got.key(name)
    result = Result(combo.id, name, plan_.method.category, SAME, plan_.source)
    result.reference_raised = isinstance(ref.value, BaseException)
    where = combo.where(server)
    entry = next(
        (e for e in entries if e.covers(name, where) and e.probe(ref.value, got.value)), None
    )
    if differs:
        result.status = DIVERGES
        result.reference, result.candidate = ref.show(), got.show()
        if entry is not None:
            result.allowed_by = entry.reason
    elif entry is not None:
        result.stale = entry.reason
    return result


# -- running -----------------------------------------------------------------------------
def _collect(value: Any) -> Any:
    if isinstance(value, collections.abc.Iterator):
        return list(value)
    return value


def _sync_client(combo: Combo, url: str, candidate: bool) -> Any:
    kwargs = combo.kwargs()
    if candidate:
        return SmartClient.from_url(url, **kwargs)
    if combo.topology == "cluster":
        return redis.cluster.RedisCluster.from_url(url, **kwargs)
    return redis.Redis.from_url(url, **kwargs)


def run_sync(combo: Combo, servers: Servers, entries: list[allowlist.Entry]) -> list[Result]:
    ref, cand = _sync_client(combo, servers.url, False), _sync_client(combo, servers.url, True)
    try:
        return [
            _one_sync(combo, servers, entries, m, ref, cand) for m in command_methods().values()
        ]
    finally:
        ref.close()
        cand.close()


def _one_sync(
    combo: Combo,
    servers: Servers,
    entries: list[allowlist.Entry],
    method: Method,
    ref: Any,
    cand: Any,
) -> Result:
    planned = plan(method, servers, combo.topology)
    if isinstance(planned, str):
        return Result(combo.id, method.name, method.category, SKIPPED, planned)
    if not hasattr(ref, method.name):
        return _reference_lacks(combo, planned, ref)
    fresh = method.name in recipes.FRESH_CLIENT
    outcomes = []
    for client in (ref, cand):
        own = _sync_client(combo, servers.url, client is cand) if fresh else client
        planned.reset(servers)
        with recording() as caught:
            try:
                value = _collect(planned.call.invoke(own, method.name))
            except Exception as exc:  # a drop-in raises what redis-py raises
                value = exc
            finally:
                if fresh:
                    own.close()
        outcomes.append(Outcome(value, _warned(caught)))
    return judge(combo, planned, outcomes[0], outcomes[1], entries, servers.flavor)


def _reference_lacks(combo: Combo, planned: Plan, ref: Any) -> Result:
    return Result(
        combo.id,
        planned.method.name,
        planned.method.category,
        SKIPPED,
        f"reference lacks it: {type(ref).__module__}.{type(ref).__name__}",
    )


def _async_client(combo: Combo, url: str, candidate: bool) -> Any:
    kwargs = combo.kwargs()
    if candidate:
        return AsyncSmartClient.from_url(url, autopipeline=combo.autopipeline, **kwargs)
    if combo.topology == "cluster":
        return redis.asyncio.cluster.RedisCluster.from_url(url, **kwargs)
    return redis.asyncio.Redis.from_url(url, **kwargs)


async def _acollect(value: Any) -> Any:
    if inspect.isawaitable(value):
        value = await value
    if isinstance(value, collections.abc.AsyncIterator):
        return [v async for v in value]
    return _collect(value)


def run_async(combo: Combo, servers: Servers, entries: list[allowlist.Entry]) -> list[Result]:
    async def main() -> list[Result]:
        ref = _async_client(combo, servers.url, False)
        cand = _async_client(combo, servers.url, True)
        try:
            return [
                await _one_async(combo, servers, entries, m, ref, cand)
                for m in command_methods().values()
            ]
        finally:
            await ref.aclose()
            await cand.aclose()

    with warnings.catch_warnings():
        # redis.asyncio's RedisCluster (the reference, not the code under test) sometimes
        # drops a ClusterNode without closing it after a topology refresh; its sockets are
        # asyncio streams, which AsyncSmartClient does not use (it has its own protocol)
        for module in (r"redis\.asyncio\..*", r"asyncio\.streams"):
            warnings.filterwarnings("ignore", category=ResourceWarning, module=module)
        results = asyncio.run(main())
        gc.collect()
    return results


async def _one_async(
    combo: Combo,
    servers: Servers,
    entries: list[allowlist.Entry],
    method: Method,
    ref: Any,
    cand: Any,
) -> Result:
    planned = plan(method, servers, combo.topology)
    if isinstance(planned, str):
        return Result(combo.id, method.name, method.category, SKIPPED, planned)
    if not hasattr(ref, method.name):
        return _reference_lacks(combo, planned, ref)
    fresh = method.name in recipes.FRESH_CLIENT
    outcomes = []
    for client in (ref, cand):
        own = _async_client(combo, servers.url, client is cand) if fresh else client
        planned.reset(servers)
        with recording() as caught:
            try:
                value = await asyncio.wait_for(
                    _acollect(planned.call.invoke(own, method.name)), TIMEOUT * 2
                )
            except Exception as exc:  # a drop-in raises what redis-py raises
                value = exc
            finally:
                if fresh:
                    await own.aclose()
        outcomes.append(Outcome(value, _warned(caught)))
    return judge(combo, planned, outcomes[0], outcomes[1], entries, servers.flavor)


def run(combo: Combo, servers: Servers, entries: list[allowlist.Entry]) -> list[Result]:
    if combo.client == "sync":
        return run_sync(combo, servers, entries)
    return run_async(combo, servers, entries)
