"""The generated differential check: every command method redis-py has, against redis-py.

The methods are enumerated from the installed redis-py (``tests/differential``), called with
generated arguments through redis-py and through SmartClient / AsyncSmartClient on the same
servers, and compared by value, type and exception. By default each client pair runs once,
in one variant (rotated over RESP2/RESP3 x decode_responses); ``SMARTCACHE_DIFF_FULL=1``
(``make test-differential``) runs every pair in every variant. Known divergences live in
``tests/differential/allowlist.toml``; an entry that no longer diverges fails the check.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from smartcache.testing import Cluster, Standalone
from tests.differential import allowlist, report, runner
from tests.differential.recipes import A

pytestmark = [pytest.mark.dropin, pytest.mark.slow]

FULL = os.environ.get("SMARTCACHE_DIFF_FULL", "") not in ("", "0")
COMBOS = runner.FULL if FULL else runner.DEFAULT


@pytest.fixture(scope="module")
def servers(
    redis_standalone: Standalone, redis_cluster: Cluster
) -> Iterator[dict[str, runner.Servers]]:
    from smartcache import key_slot

    built = {
        "standalone": runner.Servers(
            redis_standalone.url, [redis_standalone.port], redis_standalone.port
        ),
        "cluster": runner.Servers(
            redis_cluster.url,
            [p.port for p in redis_cluster.primaries()],
            redis_cluster.primary_of_slot(key_slot(A)).port,
        ),
    }
    yield built
    for s in built.values():
        s.close()


def test_allowlist_loads() -> None:
    entries = allowlist.load()
    assert len({e.reason for e in entries}) == len(entries), "one entry per root cause"


@pytest.mark.parametrize("combo", COMBOS, ids=[c.id for c in COMBOS])
def test_differential(combo: runner.Combo, servers: dict[str, runner.Servers]) -> None:
    here = servers[combo.topology]
    results = runner.run(combo, here, allowlist.load())
    report.record(results, here.flavor, here.version)
    unexpected = [r for r in results if r.status == runner.DIVERGES and not r.allowed_by]
    stale = [r for r in results if r.stale]
    problems = [
        f"{r.method}: redis-py {r.reference} | smartcache {r.candidate}" for r in unexpected
    ] + [f"{r.method}: allow-listed but no longer diverges ({r.stale})" for r in stale]
    assert not problems, f"{len(problems)} problems in {combo.id}:\n" + "\n".join(problems)
