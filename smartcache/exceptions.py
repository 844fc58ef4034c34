"""The one error tree of smartcache.

Every error smartcache raises derives from :class:`SmartCacheError`. Where a drop-in
user of redis-py would already catch an error (``redis.exceptions.ConnectionError``,
``ResponseError``, ...), the smartcache error also derives from that redis-py class,
so existing ``except`` clauses keep working::

    SmartCacheError
    ├── ConfigurationError            bad input: option, URL, argument (also ValueError)
    │   ├── InvalidArgumentError      a key/argument redis-py would refuse (also DataError)
    │   └── ServerBinaryNotFoundError no redis-server / valkey-server to start
    ├── TopologyError                 a local topology (smartcache.testing) misbehaved
    │   └── TopologyNotReadyError     it did not become ready in time (carries log lines)
    ├── SmartConnectionError          also redis.exceptions.ConnectionError
    │   ├── SmartTimeoutError         also redis.exceptions.TimeoutError
    │   ├── NoReachableNodeError      every address tried is listed in ``.addresses``
    │   ├── PoolExhaustedError        every pooled connection stayed in use for the wait
    │   └── AmbiguousCommandError     the command may or may not have run
    ├── CrossSlotError                also ClusterCrossSlotError and RedisClusterException
    ├── ClusterUnavailableError       also redis.exceptions.ClusterDownError
    ├── DurabilityError               a write reached fewer replicas than ``wait_replicas``
    ├── CacheInconsistencyError       write-through: database written, cache maybe stale
    ├── FlushTimeoutError             write-behind: not drained in time (also TimeoutError)
    └── StaleWriteError               a store refused a write older than its tombstone horizon

Errors carry context as attributes (``.command``, ``.node``, ``.slot``, ``.attempts``),
never secrets: passwords are not part of any message.
"""

from __future__ import annotations

from collections.abc import Sequence

import redis.exceptions as _rx

__all__ = [
    "AmbiguousCommandError",
    "CacheInconsistencyError",
    "ClusterUnavailableError",
    "ConfigurationError",
    "CrossSlotError",
    "FlushTimeoutError",
    "DurabilityError",
    "InvalidArgumentError",
    "NoReachableNodeError",
    "PoolExhaustedError",
    "ServerBinaryNotFoundError",
    "SmartCacheError",
    "SmartConnectionError",
    "SmartTimeoutError",
    "StaleWriteError",
    "TopologyError",
    "TopologyNotReadyError",
]


class SmartCacheError(Exception):
    """Root of every error smartcache raises."""


class ConfigurationError(SmartCacheError, ValueError):
    """An option, URL or argument is wrong; the message says how to fix it."""


class InvalidArgumentError(ConfigurationError, _rx.DataError):
    """A key or argument of a type Redis cannot take (``None``, ``bool``, a container).

    Also a ``redis.exceptions.DataError``, as redis-py raises for the same input.
    """

    # ValueError.__init__ (earlier in the MRO) never runs RedisError.__init__, which sets
    # these; redis-py's RedisError.__repr__ reads error_type (repr() would raise without it).
    error_type = _rx.ExceptionType.SERVER
    status_code: str | None = None


class ServerBinaryNotFoundError(ConfigurationError):
    """No server binary could be found to start a local topology."""


class TopologyError(SmartCacheError):
    """A local topology started by :mod:`smartcache.testing` misbehaved."""


class TopologyNotReadyError(TopologyError):
    """A local topology did not become ready within its timeout.

    ``log_tail`` holds the last log lines of the node that was not ready.
    """

    def __init__(self, message: str, *, node: str | None = None, log_tail: str = "") -> None:
        self.node = node
        self.log_tail = log_tail
        full = (
            message if not log_tail else f"{message}\n--- last log lines of {node} ---\n{log_tail}"
        )
        super().__init__(full)


class SmartConnectionError(SmartCacheError, _rx.ConnectionError):
    """A node could not be reached or the connection broke.

    ``request_sent``: whether the command had been written when it happened (``False``:
    it cannot have run, safe to send again; ``True``: it may have run; ``None``: unknown).
    """

    request_sent: bool | None = None

    def __init__(
        self, message: str, *, node: str | None = None, request_sent: bool | None = None
    ) -> None:
        self.node = node
        self.request_sent = request_sent
        super().__init__(message)


class PoolExhaustedError(SmartConnectionError):
    """Every connection of the pool stayed in use for the whole wait.

    A :class:`~smartcache.exceptions.SmartConnectionError`, so also a
    ``redis.exceptions.ConnectionError``, as redis-py raises for a full pool.
    """


