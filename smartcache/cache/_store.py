"""The store protocol: what write-through and write-behind need from the user's database.

A store is any object with two methods, sync or async (an ``async def`` is detected):

* ``write_many(items)``: upsert every :class:`StoreItem` (``key``, ``value``, ``version``) in
  one transaction, and return only once it is committed;
* ``delete_many(items)``: delete every item's ``key`` in one transaction.

Both receive :class:`StoreItem` objects, so a delete carries a version too. ``version`` is a
text that sorts in write order for one key (a zero-padded Redis Stream entry ID for
write-behind, ``None`` for a write-through write that has none): a store that applies an item
only when its version is newer than the one it holds keeps last-write-wins even when two
flushers (or a flusher that was presumed dead and woke up) commit out of order. The ready
adapters (:class:`~smartcache.cache.SQLiteStore`, :class:`~smartcache.cache.SQLAlchemyStore`)
do this, and keep a deleted key as a versioned tombstone so a late, older write cannot bring
it back. A store that ignores ``version`` is still correct with a single flusher.

A store raises on failure (any exception); the caller then retries (write-behind) or
propagates (write-through). It must be safe to apply the same item twice: delivery is
at-least-once.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

__all__ = ["AsyncStore", "Store", "StoreItem", "is_async_store", "stream_version"]


@dataclass(frozen=True, slots=True)
class StoreItem:
    """One change for the database: ``key``, its new ``value`` and the change's ``version``.

    ``value`` is the Python value the application wrote (``None`` for a delete).
    ``encoded`` is ``value`` as the writer serialized it with the built-in serializer named
    ``serializer`` ("json", "msgpack", "pickle"), when the write-behind flusher has it: a
    store serializing with the same one may store these bytes as they are instead of
    serializing ``value`` again (the ready SQL stores do). Both are ``None`` otherwise.
    """

    key: str
    value: Any = None
    version: str | None = None
    encoded: bytes | None = None
    serializer: str | None = None


@runtime_checkable
class Store(Protocol):
    """A synchronous store (see the module docstring for the contract)."""

    def write_many(self, items: Sequence[StoreItem]) -> None:
        """Upsert ``items`` in one transaction; return once committed."""
        ...

    def delete_many(self, items: Sequence[StoreItem]) -> None:
        """Delete ``items``' keys in one transaction; return once committed."""
        ...


class AsyncStore(Protocol):
    """An asyncio store: the same contract with awaitable methods."""

    def write_many(self, items: Sequence[StoreItem]) -> Awaitable[None]:
        """Upsert ``items`` in one transaction."""
        ...

    def delete_many(self, items: Sequence[StoreItem]) -> Awaitable[None]:
        """Delete ``items``' keys in one transaction."""
        ...


def is_async_store(store: Any) -> bool:
    """True when ``store.write_many`` is a coroutine function."""
    method = getattr(store, "write_many", None)
    if method is None or not callable(getattr(store, "delete_many", None)):
        from smartcache.exceptions import InvalidArgumentError  # noqa: PLC0415

        raise InvalidArgumentError(
            f"store {type(store).__name__} has no write_many/delete_many: give an object with "
            "write_many(items) and delete_many(items) (see smartcache.cache.Store), or use "
            "SQLiteStore / SQLAlchemyStore"
        )
    return inspect.iscoroutinefunction(method)


def stream_version(entry_id: bytes | str) -> str:
    """A Redis Stream entry ID (``"1700000000000-3"``) as text that sorts in stream order."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    if text.isascii() and ms.isdigit() and seq.isdigit():  # what Redis gives: no parsing
        return ms.zfill(15) + "-" + seq.zfill(20)
    return f"{int(ms):015d}-{int(seq or 0):020d}"
