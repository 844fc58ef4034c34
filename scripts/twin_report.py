"""Count the lines that sync and async twins still share (generated twins excluded).

A line counts when, stripped, it is longer than 3 characters and appears in both
files of a pair (multiset intersection). Generated twins (their first lines say
"Generated") are left out: CI checks them against their source instead.

    python scripts/twin_report.py            # table, total on the last line
    python scripts/twin_report.py --max 150  # exit 1 when the total is above 150
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "smartcache"
EXTRA_PAIRS = [
    ("cache/_async.py", "cache/_sync.py"),
    ("cache/_write_behind_async.py", "cache/_write_behind.py"),
]


def _lines(path: Path) -> Counter[str]:
    out: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        s = line.strip()
        if len(s) > 3 and not s.startswith("#"):
            out[s] += 1
    return out


def _generated(path: Path) -> bool:
    head = path.read_text().splitlines()[:5]
    return any("Generated" in h for h in head)


def pairs() -> list[tuple[Path, Path]]:
    found = []
    for a in sorted((ROOT / "asyncio").glob("*.py")):
        s = ROOT / "sync" / a.name
        if s.exists():
            found.append((a, s))
    for a, s in EXTRA_PAIRS:
        if (ROOT / a).exists() and (ROOT / s).exists():
            found.append((ROOT / a, ROOT / s))
    for a in sorted(ROOT.glob("**/*_async.py")):  # cache/_x_async.py ~ cache/_x.py
        s = a.with_name(a.name.removesuffix("_async.py") + ".py")
        if (
            s.exists()
            and (a.relative_to(ROOT).as_posix(), s.relative_to(ROOT).as_posix()) not in EXTRA_PAIRS
        ):
            found.append((a, s))
    return found


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--max", type=int, default=None)
    args = p.parse_args()
    total = 0
    for a, s in pairs():
        if _generated(s) or _generated(a):
            continue
        shared = sum((_lines(a) & _lines(s)).values())
        total += shared
        print(f"{shared:5d}  {a.relative_to(ROOT)} ~ {s.relative_to(ROOT)}")
    print(f"{total:5d}  total")
    if args.max is not None and total > args.max:
        print(f"above the limit of {args.max}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