class SmartTimeoutError(SmartConnectionError, _rx.TimeoutError):
    """A node did not answer within the configured timeout."""


class NoReachableNodeError(SmartConnectionError):
    """None of the given addresses answered; ``addresses`` lists every one tried."""

    def __init__(self, message: str, *, addresses: Sequence[str] = ()) -> None:
        self.addresses = tuple(addresses)
        super().__init__(message)


class AmbiguousCommandError(SmartConnectionError):
    """The connection broke after a non-idempotent command was sent.

    The command may or may not have run on the server, so it was not re-sent.
    Pass ``retry_non_idempotent=True`` to the client to re-send such commands.
    """

    def __init__(
        self, message: str, *, command: str, node: str | None = None, attempts: int = 1
    ) -> None:
        self.command = command
        self.attempts = attempts
        super().__init__(message, node=node)


class CrossSlotError(SmartCacheError, _rx.ClusterCrossSlotError, _rx.RedisClusterException):
    """Keys of one atomic command or transaction hash to different slots.

    Also a ``redis.exceptions.RedisClusterException``: what redis-py's ``RedisCluster``
    raises before sending such a command (``MSET - all keys must map to the same key
    slot``), so the ``except`` clauses of code written for it keep working.
    """

    def __init__(
        self, message: str, *, command: str | None = None, slots: Sequence[int] = ()
    ) -> None:
        self.command = command
        self.slots = tuple(slots)
        super().__init__(message)


class ClusterUnavailableError(SmartCacheError, _rx.ClusterDownError):
    """The cluster kept refusing a command (CLUSTERDOWN, uncovered slot) past the deadline."""

    def __init__(
        self,
        message: str,
        *,
        command: str | None = None,
        slot: int | None = None,
        attempts: int = 0,
    ) -> None:
        self.command = command
        self.slot = slot
        self.attempts = attempts
        super().__init__(message)


class DurabilityError(SmartCacheError, _rx.ResponseError):
    """A write was applied on the primary but fewer replicas than asked acknowledged it.

    Raised with ``wait_replicas=N``: the write is not lost yet, but a failover now could lose
    it. ``replicas`` is how many acknowledged, ``wanted`` how many were asked for.
    """

    def __init__(self, message: str, *, command: str, replicas: int, wanted: int) -> None:
        self.command = command
        self.replicas = replicas
        self.wanted = wanted
        super().__init__(message)


class CacheInconsistencyError(SmartCacheError):
    """Write-through: the database write succeeded, but the cache could not be updated.

    The cache entries of ``keys`` may be stale until ``repair()`` deletes them; they are
    recorded for repair (in memory, and in the repair log when one is configured). Do not
    retry the database write because of this error: it is already committed.
    """

    def __init__(self, keys: Sequence[str], *, attempts: int = 0) -> None:
        self.keys = tuple(keys)
        self.attempts = attempts
        shown = ", ".join(self.keys[:5])
        if len(self.keys) > 5:
            shown += f" (+{len(self.keys) - 5} more)"
        super().__init__(
            f"the database is written, but the cache could not be updated after {attempts} "
            f"attempt(s); the entries of {shown} may be stale until repair() deletes them "
            "(they are recorded for repair)"
        )


class FlushTimeoutError(SmartCacheError, TimeoutError):
    """Write-behind: queued changes did not reach the store within the timeout.

    Nothing is dropped: the changes stay in their Redis streams and flushers keep working
    on them. ``partitions`` lists the partitions that still held this writer's changes.
    """

    def __init__(self, message: str, *, partitions: Sequence[int] = ()) -> None:
        self.partitions = tuple(partitions)
        super().__init__(message)


class StaleWriteError(SmartCacheError):
    """A store refused versioned writes older than its tombstone horizon to keys it holds
    no row for: the tombstone that would have made them lose may have been purged, so
    applying them could bring a deleted key back. Nothing of the batch was applied.

    ``keys`` lists the refused keys. A write-behind flusher retries the batch item by item
    and, after ``max_attempts``, moves these changes to the dead letters (replay them with
    a new version if they are still wanted).
    """

    def __init__(self, keys: Sequence[str], *, horizon: str) -> None:
        self.keys = tuple(keys)
        self.horizon = horizon
        shown = ", ".join(self.keys[:5]) + (
            f" (+{len(self.keys) - 5} more)" if len(self.keys) > 5 else ""
        )
        super().__init__(
            f"writes to {shown} are older than the store's tombstone horizon (version "
            f"{horizon}) and those keys have no row: a purged delete may be newer, so they "
            "were not applied (re-write them with a new version if they are still wanted)"
        )
