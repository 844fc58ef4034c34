"""DUMP with ``decode_responses=True``: its reply stays bytes, and nobody else suffers.

redis-py marks DUMP's reply ``NEVER_DECODE``. An AsyncSmartClient shares one
auto-pipelined connection per node between tasks, so a binary reply fed to a decoding
reader there broke the connection for every task on it (their GETs failed and retried,
their INCRs came back ``AmbiguousCommandError``). The scenario starts DUMP, GETs and
INCRs together: in one event-loop tick for the async client (so they share a write on
the same connection), on threads for the sync one.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from smartcache.testing import Cluster, Standalone
from tests.integration._dual import SyncProxy

VALUE = "v" * 40
TOGETHER = 30


def _together(client: Any, calls: list[tuple[str, tuple[Any, ...]]]) -> list[Any]:
    """Start every call at once; return replies (or exceptions) in order."""
    if isinstance(client, SyncProxy):
        target, runner = client._target, client._runner

        async def gather() -> list[Any]:
            started = [getattr(target, name)(*args) for name, args in calls]
            return list(await asyncio.gather(*started, return_exceptions=True))

        return list(runner.run(gather()))
    with ThreadPoolExecutor(len(calls)) as pool:
        futures = [pool.submit(getattr(client, name), *args) for name, args in calls]
        return [f.exception() or f.result() for f in futures]


@pytest.mark.parametrize("autopipeline", [True, False], ids=["autopipeline", "no-autopipeline"])
@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_dump_stays_bytes_and_leaves_the_shared_connection_working(
    redis_standalone: Standalone,
    redis_cluster: Cluster,
    client_factory: Any,
    topology: str,
    autopipeline: bool,
) -> None:
    if client_factory.kind == "sync" and not autopipeline:
        pytest.skip("autopipeline= is an AsyncSmartClient option")
    options: dict[str, Any] = {"decode_responses": True}
    if client_factory.kind == "async":
        options["autopipeline"] = autopipeline
    if topology == "cluster":
        client = client_factory(startup_nodes=redis_cluster.startup_nodes, **options)
    else:
        client = client_factory(url=redis_standalone.url, **options)
    tag = f"{{dump:{client_factory.kind}:{autopipeline}}}"  # one slot: one shared connection
    key, counter, copy = f"{tag}value", f"{tag}counter", f"{tag}copy"
    client.set(key, VALUE)
    client.delete(counter, copy)

    calls: list[tuple[str, tuple[Any, ...]]] = [("dump", (key,))]
    for _ in range(TOGETHER):
        calls += [("get", (key,)), ("incr", (counter,))]
    replies = _together(client, calls)

    errors = [r for r in replies if isinstance(r, BaseException)]
    assert errors == []
    dumped = replies[0]
    assert isinstance(dumped, bytes)
    with pytest.raises(UnicodeDecodeError):
        dumped.decode()  # a reply a decoding reader cannot take: the case that matters
    assert replies[1::2] == [VALUE] * TOGETHER
    assert sorted(replies[2::2]) == list(range(1, TOGETHER + 1))  # every INCR ran once
    assert client.restore(copy, 0, dumped) == "OK"
    assert client.get(copy) == VALUE
    assert client.dump(copy) == dumped  # and once more, alone


@pytest.mark.parametrize("transaction", [False, True], ids=["pipeline", "transaction"])
@pytest.mark.parametrize("topology", ["standalone", "cluster"])
def test_dump_in_a_pipeline_is_read_as_redis_py_reads_it(
    redis_standalone: Standalone,
    redis_cluster: Cluster,
    client_factory: Any,
    redis_py_factory: Any,
    topology: str,
    transaction: bool,
) -> None:
    """A pipeline honours NEVER_DECODE as redis-py's does: DUMP replies stay bytes among
    decoded ones; inside MULTI (one EXEC reply) both raise UnicodeDecodeError. Either way
    the connection keeps serving: GETs sent together with it (the async client's shared
    connection) get their values."""
    url = redis_cluster.url if topology == "cluster" else redis_standalone.url
    cluster = topology == "cluster"
    tag = f"{{pipe-dump:{client_factory.kind}}}"
    key, hkey = f"{tag}value", f"{tag}hash"

    def scenario(r: Any) -> Any:
        r.set(key, VALUE)
        r.hset(hkey, mapping={"a": "1"})
        pipe = r.pipeline(transaction=transaction)
        pipe.get(key).dump(key).dump(hkey).get(key)
        try:
            out = pipe.execute()
        except UnicodeDecodeError:
            return "UnicodeDecodeError", r.get(key)
        return [type(x).__name__ for x in out], out[0], out[3], r.get(key)

    expected = scenario(redis_py_factory(url=url, cluster=cluster, decode_responses=True))
    client = client_factory(url=url, decode_responses=True)
    assert scenario(client) == expected
    if not transaction:
        assert expected[0] == ["str", "bytes", "bytes", "str"]

    def pipeline_with_dump() -> Any:
        pipe = client.pipeline(transaction=transaction)
        pipe.dump(key).get(key)
        try:
            return pipe.execute()
        except UnicodeDecodeError as exc:
            return exc

    if isinstance(client, SyncProxy):
        target, runner = client._target, client._runner

        async def mixed() -> list[Any]:
            pipe = target.pipeline(transaction=transaction)
            pipe.dump(key).get(key)
            started = [pipe.execute(), *(target.get(key) for _ in range(TOGETHER))]
            return list(await asyncio.gather(*started, return_exceptions=True))

        got = runner.run(mixed())
        assert got[1:] == [VALUE] * TOGETHER  # the shared connection kept working
        first = got[0]
    else:
        first = pipeline_with_dump()
    if transaction:
        assert isinstance(first, UnicodeDecodeError)
    else:
        assert isinstance(first[0], bytes) and first[1] == VALUE
    assert client.get(key) == VALUE
