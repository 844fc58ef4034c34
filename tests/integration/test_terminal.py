"""The terminal tools as a person sees them: ``smartcache top``, the reshard progress bar
and the doctor's coloured table, run in a real terminal (a private tmux server) and read
back with ``capture-pane``."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from smartcache import SmartClient
from smartcache.testing import Cluster

pytestmark = [
    pytest.mark.timeout(180),
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]


class Terminal:
    """A 160x45 terminal running one command in a private tmux server."""

    def __init__(self, command: list[str]) -> None:
        self.socket = f"smartcache-test-{uuid.uuid4().hex[:8]}"
        self.session = "t"
        # the terminal's own size, not the size this process was told; the exit status
        # printed on the screen when the command ends
        # (a trap, not an ignore, keeps Ctrl-C for the command and the shell alive after it)
        inner = "trap true INT; " + " ".join(_quote(p) for p in command) + "; echo [exit=$?]"
        line = "env -u COLUMNS -u LINES sh -c " + _quote(inner)
        # keep the pane after the command exits, to read its last screen
        self.tmux("new-session", "-d", "-s", self.session, "-x", "160", "-y", "45", line)
        self.tmux("set-option", "-t", self.session, "remain-on-exit", "on")

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True
        ).stdout

    def screen(self, *, escapes: bool = False) -> str:
        # with the scrollback: a long table scrolls its first rows off the visible screen
        options = ["-p", "-S", "-1000", *(["-e"] if escapes else [])]
        return self.tmux("capture-pane", *options, "-t", self.session)

    def wait_for(self, ok: Callable[[str], bool], what: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if ok(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"never saw {what}; the screen:\n{text}")
            time.sleep(0.1)

    def exited(self, timeout: float = 20) -> int:
        """Wait for the command to end; its exit status."""
        screen = self.wait_for(lambda s: "[exit=" in s, "the command to end", timeout)
        found = re.search(r"\[exit=(\d+)\]", screen)
        assert found is not None, screen
        return int(found.group(1))

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.socket, "kill-server"], capture_output=True, check=False)


def _quote(part: str) -> str:
    return "'" + part.replace("'", "'\\''") + "'"


@pytest.fixture
def terminal() -> Iterator[Callable[[list[str]], Terminal]]:
    made: list[Terminal] = []

    def open_(command: list[str]) -> Terminal:
        t = Terminal(command)
        made.append(t)
        return t

    yield open_
    for t in made:
        t.close()


def load(cluster: Cluster, stop: threading.Event) -> None:
    c = SmartClient(startup_nodes=cluster.startup_nodes)
    try:
        i = 0
        while not stop.is_set():
            i += 1
            c.set(f"load:{i % 1000}", i)
            c.get(f"load:{(i * 7) % 1000}")
    finally:
        c.close()


def node_lines(screen: str) -> dict[str, list[str]]:
    """Table rows by node address: the cells of each line that starts with an address."""
    out = {}
    for line in screen.splitlines():
        text = line.strip().strip("│┃").strip()
        cells = [c.strip() for c in text.split("│")] if "│" in text else text.split()
        if cells and re.fullmatch(r"127\.0\.0\.1:\d+", cells[0]):
            out[cells[0]] = cells
    return out


def test_top_shows_every_node_live_and_a_node_going_down(
    redis_topologies: Any, terminal: Any
) -> None:
    cluster: Cluster = redis_topologies.cluster(3, 1)
    stop = threading.Event()
    loader = threading.Thread(target=load, args=(cluster, stop))
    loader.start()
    try:
        t = terminal([sys.executable, "-m", "smartcache", "top", cluster.url, "--interval", "0.5"])

        def busy(screen: str) -> bool:
            rows = node_lines(screen)
            ops = [
                float(r[2].replace(",", ""))
                for r in rows.values()
                if r[1] == "primary" and r[2] != "-"
            ]
            return len(rows) == 6 and bool(ops) and max(ops) > 100

        screen = t.wait_for(busy, "6 nodes and a primary over 100 ops/s")
        assert "smartcache top: cluster" in screen
        roles = sorted(r[1] for r in node_lines(screen).values())
        assert roles == ["primary"] * 3 + ["replica"] * 3
        replica = cluster.replicas()[0]
        cluster.kill(replica)
        screen = t.wait_for(
            lambda s: node_lines(s).get(replica.address, ["", ""])[1] == "down",
            f"{replica.address} shown down",
        )
        assert "(1 down)" in screen
        t.tmux("send-keys", "-t", t.session, "C-c")
        assert t.exited() == 0  # Ctrl-C quits cleanly, no traceback
        assert "Traceback" not in t.screen()
    finally:
        stop.set()
        loader.join(30)


def test_reshard_progress_bar_then_its_summary(redis_topologies: Any, terminal: Any) -> None:
    cluster: Cluster = redis_topologies.cluster(3, 0)
    c = SmartClient(startup_nodes=cluster.startup_nodes)
    try:
        pipe = c.pipeline(transaction=False)
        for i in range(20000):
            pipe.set(f"bar:{i}", i)
        pipe.execute()
    finally:
        c.close()
    source, target = cluster.primaries()[:2]
    t = terminal(
        [
            sys.executable,
            "-m",
            "smartcache",
            "cluster",
            "reshard",
            cluster.url,
            "--slots",
            "3000",
            "--from",
            source.address,
            "--to",
            target.address,
            "--batch",
            "5",
            "--yes",
            "--state",
            f"/tmp/smartcache-test-{uuid.uuid4().hex}.json",
        ]
    )
    during = t.wait_for(
        lambda s: (
            re.search(r"moving slots .* [1-9]\d*/3000 slots +[1-9]\d*/\d+ keys", s) is not None
        ),
        "the progress bar with slots and keys moved",
    )
    assert "keys/s" in during and "ETA" in during
    done = t.wait_for(lambda s: "done: 3000 slots" in s, "the summary", timeout=120)
    assert t.exited() == 0
    assert re.search(r"done: 3000 slots, \d+ keys in [\d.]+ s \(\d+ keys/s\)", done)
    assert "moving slots" not in done.split("done:")[1]  # the bar is gone, the summary stays


def test_doctor_table_in_colour(redis_topologies: Any, terminal: Any) -> None:
    server = redis_topologies.standalone()
    t = terminal([sys.executable, "-m", "smartcache", "doctor", server.url])
    t.wait_for(lambda s: "Overall: FAIL" in s, "the doctor's summary")
    assert t.exited() == 2  # a failure: exit code 2
    coloured = t.screen(escapes=True)
    assert re.search(r"\x1b\[[0-9;]*31m[^\x1b]*fail", coloured)  # fail in red
    assert re.search(r"\x1b\[[0-9;]*32m[^\x1b]*pass", coloured)  # pass in green
    assert "maxmemory set" in t.screen()
