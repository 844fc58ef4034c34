from __future__ import annotations

import contextlib

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/integration/" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(params=["sync", "async"])
def client_factory(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """``client_factory(url=... | startup_nodes=..., **kwargs)``: a SmartClient, or an
    AsyncSmartClient driven through a SyncProxy; closed (and its loop stopped) at teardown."""
    from tests.integration._dual import close_client, make_client

    runner_box: list = []
    made: list = []

    def factory(**kwargs):  # type: ignore[no-untyped-def]
        client = make_client(request.param, runner_box, **kwargs)
        made.append(client)
        return client

    factory.kind = request.param  # type: ignore[attr-defined]
    yield factory
    for client in made:
        with contextlib.suppress(Exception):  # a test may have closed it already
            close_client(client)
    for runner in runner_box:
        runner.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The generated differential check's coverage and divergences (when it ran)."""
    from tests.differential import report

    summary = report.lines()
    if summary:
        terminalreporter.section("differential check")
        for line in summary:
            terminalreporter.write_line(line)
        report.write()


@pytest.fixture
def redis_py_factory(client_factory):  # type: ignore[no-untyped-def]
    """``redis_py_factory(url=... | host=..., cluster=False, **kwargs)``: the redis-py client
    the ``client_factory`` client of this run stands in for (``redis.Redis`` /
    ``redis.cluster.RedisCluster`` for a SmartClient, their ``redis.asyncio`` twins behind
    a SyncProxy for an AsyncSmartClient); closed at teardown."""
    from tests.integration._dual import close_client, make_reference

    runner_box: list = []
    made: list = []

    def factory(**kwargs):  # type: ignore[no-untyped-def]
        client = make_reference(client_factory.kind, runner_box, **kwargs)
        made.append(client)
        return client

    factory.kind = client_factory.kind  # type: ignore[attr-defined]
    yield factory
    for client in made:
        with contextlib.suppress(Exception):
            close_client(client)
    for runner in runner_box:
        runner.stop()


@pytest.fixture(params=["sync", "async"])
def world(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    """The cache tests' ``sync`` / ``async`` world (tests/integration/_cache_world.py):
    SmartClient and plain functions, or AsyncSmartClient and coroutine functions, driven by
    one test body; what it made is closed (and its loop stopped) at teardown."""
    from tests.integration._cache_world import World

    w = World(request.param)
    yield w
    w.close()
