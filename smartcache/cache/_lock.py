"""Cross-process lease lock with a fencing token, released by compare-and-delete.

``SET lock token NX PX lease`` takes it; ``DELIFEQ`` (Valkey 9+, detected once with
``COMMAND INFO``) or a Lua compare-and-delete releases it; a watchdog extends the lease with a
compare-and-PEXPIRE while a slow loader runs, and reports loss if the token changed, so the
holder abandons its write. Waiters block on a per-key signal list (BLPOP with a timeout), which
the holder fills on release. BLPOP rather than PUBLISH because it works on every client
(the async client and plain redis-py cluster clients have no pub/sub in common), needs no
subscriber connection per waiter, and routes to the key's slot in a cluster.

A lease is *not* mutual exclusion: a holder paused longer than its lease (GC, SIGSTOP, network)
can still write after another process took over. It saves duplicate work; it does not make
the loader safe to run twice. The watchdog narrows the window, the token makes release safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from typing import Any, Final

from redis.exceptions import RedisError

from smartcache.cache._protocol import AsyncRedisLike, RedisLike
from smartcache.cache._watchdog import Watchdog

__all__ = ["AsyncLeaseLock", "LeaseLock", "lock_key", "signal_key"]

_RELEASE: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end
return 0
"""
_EXTEND: Final = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) end
return 0
"""
_SIGNAL_TOKENS: Final = 64  # one per waiting *process*; in-process waiters share single-flight


def lock_key(key: str) -> str:
    """The lock's key; a hash tag in ``key`` keeps it in the key's slot."""
    return f"{key}:__lock__"


def signal_key(key: str) -> str:
    """The list a holder pushes to on release, waking waiters blocked in BLPOP."""
    return f"{key}:__wake__"


def new_token() -> bytes:
    """A random 128-bit fencing token."""
    return secrets.token_hex(16).encode()


def has_command(reply: Any) -> bool:
    """Interpret ``COMMAND INFO name``: a list/dict with a non-empty entry means it exists."""
    if isinstance(reply, dict):
        return any(v for v in reply.values())
    if isinstance(reply, list | tuple):
        return any(item for item in reply)
    return False


class LeaseLock:
    """The synchronous lease lock for one client."""

    def __init__(self, client: RedisLike, lease_ms: int = 10_000) -> None:
        self.client = client
        self.lease_ms = lease_ms
        self._release_script = client.register_script(_RELEASE)
        self._extend_script = client.register_script(_EXTEND)
        self._native_delifeq: bool | None = None
        self._watchdog: Watchdog | None = None

    def acquire(self, key: str) -> bytes | None:
        """Try once; the token if this caller now holds the lease, else ``None``."""
        token = new_token()
        if self.client.set(lock_key(key), token, nx=True, px=self.lease_ms):
            self.client.delete(signal_key(key))  # drop wake-ups left from an earlier round
            return token
        return None

    def release(self, key: str, token: bytes) -> None:
        """Delete the lock only if it still holds ``token``; wake the waiters."""
        if self._native_delifeq is None:
            try:
                reply = self.client.execute_command("COMMAND", "INFO", "DELIFEQ")
                self._native_delifeq = has_command(reply)
            except (RedisError, OSError):
                pass  # unreachable now: decide next time, use the script this time
            except Exception:
                # redis-py's COMMAND reply callback cannot parse [nil]: the command is absent
                self._native_delifeq = False
        try:
            if self._native_delifeq:
                self.client.execute_command("DELIFEQ", lock_key(key), token)
            else:
                self._release_script(keys=[lock_key(key)], args=[token])
            pipe = self.client.pipeline(transaction=False)
            pipe.rpush(signal_key(key), *([b"1"] * _SIGNAL_TOKENS))
            pipe.pexpire(signal_key(key), self.lease_ms)
            pipe.execute()
        except (RedisError, OSError):
            pass  # the lease expires by itself; waiters wake at their timeout

    def extend(self, key: str, token: bytes) -> bool:
        """Push the lease forward if still held; False means it was lost."""
        return bool(self._extend_script(keys=[lock_key(key)], args=[token, self.lease_ms]))

    def wait(self, key: str, timeout: float) -> None:
        """Block until the holder signals or ``timeout`` seconds pass."""
        self.client.blpop([signal_key(key)], timeout=max(timeout, 0.01))

    @contextlib.contextmanager
    def watchdog(self, key: str, token: bytes) -> Any:
        """Extend the lease every third of it while the body runs; yields a ``lost`` Event."""
        if self._watchdog is None:
            self._watchdog = Watchdog(self.extend, self.lease_ms / 3000)
        lease = self._watchdog.register(key, token)
        try:
            yield lease.lost
        finally:
            self._watchdog.unregister(lease)


class AsyncLeaseLock:
    """The asyncio twin of :class:`LeaseLock`."""

    def __init__(self, client: AsyncRedisLike, lease_ms: int = 10_000) -> None:
        self.client = client
        self.lease_ms = lease_ms
        self._release_script = client.register_script(_RELEASE)
        self._extend_script = client.register_script(_EXTEND)
        self._native_delifeq: bool | None = None

    async def acquire(self, key: str) -> bytes | None:
        """Try once; the token if this caller now holds the lease, else ``None``."""
        token = new_token()
        if await self.client.set(lock_key(key), token, nx=True, px=self.lease_ms):
            await self.client.delete(signal_key(key))
            return token
        return None

    async def release(self, key: str, token: bytes) -> None:
        """Delete the lock only if it still holds ``token``; wake the waiters."""
        if self._native_delifeq is None:
            try:
                reply = await self.client.execute_command("COMMAND", "INFO", "DELIFEQ")
                self._native_delifeq = has_command(reply)
            except (RedisError, OSError):
                pass  # unreachable now: decide next time, use the script this time
            except Exception:
                # redis-py's COMMAND reply callback cannot parse [nil]: the command is absent
                self._native_delifeq = False
        try:
            if self._native_delifeq:
                await self.client.execute_command("DELIFEQ", lock_key(key), token)
            else:
                await self._release_script(keys=[lock_key(key)], args=[token])
            pipe = self.client.pipeline(transaction=False)
            pipe.rpush(signal_key(key), *([b"1"] * _SIGNAL_TOKENS))
            pipe.pexpire(signal_key(key), self.lease_ms)
            await pipe.execute()
        except (RedisError, OSError):
            pass  # the lease expires by itself; waiters wake at their timeout

    async def extend(self, key: str, token: bytes) -> bool:
        """Push the lease forward if still held; False means it was lost."""
        return bool(await self._extend_script(keys=[lock_key(key)], args=[token, self.lease_ms]))

    async def wait(self, key: str, timeout: float) -> None:
        """Block until the holder signals or ``timeout`` seconds pass."""
        await self.client.blpop([signal_key(key)], timeout=max(timeout, 0.01))

    @contextlib.asynccontextmanager
    async def watchdog(self, key: str, token: bytes) -> Any:
        """Extend the lease every third of it while the body runs; yields a ``lost`` Event."""
        lost = asyncio.Event()
        interval = self.lease_ms / 3000

        async def run() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    ok = await self.extend(key, token)
                except Exception:
                    ok = False
                if not ok:
                    lost.set()
                    return

        task = asyncio.create_task(run())
        try:
            yield lost
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
