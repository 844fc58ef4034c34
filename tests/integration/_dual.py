"""Run one test scenario against SmartClient and AsyncSmartClient alike.

``AsyncRunner`` owns an event loop in a background thread; ``SyncProxy`` wraps an async
client (and what it returns: pipelines, locks, scripts) so that a scenario written with
plain calls drives it, each call awaited on that loop. Concurrency stays real: several
threads calling one proxy become several tasks sharing the client's auto-pipelined
connections. So a scenario is written once and runs for both clients.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

from smartcache.asyncio.client import AsyncSmartClient
from smartcache.sync.client import SmartClient

__all__ = ["KINDS", "AsyncRunner", "SyncProxy", "make_client", "make_reference"]

KINDS = ("sync", "async")


class AsyncRunner:
    """An event loop in a daemon thread; :meth:`run` awaits a coroutine there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._thread.start()

    def run(self, awaitable: Any, timeout: float = 120.0) -> Any:
        async def wrap() -> Any:
            return await awaitable

        return asyncio.run_coroutine_threadsafe(wrap(), self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


def _iterate(stream: Any, runner: AsyncRunner) -> Iterator[Any]:
    """An async generator as a plain one: each item awaited on the runner's loop when asked
    for (a ``listen()`` that never ends by itself can be read a message at a time)."""
    while True:
        try:
            item = runner.run(stream.__anext__())
        except StopAsyncIteration:
            return
        yield item


def _wrap_result(result: Any, runner: AsyncRunner) -> Any:
    if inspect.isasyncgen(result):
        return _iterate(result, runner)
    if inspect.isawaitable(result):
        result = runner.run(result)
    module = type(result).__module__
    if module.startswith(("smartcache.asyncio", "redis.asyncio")) or (
        "AsyncScript" in type(result).__name__
    ):
        return SyncProxy(result, runner)
    return result


class SyncProxy:
    """Plain-call access to an async object: awaitables are awaited on the runner's loop."""

    def __init__(self, target: Any, runner: AsyncRunner) -> None:
        object.__setattr__(self, "_target", target)
        object.__setattr__(self, "_runner", runner)

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if result is self._target:
                return self  # pipelines chain: pipe.set(...).get(...)
            return _wrap_result(result, self._runner)

        return call

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return _wrap_result(self._target(*args, **kwargs), self._runner)

    def __enter__(self) -> SyncProxy:
        self._runner.run(self._target.__aenter__())
        return self

    def __exit__(self, *exc: Any) -> None:
        self._runner.run(self._target.__aexit__(*exc))

    def __len__(self) -> int:
        return len(self._target)

    def __bool__(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"<SyncProxy {self._target!r}>"


def make_client(kind: str, runner_box: list[AsyncRunner], **kwargs: Any) -> Any:
    """A SmartClient, or an AsyncSmartClient behind a SyncProxy (runner kept in the box)."""
    if kind == "sync":
        url = kwargs.pop("url", None)
        return SmartClient.from_url(url, **kwargs) if url else SmartClient(**kwargs)
    if not runner_box:
        runner_box.append(AsyncRunner())
    runner = runner_box[0]
    url = kwargs.pop("url", None)

    async def build() -> AsyncSmartClient:
        client = AsyncSmartClient.from_url(url, **kwargs) if url else AsyncSmartClient(**kwargs)
        return await client.initialize()

    return SyncProxy(runner.run(build()), runner)


def close_client(client: Any) -> None:
    """Close either kind."""
    if isinstance(client, SyncProxy):
        client.aclose()
    else:
        client.close()


def make_reference(
    kind: str, runner_box: list[AsyncRunner], *, cluster: bool = False, **kwargs: Any
) -> Any:
    """The redis-py client a SmartClient (``kind="sync"``) or an AsyncSmartClient
    (``"async"``, behind a SyncProxy) stands in for: ``redis.Redis`` /
    ``redis.asyncio.Redis``, or with ``cluster=True`` their ``RedisCluster`` twins.
    ``url=`` works as for :func:`make_client`."""
    import redis
    import redis.asyncio
    import redis.asyncio.cluster
    import redis.cluster

    url = kwargs.pop("url", None)
    if kind == "sync":
        cls: Any = redis.cluster.RedisCluster if cluster else redis.Redis
        return cls.from_url(url, **kwargs) if url else cls(**kwargs)
    if not runner_box:
        runner_box.append(AsyncRunner())
    runner = runner_box[0]
    acls: Any = redis.asyncio.cluster.RedisCluster if cluster else redis.asyncio.Redis

    async def build() -> Any:
        return acls.from_url(url, **kwargs) if url else acls(**kwargs)

    return SyncProxy(runner.run(build()), runner)


Factory = Callable[..., Any]
_ = Coroutine  # typing import kept for readers of the signatures above
