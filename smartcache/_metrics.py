"""The timed command path shared by the metrics back ends (OpenTelemetry, Prometheus).

Metrics on: ``instrument(client, recorder)`` shadows the client's ``execute_command`` with
a timed one (an instance attribute, so a client without metrics keeps the plain method and
pays nothing); pipelines ask ``client._telemetry`` (``None`` when off) themselves.
A recorder has ``record(name, seconds, error)`` and
``record_batch(transaction, size, seconds, error)``.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Sequence
from typing import Any, Protocol

__all__ = ["Fanout", "Recorder", "instrument"]


class Recorder(Protocol):
    """Where a timed operation goes."""

    def record(self, name: Any, seconds: float, error: BaseException | None) -> None: ...
    def record_batch(
        self, transaction: bool, size: int, seconds: float, error: BaseException | None
    ) -> None: ...


class Fanout:
    """Several recorders as one (OpenTelemetry and Prometheus both on)."""

    def __init__(self, recorders: Sequence[Recorder]) -> None:
        self._recorders = tuple(recorders)

    def record(self, name: Any, seconds: float, error: BaseException | None) -> None:
        """Hand the operation to each recorder."""
        for r in self._recorders:
            r.record(name, seconds, error)

    def record_batch(
        self, transaction: bool, size: int, seconds: float, error: BaseException | None
    ) -> None:
        """Hand the pipeline to each recorder."""
        for r in self._recorders:
            r.record_batch(transaction, size, seconds, error)


def instrument(client: Any, telemetry: Recorder) -> None:
    """Shadow ``client.execute_command`` (and its pipelines' ``execute``) with timed ones."""
    inner = client.execute_command
    record = telemetry.record
    clock = time.perf_counter
    if inspect.iscoroutinefunction(inner):

        async def execute_command_async(*args: Any, **options: Any) -> Any:
            start = clock()
            try:
                reply = await inner(*args, **options)
            except BaseException as exc:
                record(args[0], clock() - start, exc)
                raise
            record(args[0], clock() - start, None)
            return reply

        client.execute_command = execute_command_async
    else:

        def execute_command(*args: Any, **options: Any) -> Any:
            start = clock()
            try:
                reply = inner(*args, **options)
            except BaseException as exc:
                record(args[0], clock() - start, exc)
                raise
            record(args[0], clock() - start, None)
            return reply

        client.execute_command = execute_command
