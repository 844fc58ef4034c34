"""The cache's per-world primitives: the same names in both worlds, the same behaviour."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from smartcache.cache import _primitives as sync_world
from smartcache.cache import _primitives_async as async_world
from smartcache.cache._base import LoaderError


def test_both_worlds_offer_the_same_names() -> None:
    assert sync_world.__all__ == async_world.__all__
    for name in sync_world.__all__:
        assert hasattr(sync_world, name) and hasattr(async_world, name)
    assert sync_world.CAN_AWAIT is False and async_world.CAN_AWAIT is True


def test_sync_background_jobs_run_once_per_key_at_a_time() -> None:
    jobs = sync_world.BackgroundJobs("test-jobs")
    release = threading.Event()
    runs: list[str] = []

    def job(name: str) -> None:
        runs.append(name)
        release.wait(5)

    jobs.start("k", job, "first")
    jobs.start("k", job, "second")  # still running: dropped
    jobs.start("other", job, "third")
    release.set()
    jobs.wait(5)
    assert sorted(runs) == ["first", "third"]
    jobs.start("k", job, "again")  # done: runs again
    jobs.wait(5)
    assert runs.count("again") == 1
    jobs.close()


@pytest.mark.asyncio
async def test_async_background_jobs_run_once_per_key_at_a_time() -> None:
    jobs = async_world.BackgroundJobs("test-jobs")
    release = asyncio.Event()
    runs: list[str] = []

    async def job(name: str) -> None:
        runs.append(name)
        await release.wait()

    jobs.start("k", job, "first")
    jobs.start("k", job, "second")
    jobs.start("other", job, "third")
    await jobs.wait(0.05)  # bounded: the jobs are still waiting
    release.set()
    await jobs.wait()
    assert sorted(runs) == ["first", "third"]
    jobs.start("k", job, "again")
    await jobs.close()
    assert runs.count("again") == 1


def test_sync_worker_and_event() -> None:
    event = sync_world.Event()
    start = time.monotonic()
    sync_world.wait_event(event, 0.05)
    assert time.monotonic() - start >= 0.04
    worker = sync_world.spawn(lambda: event.wait(5), "test-worker")
    assert sync_world.alive(worker)
    event.set()
    sync_world.join(worker, 5)
    assert not sync_world.alive(worker)


@pytest.mark.asyncio
async def test_async_worker_is_cancelled_when_join_times_out() -> None:
    never = async_world.Event()

    async def stuck() -> None:
        await never.wait()

    worker = async_world.spawn(stuck, "test-worker")
    assert async_world.alive(worker)
    await async_world.join(worker, 0.05)
    assert worker.cancelled() and not async_world.alive(worker)


@pytest.mark.asyncio
async def test_async_worker_joining_itself_returns() -> None:
    async def stop_self() -> None:
        await async_world.join(me, 5)

    me = async_world.spawn(stop_self, "test-worker")
    await asyncio.wait_for(me, 1)


def test_sync_start_in_init_starts_now() -> None:
    calls: list[int] = []
    sync_world.start_in_init(lambda: calls.append(1))
    assert calls == [1]


@pytest.mark.asyncio
async def test_async_timed_awaits_the_loader_and_wraps_its_errors() -> None:
    async def load() -> int:
        return 7

    value, micros = await async_world.timed(load)
    assert value == 7 and micros >= 0
    assert (await async_world.timed(lambda: 8))[0] == 8

    def fail() -> None:
        raise KeyError("x")

    with pytest.raises(LoaderError):
        await async_world.timed(fail)
    with pytest.raises(LoaderError):
        sync_world.timed(fail)


@pytest.mark.asyncio
async def test_async_call_store_runs_a_sync_method_off_the_loop() -> None:
    loop_thread = threading.get_ident()
    seen: list[int] = []
    await async_world.call_store(lambda x: seen.append(threading.get_ident()), False, 1)
    assert seen and seen[0] != loop_thread

    async def write(items: list[int]) -> int:
        return len(items)

    assert await async_world.call_store(write, True, [1, 2]) == 2
    assert sync_world.call_store(len, False, [1, 2, 3]) == 3
