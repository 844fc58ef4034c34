"""Generate the sync twins of asyncio modules that differ from them only by ``await``.

The async file is the source; the sync file is written from it by the substitutions below,
applied line by line, in order, and committed. ``--check`` (run by ``make test`` and
``make lint``) fails when a generated file differs from what its source gives, or when a
substitution is used by no file (a rule nobody needs is a rule that hides a mistake), as
httpcore's ``scripts/unasync.py`` does. See docs/architecture.md.

    python scripts/unasync.py           # write the sync files
    python scripts/unasync.py --check   # verify them
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: (async source, generated sync file)
FILES: list[tuple[str, str]] = [
    ("smartcache/asyncio/_client_base.py", "smartcache/sync/_client_base.py"),
    ("smartcache/asyncio/_cluster.py", "smartcache/sync/_cluster.py"),
    ("smartcache/asyncio/_pipeline.py", "smartcache/sync/_pipeline.py"),
    ("smartcache/asyncio/_pubsub_base.py", "smartcache/sync/_pubsub_base.py"),
    ("smartcache/asyncio/_sentinel_exec.py", "smartcache/sync/_sentinel_exec.py"),
    ("smartcache/asyncio/_sentinel_probe.py", "smartcache/sync/_sentinel_probe.py"),
    ("smartcache/asyncio/_sentinel.py", "smartcache/sync/_sentinel.py"),
    ("smartcache/asyncio/_sentinel_replicas.py", "smartcache/sync/_sentinel_replicas.py"),
    ("smartcache/cache/_async.py", "smartcache/cache/_sync.py"),
    ("smartcache/cache/_write_behind_async.py", "smartcache/cache/_write_behind.py"),
]

#: (pattern, replacement), applied in order to every line
SUBS: list[tuple[str, str]] = [
    # the sync twin says what it is
    (r"the asyncio driver", "the sync driver"),
    (r"with short timeouts \(asyncio\)", "with short timeouts (sync)"),
    (
        r"^``smartcache/sync/(\w+)\.py`` is generated from this file "
        r"\(``scripts/unasync\.py``\)\.$",
        r"Generated from ``smartcache/asyncio/\1.py`` by ``scripts/unasync.py``: edit that file.",
    ),
    (r"``redis\.asyncio``'s Pipeline API", "redis-py's ``Pipeline`` API"),
    # syntax
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"Literal\[True\] = True", "Literal[False] = False"),
    (r"  # type: ignore\[misc\]  # redis-py's own async mixins disagree on command_info", ""),
    (r"  # type: ignore\[override\]  # awaitable, as redis\.asyncio", ""),
    (r"  # type: ignore\[override\]  # an async iterator, as redis\.asyncio", ""),
    (r"Selects the awaitable overloads", "Selects the synchronous overloads"),
    (r"\basync def\b", "def"),
    (r"\basync with\b", "with"),
    (r"\bawait ", ""),
    # modules and names
    (r"\bsmartcache\.asyncio\.", "smartcache.sync."),
    (r"\bredis\.asyncio\.cluster\b", "redis.cluster"),
    (r"\bredis\.asyncio\.(\w)", r"redis.\1"),
    (
        r"\bAsync(SentinelState|SentinelExecutor|ConnectionPool|Connection|ClusterState"
        r"|ClusterRouter|Pipeline|SmartClient|RedisModuleCommands|CoreCommands"
        r"|SentinelCommands|ClientBase|KeyspaceNotifications)\b",
        r"\1",
    ),
    (r"\bAsync(ReplicaSet|SentinelWatcher)\b", r"\1"),
    (r"\baclose\(", "close("),
    # the cache: one Cache has both engines, so the async names carry an ``a``
    (r"\bAsyncEngine\b", "SyncEngine"),
    (r"\bAsync(LeaseLock|SingleFlight|Flusher|WriteBehind|RedisLike)\b", r"\1"),
    (
        r"\b(_?)a(get_or_load|degraded|fill|fill_locked|store|refresh|refresh_job|refreshes"
        r"|peek|invalidate|invalidate_tag|wait_refreshes|flight|lease|lock|reads)\b",
        r"\1\2",
    ),
    # primitives that come in pairs
    (r"^import asyncio\n$", ""),
    (r"\basyncio\.sleep\(", "time.sleep("),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"^from asyncio import Lock$", "from threading import Lock"),
    (r"\bsmartcache\.cache\._primitives_async\b", "smartcache.cache._primitives"),
]

HEADER = "# Generated from {source} by scripts/unasync.py: do not edit.\n"


def unasync_text(text: str, source: str, used: set[int]) -> str:
    out = [HEADER.format(source=source)]
    for original in text.splitlines(keepends=True):
        line = original
        for i, (pattern, replacement) in enumerate(SUBS):
            new = re.sub(pattern, replacement, line)
            if new != line:
                used.add(i)
                line = new
        out.append(line)
    return "".join(out)


def tidy(text: str, target: str) -> str:
    """Sort the imports and format as the project's ruff settings say (dropping ``await``
    shortens lines, and sync names sort differently), so generated files stay lint-clean."""
    for cmd in (
        ["check", "--fix", "--select", "I", "--quiet", "--exit-zero"],
        ["format", "--quiet"],
    ):
        text = subprocess.run(
            [sys.executable, "-m", "ruff", *cmd, "--stdin-filename", target, "-"],
            input=text,
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="verify, do not write")
    args = parser.parse_args(argv)
    used: set[int] = set()
    stale: list[str] = []
    for source, target in FILES:
        generated = tidy(unasync_text((ROOT / source).read_text(), source, used), target)
        path = ROOT / target
        current = path.read_text() if path.exists() else None
        if current == generated:
            continue
        if args.check:
            stale.append(target)
        else:
            path.write_text(generated)
            print(f"wrote {target}")
    unused = [SUBS[i][0] for i in range(len(SUBS)) if i not in used]
    if stale:
        print(
            "generated files differ from their async source (run `python scripts/unasync.py`"
            f" and commit): {', '.join(stale)}",
            file=sys.stderr,
        )
    if unused:
        print(f"substitutions no file uses (remove them): {unused}", file=sys.stderr)
    return 1 if stale or unused else 0


if __name__ == "__main__":
    raise SystemExit(main())
