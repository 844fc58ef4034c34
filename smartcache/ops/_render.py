"""The doctor's report for people (a table, coloured on a terminal) and for machines."""

from __future__ import annotations

import json
import shutil
import textwrap
import time
from typing import IO, Any

from smartcache.ops import Report
from smartcache.ops._facts import Finding, Status
from smartcache.ops._top import Row

__all__ = ["render_json", "render_table", "top_plain", "top_rich", "top_title"]

_STYLE = {
    Status.PASS: "green",
    Status.WARN: "yellow",
    Status.FAIL: "bold red",
    Status.UNKNOWN: "dim",
}
_ANSI = {Status.PASS: "32", Status.WARN: "33", Status.FAIL: "1;31", Status.UNKNOWN: "2"}


def grouped(report: Report) -> list[tuple[Finding, list[str]]]:
    """Findings that say the same thing (check, status, value, why, fix) on several nodes
    as one, with the nodes listed; in the order they were found."""
    groups: dict[tuple[str, ...], tuple[Finding, list[str]]] = {}
    for f in report.findings:
        key = (f.check, f.status.value, f.value, f.why, f.fix)
        if key in groups:
            groups[key][1].append(f.node)
        else:
            groups[key] = (f, [f.node] if f.node else [])
    return list(groups.values())


def _where(nodes: list[str]) -> str:
    if not nodes:
        return "-"
    if len(nodes) == 1:
        return nodes[0]
    return f"{len(nodes)} nodes"


def render_json(report: Report, out: IO[str]) -> None:
    """The report as one JSON document."""
    json.dump(report.as_dict(), out, indent=2)
    out.write("\n")


def _summary(report: Report) -> str:
    f = report.facts
    counts = ", ".join(f"{len(report.by_status(s))} {s.value}" for s in Status)
    sampled = f"{f.sampled} of {f.keys_total} keys sampled" + (
        "" if f.sample_complete else " (stopped by --max-seconds)"
    )
    return (
        f"{f.kind} at {f.target}: {len(f.nodes)} node(s)"
        + (f", {len(f.sentinels)} sentinel(s)" if f.sentinels else "")
        + f"; {sampled}; {f.seconds:.1f} s. {counts}. Overall: {report.status.value.upper()}"
    )


