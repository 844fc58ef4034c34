"""The one reviewed allow-list of known divergences (``allowlist.toml``).

An entry names a method (or an ``fnmatch`` pattern), optional filters on where it applies,
and the reason. It works like a strict xfail: a case an entry covers that no longer
diverges fails the check, so the list can only shrink. No entry depends on redis-py's
version: where a divergence shows only with some redis-py releases, the entry probes the
clients' behaviour instead (``reference_raises``, ``candidate_raises``).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import tomllib
from pathlib import Path
from typing import Any

PATH = Path(__file__).with_name("allowlist.toml")
FILTERS = ("topology", "client", "autopipeline", "protocol", "decode", "server")


@dataclasses.dataclass(frozen=True)
class Entry:
    #: a method name or ``fnmatch`` pattern, or a list of them (one root cause, one entry)
    method: str | tuple[str, ...]
    reason: str
    topology: str | None = None
    client: str | None = None
    autopipeline: bool | None = None
    protocol: int | None = None
    decode: bool | None = None
    #: "valkey" or "redis": only against that server
    server: str | None = None
    #: only where the reference raises this exception class (its ``__name__``)
    reference_raises: str | None = None
    #: only where the candidate raises this exception class (its ``__name__``)
    candidate_raises: str | None = None

    def covers(self, method: str, where: dict[str, Any]) -> bool:
        patterns = (self.method,) if isinstance(self.method, str) else self.method
        if not any(fnmatch.fnmatchcase(method, p) for p in patterns):
            return False
        return all(getattr(self, f) is None or getattr(self, f) == where.get(f) for f in FILTERS)

    def probe(self, reference: Any, candidate: Any) -> bool:
        """Whether the clients behave as the entry says they must for it to apply."""
        return _raises(reference, self.reference_raises) and _raises(
            candidate, self.candidate_raises
        )


def _raises(value: Any, name: str | None) -> bool:
    if name is None:
        return True
    return isinstance(value, BaseException) and type(value).__name__ == name


def load(path: Path = PATH) -> list[Entry]:
    data = tomllib.loads(path.read_text())
    entries = []
    known = {f.name for f in dataclasses.fields(Entry)}
    for raw in data.get("divergence", []):
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"{path.name}: unknown fields {sorted(unknown)} in {raw}")
        if not raw.get("reason", "").strip():
            raise ValueError(f"{path.name}: an entry without a reason: {raw}")
        fields = dict(raw)
        if isinstance(fields["method"], list):
            fields["method"] = tuple(fields["method"])
        entries.append(Entry(**fields))
    return entries
