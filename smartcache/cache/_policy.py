"""Expiry policies: TTL with jitter and XFetch probabilistic early refresh.

Pure: the clock value and the random source are parameters, so every decision is testable
with a fake clock and a seeded ``random.Random``.
"""

from __future__ import annotations

import math
from typing import Protocol

__all__ = ["RandomSource", "jittered_ttl_ms", "should_refresh_early"]


class RandomSource(Protocol):
    """The part of :class:`random.Random` the policies use."""

    def random(self) -> float:
        """A float in [0, 1)."""
        ...

    def uniform(self, a: float, b: float) -> float:
        """A float between ``a`` and ``b``."""
        ...


def jittered_ttl_ms(ttl: float, jitter: float, rng: RandomSource) -> int:
    """``ttl`` plus a uniform ``[0, jitter]`` offset, in whole milliseconds (at least 1).

    Spreading expiries over the window stops keys written together from expiring together
    (the avalanche problem).
    """
    if ttl <= 0:
        raise ValueError("ttl must be positive")
    if jitter < 0:
        raise ValueError("jitter must not be negative")
    extra = rng.uniform(0.0, jitter) if jitter else 0.0
    return max(1, round((ttl + extra) * 1000))


def should_refresh_early(
    now: float, expiry: float, delta: float, beta: float, rng: RandomSource
) -> bool:
    """XFetch (Vattani et al., "Optimal Probabilistic Cache Stampede Prevention", 2015).

    Refresh when ``now - delta * beta * ln(U) >= expiry`` with ``U`` uniform in (0, 1]:
    ``delta`` is how long a recomputation takes, ``beta`` > 1 refreshes earlier. Far from
    expiry the probability is negligible; it grows exponentially as expiry approaches, so
    under steady reads one reader refreshes shortly before expiry and nobody sees a miss.
    All times in the same unit (seconds or milliseconds).
    """
    if now >= expiry:
        return True
    if delta <= 0 or beta <= 0:
        return False
    u = 1.0 - rng.random()  # (0, 1]: log(0) is undefined
    return now - delta * beta * math.log(u) >= expiry
