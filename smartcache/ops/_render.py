"""The doctor's report for people (a table, coloured on a terminal) and for machines."""

from __future__ import annotations

import json
import shutil
import textwrap
from typing import IO

from smartcache.ops import Report
from smartcache.ops._facts import Status

__all__ = ["render_json", "render_table"]

_STYLE = {
    Status.PASS: "green",
    Status.WARN: "yellow",
    Status.FAIL: "bold red",
    Status.UNKNOWN: "dim",
}
_ANSI = {Status.PASS: "32", Status.WARN: "33", Status.FAIL: "1;31", Status.UNKNOWN: "2"}


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
    for f in report.findings:
        table.add_row(
            f"[{_STYLE[f.status]}]{f.status.value}[/]", f.title, f.node or "-", _escape(f.value)
        )
    console.print(table)
    for f in report.findings:
        if f.status is Status.PASS and not verbose:
            continue
        if not (f.why or f.fix):
            continue
        where = f" ({f.node})" if f.node else ""
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

    rows = [(f.status, f.title, f.node or "-", f.value) for f in report.findings]
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
    for f in report.findings:
        if (f.status is Status.PASS and not verbose) or not (f.why or f.fix):
            continue
        where = f" ({f.node})" if f.node else ""
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
