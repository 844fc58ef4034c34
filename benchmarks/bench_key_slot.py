"""Per-key cost of smartcache.key_slot against redis.crc.key_slot (same run, same keys).

    .venv/bin/python -m benchmarks.bench_key_slot

redis-py's key_slot takes bytes only (its callers encode first), so it is timed twice: on
pre-encoded bytes (its own hot path) and with redis-py's Encoder in front (what a str key
costs through redis-py). Goal: smartcache.key_slot not slower.
"""

from __future__ import annotations

import random
import statistics
import timeit

from redis._parsers.encoders import Encoder
from redis.crc import key_slot as redis_key_slot

from smartcache import key_slot


def _keys(n: int = 10_000) -> tuple[list[str], list[bytes]]:
    rng = random.Random(42)
    keys = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            keys.append(f"user:{rng.randrange(10**6)}:profile")
        elif kind == 1:
            keys.append(f"user:{{{rng.randrange(10**6)}}}:orders")
        elif kind == 2:
            keys.append(f"session:{rng.getrandbits(64):x}")
        else:
            keys.append(f"cache:v1:{rng.getrandbits(128):x}")
    return keys, [k.encode() for k in keys]


def _best(stmt: object, repeat: int = 7) -> float:
    return min(timeit.repeat(stmt, number=1, repeat=repeat))  # type: ignore[arg-type]


def run() -> list[tuple[str, float, float, float]]:
    """Return rows (case, smartcache ns/key, redis-py ns/key, ratio redis/smartcache)."""
    keys, raw = _keys()
    enc = Encoder("utf-8", "strict", False).encode
    n = len(keys)
    rows = []
    cases = [
        (
            "bytes keys",
            lambda: [key_slot(k) for k in raw],
            lambda: [redis_key_slot(k) for k in raw],
        ),
        (
            "str keys",
            lambda: [key_slot(k) for k in keys],
            lambda: [redis_key_slot(enc(k)) for k in keys],
        ),
    ]
    for name, ours, theirs in cases:
        ratios = []
        t_ours = t_theirs = 0.0
        for _ in range(5):
            t_ours = _best(ours)
            t_theirs = _best(theirs)
            ratios.append(t_theirs / t_ours)
        rows.append((name, t_ours / n * 1e9, t_theirs / n * 1e9, statistics.median(ratios)))
    return rows


def main() -> None:
    print(f"{'case':<12} {'smartcache ns/key':>18} {'redis-py ns/key':>16} {'speed-up':>9}")
    for name, ours, theirs, ratio in run():
        print(f"{name:<12} {ours:>18.0f} {theirs:>16.0f} {ratio:>8.2f}x")


if __name__ == "__main__":
    main()
