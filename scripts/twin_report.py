"""Count the lines that sync and async twins still share (generated twins excluded).

Two measures per pair of hand-written twins (``asyncio/x.py`` ~ ``sync/x.py``, and the
cache's ``_x_async.py`` ~ ``_x.py``):

- ``runs``: lines of the async file inside runs of 6 or more consecutive identical lines
  (stripped, blank lines ignored) that stand in the sync file too: copied code, as the
  ``duplicates`` tool and issue 12 count it;
- ``lines``: every stripped line longer than 3 characters (comments aside) found in both
  files (multiset intersection): the stricter count, which includes imports, signatures of
  same-named primitives and ``try:``/``return`` lines.

Generated twins (their first lines say "Generated") are left out: CI checks them against
their source instead.

    python scripts/twin_report.py            # table, totals on the last line
    python scripts/twin_report.py --max 150  # exit 1 when the runs total is above 150
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


def _code(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


def _in_runs(a: list[str], b: list[str], min_run: int = 6) -> int:
    """How many lines of ``a`` lie in runs of ``min_run``+ consecutive lines also in ``b``."""
    at: dict[str, list[int]] = {}
    for j, line in enumerate(b):
        at.setdefault(line, []).append(j)
    covered: set[int] = set()
    for i, line in enumerate(a):
        for j in at.get(line, ()):
            if i and j and a[i - 1] == b[j - 1]:
                continue  # not the start of a run
            n = 0
            while i + n < len(a) and j + n < len(b) and a[i + n] == b[j + n]:
                n += 1
            if n >= min_run:
                covered.update(range(i, i + n))
    return len(covered)


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
    runs_total = lines_total = 0
    print(" runs  lines  pair")
    for a, s in pairs():
        if _generated(s) or _generated(a):
            continue
        shared = sum((_lines(a) & _lines(s)).values())
        runs = _in_runs(_code(a), _code(s))
        runs_total += runs
        lines_total += shared
        print(f"{runs:5d} {shared:6d}  {a.relative_to(ROOT)} ~ {s.relative_to(ROOT)}")
    print(f"{runs_total:5d} {lines_total:6d}  total")
    if args.max is not None and runs_total > args.max:
        print(f"{runs_total} lines in copied runs, above the limit of {args.max}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
