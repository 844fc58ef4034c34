"""``BloomGuard``: answer "certainly absent" for keys never added, before Redis or the loader.

Two back ends:

- local: a :class:`pybloom_live.ScalableBloomFilter` in process memory (no I/O at all);
- shared: a Redis bitmap under ONE hash-tagged key (so it lives in one cluster slot), sized
  ``m = -n ln p / (ln 2)^2`` bits with ``k = m/n ln 2`` positions per item from ``mmh3``
  (double hashing over the two 64-bit halves of murmur3-128). Reads and writes are a single
  ``BITFIELD`` command each. When the server has the RedisBloom module (``BF.ADD`` in
  ``COMMAND INFO``), ``BF.RESERVE/BF.MADD/BF.MEXISTS`` are used instead.

A bloom filter never forgets: after deleting many items, rebuild it (``guard.clear()`` then
``guard.warm(all_current_keys)``); meanwhile lookups may reach the loader for deleted keys
(false positives) but never skip keys that exist, as long as every new key is ``add``ed.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterable
from typing import Any

import mmh3
from pybloom_live import ScalableBloomFilter

from smartcache.cache._lock import has_command
from smartcache.cache._protocol import AsyncRedisLike, RedisLike

__all__ = ["BloomGuard", "bloom_positions", "bloom_size"]


def bloom_size(capacity: int, error_rate: float) -> tuple[int, int]:
    """``(bits, hashes)`` for ``capacity`` items at false-positive rate ``error_rate``."""
    if capacity <= 0 or not 0 < error_rate < 1:
        raise ValueError("capacity must be > 0 and 0 < error_rate < 1")
    bits = math.ceil(-capacity * math.log(error_rate) / (math.log(2) ** 2))
    hashes = max(1, round(bits / capacity * math.log(2)))
    return bits, hashes


def bloom_positions(item: str | bytes, bits: int, hashes: int) -> list[int]:
    """The ``hashes`` bit positions of ``item`` (Kirsch-Mitzenmacher double hashing)."""
    h1, h2 = mmh3.hash64(item, signed=False)
    return [(h1 + i * h2) % bits for i in range(hashes)]


class BloomGuard:
    """Membership guard for cache keys; see the module docstring for the back ends."""

    def __init__(
        self,
        *,
        capacity: int = 100_000,
        error_rate: float = 0.001,
        client: RedisLike | AsyncRedisLike | None = None,
        name: str = "default",
        namespace: str = "sc",
    ) -> None:
        self.capacity = capacity
        self.error_rate = error_rate
        self.client = client
        self.bits, self.hashes = bloom_size(capacity, error_rate)
        self.key = "{" + f"{namespace}:bloom:{name}" + "}"  # one key, one slot
        self._local: Any = (
            ScalableBloomFilter(initial_capacity=capacity, error_rate=error_rate)
            if client is None
            else None
        )
        self._module: bool | None = None

    @classmethod
    def local(cls, capacity: int = 100_000, error_rate: float = 0.001) -> BloomGuard:
        """An in-process guard."""
        return cls(capacity=capacity, error_rate=error_rate)

    @classmethod
    def shared(
        cls,
        client: RedisLike | AsyncRedisLike,
        name: str,
        capacity: int = 100_000,
        error_rate: float = 0.001,
    ) -> BloomGuard:
        """A guard shared by every process through a Redis bitmap (or RedisBloom filter)."""
        return cls(capacity=capacity, error_rate=error_rate, client=client, name=name)

    @property
    def _remote(self) -> RedisLike | AsyncRedisLike:
        """The client of a shared guard (``client`` is set whenever ``_local`` is None)."""
        client = self.client
        if client is None:  # as reading an attribute of None did before: AttributeError
            raise AttributeError("a local BloomGuard has no client")
        return client

    # -- command building (pure) ------------------------------------------------------------
    def _bitfield(self, items: Iterable[str], op: str) -> list[Any]:
        args: list[Any] = ["BITFIELD", self.key]
        for item in items:
            for pos in bloom_positions(item, self.bits, self.hashes):
                args += ["SET", "u1", pos, 1] if op == "set" else ["GET", "u1", pos]
        return args

    def _use_module(self, reply: Any) -> bool:
        self._module = has_command(reply)
        return self._module

    # -- sync -------------------------------------------------------------------------------
    def _sync_module(self) -> bool:
        if self._module is None:
            try:
                reply = self._remote.execute_command("COMMAND", "INFO", "BF.ADD")
            except Exception:
                reply = None
            if self._use_module(reply):
                with contextlib.suppress(Exception):  # already reserved
                    self._remote.execute_command(
                        "BF.RESERVE", self.key, self.error_rate, self.capacity
                    )
        return bool(self._module)

    def add(self, *items: str) -> None:
        """Record keys as present."""
        if self._local is not None:
            for item in items:
                self._local.add(item)
        elif items:
            if self._sync_module():
                self._remote.execute_command("BF.MADD", self.key, *items)
            else:
                self._remote.execute_command(*self._bitfield(items, "set"))

    def warm(self, items: Iterable[str], batch: int = 1000) -> None:
        """Add many keys, ``batch`` per round trip."""
        chunk: list[str] = []
        for item in items:
            chunk.append(item)
            if len(chunk) >= batch:
                self.add(*chunk)
                chunk = []
        if chunk:
            self.add(*chunk)

    def contains(self, item: str) -> bool:
        """False means certainly never added; True means probably added."""
        if self._local is not None:
            return item in self._local
        if self._sync_module():
            return bool(self._remote.execute_command("BF.EXISTS", self.key, item))
        return all(self._remote.execute_command(*self._bitfield([item], "get")))

    def clear(self) -> None:
        """Forget everything (then ``warm`` with the current keys to rebuild)."""
        if self._local is not None:
            self._local = ScalableBloomFilter(
                initial_capacity=self.capacity, error_rate=self.error_rate
            )
        else:
            self._remote.delete(self.key)
            self._module = None

    # -- async ------------------------------------------------------------------------------
    async def _async_module(self) -> bool:
        if self._module is None:
            try:
                reply = await self._remote.execute_command("COMMAND", "INFO", "BF.ADD")
            except Exception:
                reply = None
            if self._use_module(reply):
                with contextlib.suppress(Exception):  # already reserved
                    await self._remote.execute_command(
                        "BF.RESERVE", self.key, self.error_rate, self.capacity
                    )
        return bool(self._module)

    async def aadd(self, *items: str) -> None:
        """Async :meth:`add`."""
        if self._local is not None:
            self.add(*items)
        elif items:
            if await self._async_module():
                await self._remote.execute_command("BF.MADD", self.key, *items)
            else:
                await self._remote.execute_command(*self._bitfield(items, "set"))

    async def awarm(self, items: Iterable[str], batch: int = 1000) -> None:
        """Async :meth:`warm`."""
        chunk: list[str] = []
        for item in items:
            chunk.append(item)
            if len(chunk) >= batch:
                await self.aadd(*chunk)
                chunk = []
        if chunk:
            await self.aadd(*chunk)

    async def acontains(self, item: str) -> bool:
        """Async :meth:`contains`."""
        if self._local is not None:
            return item in self._local
        if await self._async_module():
            return bool(await self._remote.execute_command("BF.EXISTS", self.key, item))
        return all(await self._remote.execute_command(*self._bitfield([item], "get")))

    async def aclear(self) -> None:
        """Async :meth:`clear`."""
        if self._local is not None:
            self.clear()
        else:
            await self._remote.delete(self.key)
            self._module = None
