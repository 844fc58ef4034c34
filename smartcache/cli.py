"""The ``smartcache`` command: ``dev up|down`` for local topologies, ``doctor``, ``flush-worker``,
``demo``.

``smartcache dev up cluster --primaries 3 --replicas 1`` starts real servers, prints their
URLs and stays up until Ctrl-C; ``smartcache dev down`` stops what ``up`` started, found
through a state file that records the PIDs (``$SMARTCACHE_DEV_STATE`` or
``~/.cache/smartcache/dev-state.json``).

``smartcache flush-worker URL --store SPEC`` runs a write-behind flusher process: it moves
the changes queued by ``WriteBehind`` into the store until SIGTERM or Ctrl-C. ``SPEC`` is
``sqlite:///path/to/app.db``, any SQLAlchemy URL (``postgresql+psycopg://...``), or
``package.module:factory`` (a callable returning a store, or the store object itself).

``smartcache doctor URL`` checks a live deployment against the production checklist
(:mod:`smartcache.ops`): a table (``--json`` for machines), exit code 0/1/2.
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
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from smartcache.exceptions import ConfigurationError, SmartCacheError

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
        remaining = [e for e in _read_state(path) if e.get("up_pid") != os.getpid()]
        if remaining:
            _write_state(path, remaining)
        else:  # never re-create a file `dev down` removed meanwhile
            with contextlib.suppress(OSError):
                path.unlink()
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


def load_store(spec: str, *, table: str = "smartcache_store") -> Any:
    """The store named by ``spec`` (see the module docstring)."""
    from smartcache.exceptions import InvalidArgumentError  # noqa: PLC0415

    if spec.startswith("sqlite:"):
        from smartcache.cache import SQLiteStore  # noqa: PLC0415

        # sqlite:///abs/app.db (absolute) or sqlite:app.db (relative to the working directory)
        path = spec.removeprefix("sqlite:").removeprefix("//")
        if not path:
            raise InvalidArgumentError(f"--store {spec!r} names no file: sqlite:///path/app.db")
        return SQLiteStore(path, table=table)
    if "://" in spec:
        from smartcache.cache import SQLAlchemyStore  # noqa: PLC0415

        return SQLAlchemyStore(spec, table=table)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise InvalidArgumentError(
            f"--store {spec!r} is not understood: give sqlite:///path/app.db, a SQLAlchemy URL, "
            "or package.module:factory"
        )
    import importlib  # noqa: PLC0415

    try:
        target = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise InvalidArgumentError(f"--store {spec!r}: cannot import it ({exc})") from exc
    if isinstance(target, type) or not hasattr(target, "write_many"):
        target = target()  # a class or a factory function
    return target


def _flush_worker(args: argparse.Namespace) -> int:
    from smartcache.cache import FlushOptions, QueueLayout  # noqa: PLC0415
    from smartcache.cache._write_behind import Flusher  # noqa: PLC0415
    from smartcache.sync.client import SmartClient  # noqa: PLC0415

    store = load_store(args.store, table=args.table)
    client = SmartClient.from_url(args.url)
    layout = QueueLayout(args.name, args.namespace, args.partitions, args.group)
    options = FlushOptions(
        batch_size=args.batch_size, claim_idle=args.claim_idle, max_attempts=args.max_attempts
    )
    flusher = Flusher(
        client,
        store,
        layout,
        options,
        poll_interval=args.poll_interval,
        serializer=args.serializer,
    )
    stop = threading.Event()

    def on_signal(_signum: int, _frame: Any) -> None:
        stop.set()
        flusher.kick()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    print(
        f"smartcache flush-worker: queue {layout.name!r} ({layout.partitions} partitions) "
        f"-> {store!r}, consumer {flusher.state.consumer}",
        flush=True,
    )
    try:
        flusher.run(stop)
    finally:
        client.close()
        close = getattr(store, "close", None)
        if callable(close):
            close()
    print(f"smartcache flush-worker: stopped; {flusher.stats.snapshot()}", flush=True)
    return 0


def _password_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """``{"password": ...}`` from ``--password-env VAR`` (the ops commands), else ``{}``."""
    name = getattr(args, "password_env", None)
    if not name:
        return {}
    if name not in os.environ:
        raise ConfigurationError(f"--password-env {name}: that environment variable is not set")
    return {"password": os.environ[name]}


def _doctor(args: argparse.Namespace) -> int:
    from smartcache.ops import diagnose  # noqa: PLC0415
    from smartcache.ops._render import render_json, render_table  # noqa: PLC0415

    kwargs = _password_kwargs(args)
    color = args.color == "always" or (args.color == "auto" and sys.stdout.isatty())
    with _progress_bar(enabled=not args.json and sys.stderr.isatty()) as progress:
        report = diagnose(
            args.url,
            sample=args.sample,
            max_seconds=args.max_seconds,
            scan_rate=args.scan_rate,
            timeout=args.timeout,
            progress=progress,
            **kwargs,
        )
    if args.json:
        render_json(report, sys.stdout)
    else:
        render_table(report, sys.stdout, color=color, verbose=args.verbose)
    if args.fix:
        return _doctor_fix(args, report, kwargs)
    return report.exit_code(strict=args.strict)


def _doctor_fix(args: argparse.Namespace, report: Any, kwargs: dict[str, Any]) -> int:
    """The safe fixes: close open slots, give unserved slots to a primary."""
    from smartcache.ops import Resharder, Status  # noqa: PLC0415

    wanted = {f.check for f in report.findings if f.status in (Status.WARN, Status.FAIL)} & {
        "cluster.open_slots",
        "cluster.slots",
    }
    if not wanted:
        print("--fix: nothing this command can fix safely was found", flush=True)
        return report.exit_code(strict=args.strict)  # type: ignore[no-any-return]
    question = " and ".join(
        text
        for check, text in (
            ("cluster.open_slots", "close the open slots"),
            ("cluster.slots", "give the unserved slots to primaries"),
        )
        if check in wanted
    )
    if not _confirm(f"--fix: {question}?", yes=args.yes):
        return report.exit_code(strict=args.strict)  # type: ignore[no-any-return]
    with Resharder(args.url, **kwargs) as r:
        done = []
        if "cluster.open_slots" in wanted:
            done += r.close_open_slots()
        if "cluster.slots" in wanted:
            done += r.cover_slots()
    for line in done:
        print(f"fixed: {line}", flush=True)
    return 0


@contextlib.contextmanager
def _progress_bar(*, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on stderr for the key sampling (nothing when off or without
    rich)."""
    if not enabled:
        yield None
        return
    try:
        from rich.progress import (  # noqa: PLC0415 - optional
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )
    except ImportError:
        yield None
        return
    bar = Progress(
        TextColumn("sampling keys"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        transient=True,
        console=None,
    )
    task = bar.add_task("sample", total=None)
    with bar:

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _top(args: argparse.Namespace) -> int:
    from smartcache.ops._nodes import mask_url  # noqa: PLC0415
    from smartcache.ops._render import top_plain, top_rich, top_title  # noqa: PLC0415
    from smartcache.ops._top import Top  # noqa: PLC0415

    if args.interval <= 0:
        raise ConfigurationError(f"--interval must be > 0 seconds, got {args.interval}")
    kwargs = _password_kwargs(args)
    top = Top(args.url, **kwargs)
    target = mask_url(args.url)
    frames = 2 if args.once else args.iterations  # --once: two readings make the rates
    live_ok = sys.stdout.isatty() and not args.once
    try:
        from rich.console import Console  # noqa: PLC0415 - optional
        from rich.live import Live  # noqa: PLC0415
    except ImportError:
        live_ok = False
    n = 0
    try:
        if live_ok:
            console = Console()
            with Live(console=console, auto_refresh=False, screen=False) as live:
                while frames is None or n < frames:
                    rows = top.tick()
                    live.update(top_rich(top_title(top.kind, target, rows, args.interval), rows))
                    live.refresh()
                    n += 1
                    if frames is None or n < frames:
                        time.sleep(args.interval)
        else:
            while frames is None or n < frames:
                rows = top.tick()
                n += 1
                if not args.once or n == frames:
                    if sys.stdout.isatty():
                        sys.stdout.write("\033[H\033[2J")
                    sys.stdout.write(
                        top_plain(top_title(top.kind, target, rows, args.interval), rows)
                    )
                    sys.stdout.flush()
                if frames is None or n < frames:
                    time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    finally:
        top.close()
    return 0


def _confirm(question: str, *, yes: bool) -> bool:
    """``yes`` or a person's answer; without a terminal and without --yes: refuse."""
    if yes:
        return True
    if not sys.stdin.isatty():
        raise ConfigurationError(f"{question} needs confirmation: pass --yes to proceed")
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


@contextlib.contextmanager
def _reshard_bar(*, enabled: bool) -> Iterator[Callable[[Any], None] | None]:
    """A progress bar (slots, keys, keys/s, ETA) on stderr, or a line per 10% without
    rich or a terminal."""
    try:
        from rich.progress import (  # noqa: PLC0415 - optional
            BarColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )
    except ImportError:
        enabled = False
    if not enabled:
        last = [-1]

        def lines(p: Any) -> None:
            tenth = int(10 * p.slots_done / p.slots_total) if p.slots_total else 10
            if tenth != last[0]:
                last[0] = tenth
                print(
                    f"{p.slots_done}/{p.slots_total} slots, {p.keys_moved}/{p.keys_total} keys, "
                    f"{p.keys_per_second:.0f} keys/s",
                    file=sys.stderr,
                    flush=True,
                )

        yield lines
        return
    bar = Progress(
        TextColumn("moving slots"),
        BarColumn(),
        TextColumn("{task.fields[slots]} slots  {task.fields[keys]} keys"),
        TextColumn("{task.fields[rate]} keys/s"),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    task = bar.add_task("reshard", total=None, slots="-", keys="-", rate="0")
    with bar:

        def update(p: Any) -> None:
            bar.update(
                task,
                completed=p.keys_moved,
                total=max(p.keys_total, p.keys_moved) or None,
                slots=f"{p.slots_done}/{p.slots_total}",
                keys=f"{p.keys_moved}/{max(p.keys_total, p.keys_moved)}",
                rate=f"{p.keys_per_second:.0f}",
            )

        yield update


def _describe_moves(moves: Any, view: Any) -> str:
    address = {n.node_id: n.address for n in view}
    pairs: dict[tuple[str, str], int] = {}
    for m in moves:
        key = (address.get(m.source, m.source[:8]), address.get(m.target, m.target[:8]))
        pairs[key] = pairs.get(key, 0) + 1
    return "; ".join(f"{n} slots {a} -> {b}" for (a, b), n in sorted(pairs.items())) or "nothing"


def _resharder(args: argparse.Namespace, progress: Any) -> Any:
    from smartcache.ops import Resharder  # noqa: PLC0415

    kwargs = _password_kwargs(args)
    return Resharder(
        args.url,
        batch=args.batch,
        replace=args.replace,
        state_file=args.state,
        progress=progress,
        **kwargs,
    )


def _run_moves(args: argparse.Namespace, plan: Callable[[Any], Any]) -> int:
    with _reshard_bar(enabled=sys.stderr.isatty()) as progress, _resharder(args, progress) as r:
        if args.resume:
            result = r.resume()
        else:
            moves = plan(r)
            print(f"plan: {_describe_moves(moves, r.view())}", flush=True)
            if not moves:
                return 0
            if args.dry_run or not _confirm(f"move {len(moves)} slots?", yes=args.yes):
                return 0
            result = r.run(moves)
    print(
        f"done: {result.slots_done} slots, {result.keys_moved} keys in {result.seconds:.1f} s "
        f"({result.keys_per_second:.0f} keys/s)",
        flush=True,
    )
    return 0


def _cluster_reshard(args: argparse.Namespace) -> int:
    if not args.resume and (args.slots is None or args.source is None or args.target is None):
        raise ConfigurationError("reshard needs --slots N --from A --to B (or --resume)")
    sources = [s.strip() for s in (args.source or "").split(",") if s.strip()]
    return _run_moves(args, lambda r: r.plan_reshard(args.slots, sources, args.target))


def _cluster_rebalance(args: argparse.Namespace) -> int:
    weights: dict[str, float] = {}
    for item in args.weight or ():
        node, sep, value = item.rpartition("=")
        if not sep:
            raise ConfigurationError(f"--weight {item!r}: expected NODE=WEIGHT")
        weights[node] = float(value)
    return _run_moves(
        args, lambda r: r.plan_rebalance(by=args.by, threshold=args.threshold, weights=weights)
    )


def _dead_letters(args: argparse.Namespace) -> int:
    from smartcache.cache import WriteBehind  # noqa: PLC0415
    from smartcache.sync.client import SmartClient  # noqa: PLC0415

    client = SmartClient.from_url(args.url)
    try:
        wb = WriteBehind(
            client,
            flusher=False,
            name=args.name,
            namespace=args.namespace,
            partitions=args.partitions,
            serializer=args.serializer,
        )
        ids, keys = args.id or None, args.key or None
        if args.action in ("replay", "drop") and ids is None and keys is None and not args.all:
            raise ConfigurationError(
                f"dead-letters {args.action}: name the letters with --id or --key, or pass --all"
            )
        if args.action == "list":
            letters = wb.dead_letters(args.limit)
            _print_letters(letters, args, wb)
            return 0
        if args.action == "show":
            letters = wb._select(wb.dead_letters(args.limit), ids, keys)
            _print_letters(letters, args, wb, full=True)
            return 0 if letters else 1
        if args.action == "replay":
            chosen = wb.replay_dead_letters(ids, keys=keys, dry_run=True, limit=args.limit)
            if args.dry_run or not chosen:
                _print_letters(
                    chosen, args, wb, verb="would replay" if chosen else "nothing to replay"
                )
                return 0
            if not _confirm(f"replay {len(chosen)} dead letter(s)?", yes=args.yes):
                return 0
            with _count_bar("replaying", enabled=sys.stderr.isatty() and not args.json) as bar:
                done = wb.replay_dead_letters(
                    [d["dead_id"] for d in chosen], limit=args.limit, progress=bar
                )
            _print_letters(done, args, wb, verb="replayed")
            return 0
        chosen = wb._select(wb.dead_letters(args.limit), ids, keys)
        if args.dry_run or not chosen:
            _print_letters(chosen, args, wb, verb="would drop" if chosen else "nothing to drop")
            return 0
        if not _confirm(f"drop {len(chosen)} dead letter(s) for good?", yes=args.yes):
            return 0
        dropped = wb.drop_dead_letters([d["dead_id"] for d in chosen], limit=args.limit)
        _print_letters(dropped, args, wb, verb="dropped")
        return 0
    finally:
        client.close()


def _print_letters(
    letters: list[dict[str, Any]],
    args: argparse.Namespace,
    wb: Any,
    *,
    full: bool = False,
    verb: str = "",
) -> None:
    """Dead letters as JSON (``--json``) or one line each (``full``: the decoded value)."""

    def value_of(d: dict[str, Any]) -> Any:
        raw = d.get("raw_value") or b""
        if d["op"] == "delete":
            return None
        try:
            return wb.policy.serializer.loads(raw)
        except Exception:
            return repr(raw)

    if args.json:
        rows = [
            {**{k: v for k, v in d.items() if k != "raw_value"}, "value": value_of(d)}
            for d in letters
        ]
        json.dump(
            {"action": verb or args.action, "letters": rows}, sys.stdout, indent=2, default=str
        )
        sys.stdout.write("\n")
        return
    if verb:
        print(f"{verb}: {len(letters)} dead letter(s)" if letters else verb)
    for d in letters:
        line = (
            f"{d['dead_id']}  {d['op']:6}  {d['key']}  version {d['version']}  "
            f"attempts {d['attempts']}  error: {d['error'][:80]}"
        )
        print(line)
        if full:
            print(f"    value: {value_of(d)!r}")
            print(f"    error: {d['error']}")
            if d.get("requeued_id"):
                print(f"    requeued as {d['requeued_id']}")


@contextlib.contextmanager
def _count_bar(what: str, *, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A rich progress bar on stderr (nothing without rich or a terminal)."""
    if not enabled:
        yield None
        return
    try:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn  # noqa: PLC0415
    except ImportError:
        yield None
        return
    bar = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), transient=True)
    task = bar.add_task(what, total=None)
    with bar:

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


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
    fw = sub.add_parser("flush-worker", help="move write-behind changes into the database")
    fw.add_argument("url", help="redis://, rediss:// or redis+sentinel:// URL of the queue")
    fw.add_argument(
        "--store",
        required=True,
        help="sqlite:///path/app.db, a SQLAlchemy URL, or package.module:factory",
    )
    fw.add_argument("--table", default="smartcache_store", help="table for sqlite/SQLAlchemy")
    fw.add_argument("--name", default="default", help="the WriteBehind queue name")
    fw.add_argument("--namespace", default="sc")
    fw.add_argument("--partitions", type=int, default=16)
    fw.add_argument("--group", default="flushers", help="consumer group")
    fw.add_argument("--serializer", default="json", choices=["json", "msgpack", "pickle"])
    fw.add_argument("--batch-size", type=int, default=500)
    fw.add_argument("--claim-idle", type=float, default=30.0, help="seconds before claiming")
    fw.add_argument("--max-attempts", type=int, default=5)
    fw.add_argument("--poll-interval", type=float, default=0.05)
    fw.set_defaults(func=_flush_worker)
    doc = sub.add_parser(
        "doctor",
        help="check a live deployment against the production checklist (read-only)",
        description="Exit code: 0 all pass (warnings too, unless --strict), 1 warnings with "
        "--strict, 2 any failure.",
    )
    doc.add_argument(
        "url",
        help="redis://[user:pass@]host:port (a server or any cluster node), rediss://, "
        "or redis+sentinel://host:26379,host2:26379/service",
    )
    doc.add_argument("--json", action="store_true", help="one JSON document on stdout")
    doc.add_argument("--strict", action="store_true", help="exit 1 on warnings")
    doc.add_argument("--sample", type=int, default=1000, help="keys to sample (0: none)")
    doc.add_argument("--max-seconds", type=float, default=60.0, help="bound on the key sampling")
    doc.add_argument(
        "--scan-rate", type=float, default=5000.0, help="keys per second SCAN may walk per node"
    )
    doc.add_argument("--timeout", type=float, default=5.0, help="seconds per command")
    doc.add_argument(
        "--password-env", default=None, help="read the password from this environment variable"
    )
    doc.add_argument("--verbose", "-v", action="store_true", help="why and fix for passes too")
    doc.add_argument("--color", choices=["auto", "always", "never"], default="auto")
    doc.add_argument(
        "--fix",
        action="store_true",
        help="offer the safe fixes found (close open slots, cover unserved slots); asks first",
    )
    doc.add_argument("--yes", action="store_true", help="with --fix: do not ask")
    doc.set_defaults(func=_doctor)
    top = sub.add_parser("top", help="a live per-node view: ops/s, hit rate, memory, lag")
    top.add_argument("url", help="redis://..., a cluster node's URL, or redis+sentinel://...")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between readings")
    top.add_argument("--iterations", type=int, default=None, help="stop after N frames")
    top.add_argument("--once", action="store_true", help="print one frame (two readings) and exit")
    top.add_argument("--password-env", default=None, help="password from this env variable")
    top.set_defaults(func=_top)
    cluster = sub.add_parser("cluster", help="move slots: reshard, rebalance")
    cluster_sub = cluster.add_subparsers(dest="action", required=True)
    for name, helptext, func in (
        ("reshard", "move N slots from some primaries to another", _cluster_reshard),
        ("rebalance", "even out slots, or measured memory, over the primaries", _cluster_rebalance),
    ):
        p = cluster_sub.add_parser(name, help=helptext)
        p.add_argument("url", help="redis://[user:pass@]host:port of any cluster node")
        if name == "reshard":
            p.add_argument("--slots", type=int, help="how many slots to move")
            p.add_argument(
                "--from",
                dest="source",
                help="source primaries: host:port or node id (prefix), comma-separated, or 'all'",
            )
            p.add_argument("--to", dest="target", help="target primary: host:port or node id")
        else:
            p.add_argument("--by", choices=["slots", "memory"], default="slots")
            p.add_argument(
                "--threshold",
                type=float,
                default=0.02,
                help="leave primaries within this fraction of their share (default 0.02)",
            )
            p.add_argument(
                "--weight", action="append", help="NODE=W: a primary's share (0 empties it)"
            )
        p.add_argument("--batch", type=int, default=100, help="keys per MIGRATE")
        p.add_argument(
            "--replace",
            action="store_true",
            help="overwrite keys that already exist on the target (off: stop and say which)",
        )
        p.add_argument("--state", default=None, help="state file (default under ~/.cache)")
        p.add_argument("--resume", action="store_true", help="finish an interrupted run")
        p.add_argument("--dry-run", action="store_true", help="print the plan only")
        p.add_argument("--yes", action="store_true", help="do not ask before moving")
        p.add_argument("--password-env", default=None, help="password from this env variable")
        p.set_defaults(func=func)
    wbp = sub.add_parser("write-behind", help="operate write-behind queues")
    wb_sub = wbp.add_subparsers(dest="what", required=True)
    dl = wb_sub.add_parser("dead-letters", help="list, show, replay or drop dead letters")
    dl.add_argument("action", choices=["list", "show", "replay", "drop"])
    dl.add_argument("url", help="redis://, rediss:// or redis+sentinel:// URL of the queue")
    dl.add_argument("--name", default="default", help="the WriteBehind queue name")
    dl.add_argument("--namespace", default="sc")
    dl.add_argument("--partitions", type=int, default=16)
    dl.add_argument("--serializer", default="json", choices=["json", "msgpack", "pickle"])
    dl.add_argument("--id", action="append", help="a dead letter (its dead_id, 'P:ID')")
    dl.add_argument("--key", action="append", help="the dead letters of a key")
    dl.add_argument("--all", action="store_true", help="replay/drop: every dead letter")
    dl.add_argument("--limit", type=int, default=100_000, help="dead letters read at most")
    dl.add_argument("--dry-run", action="store_true", help="say what would be done")
    dl.add_argument("--yes", action="store_true", help="do not ask before replay/drop")
    dl.add_argument("--json", action="store_true", help="one JSON document on stdout")
    dl.set_defaults(func=_dead_letters)
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
