"""The topology log: one structured line per topology event, never per command.

Logger ``smartcache.topology`` at INFO (a periodic refresh that changed nothing at DEBUG).
Each record carries the event's fields as ``record.smartcache`` (a dict: ``event`` plus
the fields), for handlers that emit JSON; the message spells them as ``key=value``.
Addresses only: no credentials ever reach these lines.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from smartcache.core.stats import Counters

__all__ = ["log_topology", "sentinel_listener", "topology_log"]

topology_log = logging.getLogger("smartcache.topology")


def log_topology(event: str, *, level: int = logging.INFO, **fields: Any) -> None:
    """Log ``event`` with ``fields`` (cheap when the level is off)."""
    if not topology_log.isEnabledFor(level):
        return
    text = " ".join(f"{k}={v}" for k, v in fields.items())
    topology_log.log(
        level, "smartcache %s %s", event, text, extra={"smartcache": {"event": event, **fields}}
    )


def sentinel_listener(counters: Counters, service: str) -> Callable[[str, Any], None]:
    """A Sentinel state listener that counts and logs what the client followed: the first
    primary, each switch to a new one (a failover followed), the time writes were held
    while a failover was reported, and changes of the replica set."""
    primary: list[str | None] = [None]
    held_since: list[float | None] = [None]

    def listen(kind: str, value: Any) -> None:
        if kind == "switch":
            old, primary[0] = primary[0], value
            if old is None:
                log_topology("sentinel.primary", service=service, address=value)
            elif old != value:
                counters.failed_over()
                log_topology("sentinel.failover", service=service, old=old, new=value)
        elif kind == "failover":
            writable = bool(getattr(value, "writable", True))
            if not writable and held_since[0] is None:
                held_since[0] = time.monotonic()
                log_topology("sentinel.writes_held", service=service)
            elif writable and held_since[0] is not None:
                seconds = time.monotonic() - held_since[0]
                held_since[0] = None
                counters.fenced(seconds)
                log_topology("sentinel.writes_resumed", service=service, held_s=round(seconds, 3))
        elif kind == "replicas":
            log_topology("sentinel.replicas", service=service, replicas=",".join(value))

    return listen
