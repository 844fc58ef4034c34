"""Operations on a live deployment: ``smartcache doctor`` as a Python API.

``diagnose(url)`` reads a standalone server, a Sentinel-managed primary
(``redis+sentinel://``) or a cluster (any node's URL), checks it against the production
checklist and returns a :class:`Report`: one :class:`Finding` per check and node, each
with its :class:`Status`, the measured value, why it matters and the exact fix. Read-only:
``INFO``, ``CONFIG GET``, ``SLOWLOG``, ``CLUSTER NODES``, the Sentinel queries and a
rate-limited ``SCAN`` sample; never ``KEYS``, never a blocking command.

:class:`Resharder` moves slots between the primaries of a live cluster (``plan_reshard``,
``plan_rebalance`` by slots or by measured memory, ``run``, ``resume``), safe under
traffic and resumable after an interruption; ``close_open_slots`` and ``cover_slots``
are the fixes ``smartcache doctor --fix`` offers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smartcache.ops._checks import CHECKS, run_checks
from smartcache.ops._collect import Progress, collect
from smartcache.ops._facts import Facts, Finding, Status
from smartcache.ops._plan import Move
from smartcache.ops._reshard import Resharder, ReshardError, ReshardProgress

__all__ = [
    "Facts",
    "Finding",
    "Move",
    "Report",
    "ReshardError",
    "ReshardProgress",
    "Resharder",
    "Status",
    "diagnose",
]


@dataclass(frozen=True, slots=True)
class Report:
    """What ``diagnose`` found."""

    facts: Facts
    findings: list[Finding]

    @property
    def status(self) -> Status:
        """The worst status found (``pass`` when nothing was checked)."""
        return max((f.status for f in self.findings), key=lambda s: s.rank, default=Status.PASS)

    def exit_code(self, *, strict: bool = False) -> int:
        """0 all pass; 2 any fail; 1 any warn when ``strict`` (else warnings give 0)."""
        worst = self.status
        if worst is Status.FAIL:
            return 2
        return 1 if strict and worst is Status.WARN else 0

    def by_status(self, status: Status) -> list[Finding]:
        """The findings with ``status``."""
        return [f for f in self.findings if f.status is status]

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready summary and every finding."""
        counts = {s.value: len(self.by_status(s)) for s in Status}
        f = self.facts
        return {
            "target": f.target,
            "kind": f.kind,
            "status": self.status.value,
            "counts": counts,
            "nodes": [n.address for n in f.nodes],
            "sentinels": [s.address for s in f.sentinels],
            "sampled_keys": f.sampled,
            "keys": f.keys_total,
            "sample_complete": f.sample_complete,
            "seconds": round(f.seconds, 3),
            "findings": [x.as_dict() for x in self.findings],
        }


def diagnose(
    url: str,
    *,
    sample: int = 1000,
    max_seconds: float = 60.0,
    scan_rate: float = 5000.0,
    timeout: float = 5.0,
    progress: Progress | None = None,
    **client_kwargs: Any,
) -> Report:
    """Check the deployment at ``url`` against the production checklist.

    ``sample``: keys to sample for the data-layout checks (0: none); ``max_seconds``:
    bound on the sampling; ``scan_rate``: keys per second SCAN may walk per primary;
    ``timeout``: seconds per command; ``progress(done, total)``: called as keys are
    sampled. ``client_kwargs`` (``password=``, ``ssl_ca_certs=``...) go to every
    connection, as a client takes them.
    """
    facts = collect(
        url,
        sample=sample,
        max_seconds=max_seconds,
        scan_rate=scan_rate,
        timeout=timeout,
        progress=progress,
        **client_kwargs,
    )
    return Report(facts, run_checks(facts, CHECKS))
