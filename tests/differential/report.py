"""Coverage and divergences of the differential check: collected while the tests run,
printed at the end of the pytest run and written to ``.smartcache/differential-report.json``.
"""

from __future__ import annotations

import collections
import dataclasses
import json
from pathlib import Path
from typing import Any

import redis

from tests.differential.methods import client_plumbing, command_methods
from tests.differential.runner import DIVERGES, SAME, SKIPPED, Result

ROOT = Path(__file__).resolve().parents[2]
REPORT = ROOT / ".smartcache" / "differential-report.json"

RESULTS: list[Result] = []
SERVER: dict[str, str] = {}


def record(results: list[Result], flavor: str, version: str) -> None:
    RESULTS.extend(results)
    SERVER.update(flavor=flavor, version=version)


def _category(reason: str) -> str:
    """``"server lacks X"`` -> ``"server lacks"``: the part before the specifics."""
    for sep in (":", " ("):
        reason = reason.split(sep, maxsplit=1)[0]
    if reason.startswith("server lacks module"):
        return "server lacks module"
    if reason.startswith("server lacks"):
        return "server lacks command"
    return reason


#: a method skipped for several reasons (per topology) is counted under the first of these
_PRIORITY = [
    "excluded",
    "server lacks command",
    "server lacks module",
    "sentinel",
    "reference lacks it",
]


def _rank(category: str) -> int:
    return _PRIORITY.index(category) if category in _PRIORITY else len(_PRIORITY)


def summary() -> dict[str, Any]:
    methods = command_methods()
    by_method: dict[str, list[Result]] = collections.defaultdict(list)
    for r in RESULTS:
        by_method[r.method].append(r)
    exercised = sorted(m for m, rs in by_method.items() if any(r.status != SKIPPED for r in rs))
    skipped = {
        m: sorted({r.note for r in rs})
        for m, rs in by_method.items()
        if all(r.status == SKIPPED for r in rs)
    }
    errors_only = sorted(
        m for m in exercised if all(r.reference_raised for r in by_method[m] if r.status != SKIPPED)
    )
    categories = collections.Counter(
        min((_category(r) for r in reasons), key=_rank) for reasons in skipped.values()
    )
    divergences = [dataclasses.asdict(r) for r in RESULTS if r.status == DIVERGES]
    stale = [dataclasses.asdict(r) for r in RESULTS if r.stale]
    combos = sorted({r.combo for r in RESULTS})
    per_combo = {
        c: dict(collections.Counter(r.status for r in RESULTS if r.combo == c)) for c in combos
    }
    return {
        "redis_py": redis.__version__,
        "server": dict(SERVER),
        "combos": per_combo,
        "methods_redis_py_has": len(methods),
        "methods_exercised": len(exercised),
        "methods_skipped": len(skipped),
        "skipped_by_category": dict(sorted(categories.items())),
        "skipped": skipped,
        "exercised": exercised,
        #: exercised, but the reference raised in every combination (an error path)
        "exercised_error_reply_only": errors_only,
        "overridden": sorted(
            {r.method for r in RESULTS if r.status != SKIPPED and r.note != "generated"}
        ),
        "client_plumbing_not_enumerated": client_plumbing(),
        "divergences_allowed": [d for d in divergences if d["allowed_by"]],
        "divergences_unexpected": [d for d in divergences if not d["allowed_by"]],
        "allowlist_stale": stale,
        "same": sum(r.status == SAME for r in RESULTS),
    }


def lines() -> list[str]:
    if not RESULTS:
        return []
    s = summary()
    out = [
        f"redis-py {s['redis_py']}, server {s['server'].get('flavor')} "
        f"{s['server'].get('version')}, {len(s['combos'])} client/variant combinations",
        f"coverage: {s['methods_exercised']} of {s['methods_redis_py_has']} methods redis-py "
        f"has exercised ({len(s['exercised_error_reply_only'])} of them on an error reply "
        f"only); {s['methods_skipped']} skipped: "
        + ", ".join(f"{k} {v}" for k, v in s["skipped_by_category"].items()),
    ]
    for kind in ("divergences_unexpected", "divergences_allowed"):
        grouped: dict[str, list[str]] = collections.defaultdict(list)
        for d in s[kind]:
            grouped[d["method"]].append(d["combo"])
        out.append(f"{kind.replace('_', ' ')}: {len(grouped)} methods")
        for d in {d["method"]: d for d in s[kind]}.values():
            combos = grouped[d["method"]]
            out.append(
                f"  {d['method']} [{len(combos)} combos, e.g. {combos[0]}]: "
                f"redis-py {d['reference']} | smartcache {d['candidate']}"
            )
    if s["allowlist_stale"]:
        out.append(f"stale allow-list entries (no longer diverging): {len(s['allowlist_stale'])}")
        for d in s["allowlist_stale"][:20]:
            out.append(f"  {d['method']} [{d['combo']}]: {d['stale']}")
    out.append(f"report: {REPORT.relative_to(ROOT)}")
    return out


def write() -> None:
    if not RESULTS:
        return
    REPORT.parent.mkdir(exist_ok=True)
    REPORT.write_text(json.dumps(summary(), indent=1, sort_keys=True) + "\n")
