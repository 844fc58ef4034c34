from __future__ import annotations

import ast
import asyncio
import threading
from pathlib import Path

import pytest

from smartcache.cache._flight import AsyncSingleFlight, SingleFlight
from smartcache.cache._lock import has_command

CACHE_DIR = Path(__file__).resolve().parents[2] / "smartcache" / "cache"


def test_threads_share_one_call() -> None:
    flight = SingleFlight()
    started, release = threading.Event(), threading.Event()
    calls = []

    def load() -> int:
        calls.append(1)
        started.set()
        release.wait(5)
        return 42

    results: list[tuple[int, bool]] = []
    leader = threading.Thread(target=lambda: results.append(flight.do("k", load, 5)))
    leader.start()
    assert started.wait(5)
    followers = [
        threading.Thread(target=lambda: results.append(flight.do("k", load, 5))) for _ in range(9)
    ]
    for t in followers:
        t.start()
    release.set()
    for t in [leader, *followers]:
        t.join()
    assert len(calls) == 1
    assert sorted(results) == [(42, False)] * 9 + [(42, True)]


def test_followers_get_the_leaders_error_and_time_out() -> None:
    flight = SingleFlight()
    with pytest.raises(ZeroDivisionError):
        flight.do("k", lambda: 1 / 0)
    gate, entered = threading.Event(), threading.Event()
    t = threading.Thread(target=lambda: flight.do("slow", lambda: entered.set() or gate.wait(5)))
    t.start()
    assert entered.wait(5)  # the leader is inside its load
    with pytest.raises(TimeoutError):
        flight.do("slow", lambda: None, timeout=0.01)
    gate.set()
    t.join()


@pytest.mark.asyncio
async def test_tasks_share_one_future() -> None:
    flight = AsyncSingleFlight()
    calls = []

    async def load() -> str:
        calls.append(1)
        await asyncio.sleep(0.01)
        return "v"

    results = await asyncio.gather(*(flight.do("k", load) for _ in range(200)))
    assert len(calls) == 1
    assert [v for v, _ in results] == ["v"] * 200
    assert sum(leader for _, leader in results) == 1


@pytest.mark.asyncio
async def test_async_error_propagates_to_followers() -> None:
    flight = AsyncSingleFlight()

    async def boom() -> None:
        await asyncio.sleep(0.01)
        raise KeyError("x")

    results = await asyncio.gather(
        *(flight.do("k", boom) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(r, KeyError) for r in results)


def test_command_info_interpretation() -> None:
    assert not has_command([None])
    assert not has_command({})
    assert has_command([["delifeq", 3, ["write"], 1, 1, 1]])
    assert has_command({"delifeq": {"arity": 3}})


PURE = ("_codec.py", "_keys.py", "_policy.py")
FORBIDDEN = {"socket", "ssl", "asyncio", "threading", "time", "redis"}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(
                node.module if node.module.startswith("smartcache") else node.module.split(".")[0]
            )
    return names


@pytest.mark.parametrize("name", PURE)
def test_cache_policies_are_io_free(name: str) -> None:
    assert not _imports(CACHE_DIR / name) & FORBIDDEN


def test_cache_package_imports_no_client_module() -> None:
    for path in CACHE_DIR.glob("*.py"):
        for module in _imports(path):
            if module.startswith("smartcache"):
                # the cache talks to clients through a Protocol: the error tree and the
                # I/O-free core (key slots) are below it, client modules are not
                allowed = ("smartcache.cache", "smartcache.exceptions", "smartcache.core")
                assert module.startswith(allowed), (path.name, module)


def test_watchdog_extends_until_unregistered_and_flags_loss(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from smartcache.cache import _watchdog

    monkeypatch.setattr(_watchdog, "_IDLE_EXIT", 0.05)
    calls: list[str] = []
    twice = threading.Event()

    def extend(key: str, token: bytes) -> bool:
        calls.append(key)
        if calls.count("a") == 2:
            twice.set()
        return key == "a"

    dog = _watchdog.Watchdog(extend, interval=0.01)
    a = dog.register("a", b"t")
    b = dog.register("b", b"t")
    assert b.lost.wait(5)  # its extension failed: the holder must not write
    assert twice.wait(5)  # "a" keeps being extended
    assert not a.lost.is_set()
    dog.unregister(a)
    thread = dog._thread
    assert thread is not None
    thread.join(5)  # with nothing to extend, the thread ends
    assert not thread.is_alive() and dog._thread is None
