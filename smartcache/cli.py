"""The ``smartcache`` command: ``dev up|down`` for local topologies, and ``demo``.

``smartcache dev up cluster --primaries 3 --replicas 1`` starts real servers, prints their
URLs and stays up until Ctrl-C; ``smartcache dev down`` stops what ``up`` started, found
through a state file that records the PIDs (``$SMARTCACHE_DEV_STATE`` or
``~/.cache/smartcache/dev-state.json``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from smartcache.exceptions import SmartCacheError

__all__ = ["main"]


def state_path() -> Path:
    """Where ``dev up`` records what it started."""
    explicit = os.environ.get("SMARTCACHE_DEV_STATE")
    if explicit:
        return Path(explicit)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "smartcache" / "dev-state.json"


def _read_state(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return data if isinstance(data, list) else []


def _write_state(path: Path, entries: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(entries, indent=2))
    tmp.replace(path)


def _cmdline(pid: int) -> str:
    try:
        return (
            Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        )
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _dev_up(args: argparse.Namespace) -> int:
    from smartcache.testing import Cluster, SentinelGroup, Standalone  # noqa: PLC0415

    topology: Any
    if args.kind == "standalone":
        topology = Standalone(password=args.password)
    elif args.kind == "cluster":
        topology = Cluster(args.primaries, args.replicas, password=args.password)
    else:
        topology = SentinelGroup(
            args.replicas if args.replicas_given else 2, args.sentinels, password=args.password
        )
    topology.start()
    path = state_path()
    entry = {"up_pid": os.getpid(), "started": time.time(), **topology.describe()}
    entries = [e for e in _read_state(path) if _alive(int(e.get("up_pid", 0)))]
    _write_state(path, [*entries, entry])
    description = topology.describe()
    print(f"smartcache dev: {args.kind} up ({description['server']})")
    print(f"  url: {description['url']}")
    for key in ("startup_nodes", "sentinels"):
        if key in description:
            print(f"  {key}: {', '.join(description[key])}")
    print(f"  pids: {' '.join(map(str, description['pids']))}")
    print("Ctrl-C (or `smartcache dev down`) stops it.", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        topology.stop()
        _write_state(path, [e for e in _read_state(path) if e.get("up_pid") != os.getpid()])
        print("smartcache dev: stopped", flush=True)
    return 0


def _dev_down(_args: argparse.Namespace) -> int:
    path = state_path()
    entries = _read_state(path)
    if not entries:
        print("smartcache dev: nothing is up")
        return 0
    for entry in entries:
        up_pid = int(entry.get("up_pid", 0))
        if up_pid and _alive(up_pid) and "smartcache" in _cmdline(up_pid):
            os.kill(up_pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    server_pids = [int(p) for e in entries for p in e.get("pids", [])]
    while time.monotonic() < deadline and any(_alive(p) for p in server_pids):
        time.sleep(0.1)  # waiting on other processes' exit; no event to await across processes
    for pid in server_pids:
        # Only kill what still looks like one of our servers (PIDs can be reused).
        if _alive(pid) and ("server" in _cmdline(pid) or "sentinel" in _cmdline(pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        path.unlink()
    print(f"smartcache dev: stopped {len(entries)} topology(ies)")
    return 0


def _demo(_args: argparse.Namespace) -> int:
    from smartcache._demo import run_demo  # noqa: PLC0415

    return run_demo()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``smartcache`` command."""
    parser = argparse.ArgumentParser(prog="smartcache", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="local topologies for development")
    dev_sub = dev.add_subparsers(dest="action", required=True)
    up = dev_sub.add_parser("up", help="start a topology and stay up until Ctrl-C")
    up.add_argument("kind", choices=["standalone", "cluster", "sentinel"])
    up.add_argument("--primaries", type=int, default=3)
    up.add_argument("--replicas", type=int, default=None)
    up.add_argument("--sentinels", type=int, default=3)
    up.add_argument("--password", default=None, help="requirepass for the data nodes")
    up.set_defaults(func=_dev_up)
    down = dev_sub.add_parser("down", help="stop what `dev up` started")
    down.set_defaults(func=_dev_down)
    demo = sub.add_parser("demo", help="the product tour on local servers it starts itself")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``smartcache`` command."""
    args = build_parser().parse_args(argv)
    if getattr(args, "action", None) == "up":
        args.replicas_given = args.replicas is not None
        if args.replicas is None:
            args.replicas = 1
    try:
        return int(args.func(args))
    except SmartCacheError as exc:
        print(f"smartcache: error: {exc}", file=sys.stderr)
        return 2