def render_table(
    report: Report, out: IO[str], *, color: bool, verbose: bool = False, width: int | None = None
) -> None:
    """A table: status, check, node, value; then why and fix for each finding that is not
    a pass (all with ``verbose``). Uses ``rich`` when installed, plain text otherwise."""
    width = width or shutil.get_terminal_size((120, 40)).columns
    try:
        from rich.console import Console  # noqa: PLC0415 - optional
        from rich.table import Table  # noqa: PLC0415
    except ImportError:
        _plain(report, out, color=color, verbose=verbose, width=width)
        return
    console = Console(file=out, force_terminal=color, no_color=not color, width=width)
    table = Table(show_lines=False, header_style="bold", expand=False)
    table.add_column("status", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("node", no_wrap=True)
    table.add_column("value")
    groups = grouped(report)
    for f, nodes in groups:
        table.add_row(
            f"[{_STYLE[f.status]}]{f.status.value}[/]", f.title, _where(nodes), _escape(f.value)
        )
    console.print(table)
    for f, nodes in groups:
        if f.status is Status.PASS and not verbose:
            continue
        if not (f.why or f.fix):
            continue
        where = f" ({', '.join(nodes)})" if nodes else ""
        console.print(f"[{_STYLE[f.status]}]{f.status.value}[/] [bold]{f.check}[/]{where}")
        if f.why:
            console.print(f"  why: {_escape(f.why)}")
        if f.fix:
            for i, line in enumerate(f.fix.splitlines()):
                console.print(("  fix: " if i == 0 else "       ") + _escape(line))
    console.print(_summary(report))


def _escape(text: str) -> str:
    return text.replace("[", "\\[")


def _plain(report: Report, out: IO[str], *, color: bool, verbose: bool, width: int) -> None:
    def paint(status: Status, text: str) -> str:
        return f"\033[{_ANSI[status]}m{text}\033[0m" if color else text

    groups = grouped(report)
    rows = [(f.status, f.title, _where(nodes), f.value) for f, nodes in groups]
    w_title = max((len(r[1]) for r in rows), default=5)
    w_node = max((len(r[2]) for r in rows), default=4)
    value_width = max(20, width - 8 - w_title - w_node - 6)
    out.write(f"{'status':7}  {'check':{w_title}}  {'node':{w_node}}  value\n")
    for status, title, node, value in rows:
        lines = textwrap.wrap(value, value_width) or [""]
        out.write(f"{paint(status, f'{status.value:7}')}  {title:{w_title}}  {node:{w_node}}  ")
        out.write(lines[0] + "\n")
        for more in lines[1:]:
            out.write(" " * (7 + 2 + w_title + 2 + w_node + 2) + more + "\n")
    out.write("\n")
    for f, nodes in groups:
        if (f.status is Status.PASS and not verbose) or not (f.why or f.fix):
            continue
        where = f" ({', '.join(nodes)})" if nodes else ""
        out.write(f"{paint(f.status, f.status.value)} {f.check}{where}\n")
        if f.why:
            out.write(
                textwrap.fill(
                    f.why, width - 2, initial_indent="  why: ", subsequent_indent="       "
                )
                + "\n"
            )
        for i, line in enumerate(f.fix.splitlines()):
            out.write(("  fix: " if i == 0 else "       ") + line + "\n")
    out.write(_summary(report) + "\n")


def _human_bytes(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def top_cells(row: Row) -> list[str]:
    """One row of ``smartcache top`` as text cells (the header is :data:`TOP_COLUMNS`)."""
    if row.role == "down":
        return [row.address, "down", "-", "-", "-", "-", "-", row.error[:40]]
    memory = _human_bytes(row.used_memory) + (
        f" / {_human_bytes(row.maxmemory)} ({row.used_memory / row.maxmemory:.0%})"
        if row.maxmemory
        else ""
    )
    return [
        row.address,
        row.role,
        "-" if row.ops_per_sec is None else f"{row.ops_per_sec:,.0f}",
        "-" if row.hit_rate is None else f"{row.hit_rate:.1%}",
        memory,
        str(row.clients),
        "-" if row.lag_bytes is None else f"{row.lag_bytes} B",
        str(row.slowlog_len) + ("" if not row.slowlog_new else f" (+{row.slowlog_new})"),
    ]


TOP_COLUMNS = ("node", "role", "ops/s", "hit rate", "memory", "clients", "repl lag", "slowlog")


def top_title(kind: str, target: str, rows: list[Row], interval: float) -> str:
    """The line above the table."""
    total = sum(r.ops_per_sec or 0 for r in rows)
    down = sum(r.role == "down" for r in rows)
    return (
        f"smartcache top: {kind} {target}, {len(rows)} nodes"
        + (f" ({down} down)" if down else "")
        + f", {total:,.0f} ops/s, every {interval:g} s, {time.strftime('%H:%M:%S')}"
        + " (Ctrl-C quits)"
    )


def top_plain(title: str, rows: list[Row]) -> str:
    """The whole frame as plain text."""
    table = [list(TOP_COLUMNS), *(top_cells(r) for r in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(TOP_COLUMNS))]
    lines = [title]
    for line in table:
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=True)))
    return "\n".join(lines) + "\n"


def top_rich(title: str, rows: list[Row]) -> Any:
    """The whole frame as a rich renderable (rich must be installed)."""
    from rich.table import Table  # noqa: PLC0415 - optional

    table = Table(title=title, title_justify="left", header_style="bold")
    for name in TOP_COLUMNS:
        table.add_column(
            name,
            justify="right" if name in ("ops/s", "clients") else "left",
            no_wrap=name in ("node", "role"),  # an address is never cut
        )
    for r in rows:
        cells = top_cells(r)
        style = "bold red" if r.role == "down" else ("bold" if r.role == "primary" else "")
        table.add_row(*cells, style=style)
    return table
