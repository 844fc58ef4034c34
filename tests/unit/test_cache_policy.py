from __future__ import annotations

import random

import pytest

from smartcache.cache._policy import jittered_ttl_ms, should_refresh_early


def test_jitter_is_uniform_over_the_window() -> None:
    rng = random.Random(7)
    ttls = [jittered_ttl_ms(60, 30, rng) for _ in range(30_000)]
    assert min(ttls) >= 60_000 and max(ttls) <= 90_000
    buckets = [0] * 10
    for t in ttls:
        buckets[min((t - 60_000) // 3_000, 9)] += 1
    expected = len(ttls) / 10
    chi2 = sum((b - expected) ** 2 / expected for b in buckets)
    assert chi2 < 27.88  # chi-square, 9 degrees of freedom, p = 0.001


def test_no_jitter_and_bad_input() -> None:
    assert jittered_ttl_ms(1.5, 0, random.Random()) == 1500
    with pytest.raises(ValueError):
        jittered_ttl_ms(0, 1, random.Random())
    with pytest.raises(ValueError):
        jittered_ttl_ms(1, -1, random.Random())


class FixedRng:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value

    def uniform(self, a: float, b: float) -> float:
        return a


def test_xfetch_decision_formula() -> None:
    # now - delta*beta*ln(1-r) >= expiry ; with r=0.5: ln(0.5) ~ -0.693
    assert should_refresh_early(100, 200, 100, 2.0, FixedRng(0.5))  # 100 + 138.6 >= 200
    assert not should_refresh_early(100, 200, 100, 1.0, FixedRng(0.5))  # 100 + 69.3 < 200
    assert should_refresh_early(200, 200, 0, 1.0, FixedRng(0.0))  # expired: always
    assert not should_refresh_early(199, 200, 0, 1.0, FixedRng(0.999))  # no delta: never early
    should_refresh_early(0, 10, 1, 1, FixedRng(0.0))  # u=1 -> log 0 never evaluated


def test_xfetch_probability_grows_towards_expiry() -> None:
    rng = random.Random(3)

    def rate(remaining: float) -> float:
        hits = sum(should_refresh_early(1000 - remaining, 1000, 50, 1.0, rng) for _ in range(5000))
        return hits / 5000

    far, mid, near = rate(500), rate(100), rate(10)
    assert far < 0.001 < mid < near
    assert abs(mid - 0.1353) < 0.03  # exp(-100/50)
