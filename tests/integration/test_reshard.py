"""Live resharding and rebalancing with ``smartcache.ops.Resharder`` and the
``smartcache cluster`` command, on private real clusters: keys really migrate (MIGRATE),
our own clients keep working meanwhile (0 errors, every read right), an interrupted run
(SIGKILL) is resumed to the end, and ``doctor --fix`` closes what was left open."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from smartcache import AsyncSmartClient, SmartClient
from smartcache.ops import Resharder, diagnose
from smartcache.testing import Cluster

pytestmark = pytest.mark.timeout(300)

KEYS = 6000


def fill(cluster: Cluster, n: int = KEYS) -> None:
    c = SmartClient(startup_nodes=cluster.startup_nodes)
    try:
        pipe = c.pipeline(transaction=False)
        for i in range(n):
            pipe.set(f"k:{i}", f"v{i}")
            if i % 500 == 499:
                pipe.execute()
                pipe = c.pipeline(transaction=False)
        pipe.execute()
    finally:
        c.close()


def check_all(cluster: Cluster, n: int = KEYS) -> None:
    c = SmartClient(startup_nodes=cluster.startup_nodes)
    try:
        for start in range(0, n, 500):
            keys = [f"k:{i}" for i in range(start, min(n, start + 500))]
            assert c.mget_nonatomic(keys) == [
                f"v{i}".encode() for i in range(start, start + len(keys))
            ]
    finally:
        c.close()


class Traffic:
    """Sync threads and an asyncio client reading, writing and counting (with hash tags,
    multi-key) while slots move; every error and every wrong read is kept."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.ops = 0
        self.incr_sent = dict.fromkeys(range(4), 0)
        self._threads = [threading.Thread(target=self._sync, args=(i,)) for i in range(2)]
        self._threads.append(threading.Thread(target=lambda: asyncio.run(self._async())))

    def __enter__(self) -> Traffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self._threads:
            t.join(60)

    def _sync(self, worker: int) -> None:
        c = SmartClient(startup_nodes=self.cluster.startup_nodes)
        i = 0
        try:
            while not self.stop.is_set():
                i += 1
                k = (i * 7919 + worker) % KEYS
                try:
                    got = c.get(f"k:{k}")
                    if got != f"v{k}".encode():
                        self.errors.append(f"read k:{k} -> {got!r}")
                    c.set(f"w:{worker}:{i % 500}", i)
                    c.incr(f"{{ctr}}:{worker}")
                    self.incr_sent[worker] += 1
                    pair = [f"{{t{worker}-{i % 50}}}:a", f"{{t{worker}-{i % 50}}}:b"]
                    c.mset({pair[0]: i, pair[1]: i})
                    if c.mget(pair) != [str(i).encode()] * 2:
                        self.errors.append(f"mget {pair}")
                    self.ops += 4
                except Exception as exc:  # every error is a finding
                    self.errors.append(f"{type(exc).__name__}: {exc}")
        finally:
            c.close()

    async def _async(self) -> None:
        c = AsyncSmartClient(startup_nodes=self.cluster.startup_nodes)
        i = 0
        try:
            while not self.stop.is_set():
                i += 1
                keys = [f"k:{(i * 31 + j) % KEYS}" for j in range(20)]
                try:
                    got = await asyncio.gather(*[c.get(k) for k in keys])
                    want = [f"v{k.split(':')[1]}".encode() for k in keys]
                    if list(got) != want:
                        self.errors.append(f"async reads {keys[:2]}...")
                    self.ops += len(keys)
                except Exception as exc:
                    self.errors.append(f"async {type(exc).__name__}: {exc}")
        finally:
            await c.aclose()


def test_reshard_under_live_traffic_loses_nothing_and_errs_nowhere(redis_topologies: Any) -> None:
    cluster: Cluster = redis_topologies.cluster(3, 1)
    fill(cluster)
    source, target = cluster.primaries()[:2]
    seen: list[Any] = []
    with Resharder(cluster.url, progress=lambda p: seen.append((p.slots_done, p.keys_moved))) as r:
        moves = r.plan_reshard(1500, [source.address], target.address)
        assert len(moves) == 1500 and {m.source for m in moves} == {cluster.node_id(source)}
        with Traffic(cluster) as traffic:
            result = r.run(moves)
            time.sleep(0.3)  # traffic after the last slot moved, too
    assert traffic.errors == [], traffic.errors[:10]
    assert traffic.ops > 1000  # the clients really worked during the move
    assert result.slots_done == 1500 and result.keys_moved > 0
    assert result.keys_moved >= result.keys_total  # (the traffic wrote keys meanwhile)
    assert seen[-1][0] == 1500  # progress reached the end
    moved = {m.slot for m in moves}
    assert moved <= set(cluster.slots_of(target))
    assert not moved & set(cluster.slots_of(source))
    check_all(cluster)
    c = SmartClient(startup_nodes=cluster.startup_nodes)
    try:  # no INCR lost or applied twice
        for worker in (0, 1):
            assert int(c.get(f"{{ctr}}:{worker}") or 0) == traffic.incr_sent[worker]
    finally:
        c.close()
    report = diagnose(cluster.url, sample=0)
    assert [f.status.value for f in report.findings if f.check == "cluster.open_slots"] == ["pass"]


def test_rebalance_by_slots_then_by_memory(redis_topologies: Any) -> None:
    cluster: Cluster = redis_topologies.cluster(3, 0)
    fill(cluster)
    a, b, _c = cluster.primaries()
    with Resharder(cluster.url) as r:
        r.run(r.plan_reshard(3000, [a.address], b.address))  # unbalanced on purpose
        assert r.plan_rebalance(by="slots") != []
        with Traffic(cluster) as traffic:
            r.run(r.plan_rebalance(by="slots"))
        assert traffic.errors == [], traffic.errors[:10]
        assert traffic.ops > 1000
        counts = sorted(len(cluster.slots_of(p)) for p in cluster.primaries())
        assert counts[-1] - counts[0] <= 2 and sum(counts) == 16384
        assert r.plan_rebalance(by="slots") == []  # balanced: nothing more to do
        check_all(cluster)

        # memory: the keys of a's slots get big values; a rebalance by memory moves
        # slots off a until the datasets are close
        big = SmartClient(startup_nodes=cluster.startup_nodes)
        try:
            owned = set(cluster.slots_of(a))
            pipe = big.pipeline(transaction=False)
            n = 0
            for i in range(20000):
                key = f"m:{i}"
                if big.keyslot(key) in owned:
                    pipe.set(key, "x" * 2000)
                    n += 1
            pipe.execute()
        finally:
            big.close()

        def datasets() -> list[int]:
            out = []
            for p in cluster.primaries():
                with p.client() as c:
                    out.append(int(c.info("memory")["used_memory_dataset"]))
            return out

        before = datasets()
        moves = r.plan_rebalance(by="memory", threshold=0.1)
        assert moves and all(m.source == cluster.node_id(a) for m in moves)
        with Traffic(cluster) as traffic:
            r.run(moves)
        assert traffic.errors == [], traffic.errors[:10]
        after = datasets()
    assert max(before) / min(before) > 3
    assert max(after) / min(after) < max(before) / min(before) / 2, (before, after)
    check_all(cluster)


def test_an_interrupted_reshard_is_resumed_by_the_command(
    redis_topologies: Any, tmp_path: Path
) -> None:
    cluster: Cluster = redis_topologies.cluster(3, 0)
    fill(cluster)
    source, target = cluster.primaries()[:2]
    state = tmp_path / "reshard.json"
    base = [sys.executable, "-m", "smartcache", "cluster", "reshard", cluster.url]
    proc = subprocess.Popen(
        [
            *base,
            "--slots",
            "2000",
            "--from",
            source.address,
            "--to",
            cluster.node_id(target),
            "--batch",
            "10",
            "--yes",
            "--state",
            str(state),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while True:  # wait for real progress, then kill it mid-run
        assert time.monotonic() < deadline, "the reshard never progressed"
        assert proc.poll() is None, "the reshard ended before it could be interrupted"
        try:
            done = len(json.loads(state.read_text())["done"])
        except (FileNotFoundError, ValueError):
            done = 0
        if done >= 200:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    planned = {s for s, _, _ in json.loads(state.read_text())["moves"]}
    assert planned - set(cluster.slots_of(target))  # really unfinished
    again = subprocess.run(
        [
            *base,
            "--slots",
            "10",
            "--from",
            source.address,
            "--to",
            target.address,
            "--yes",
            "--state",
            str(state),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 2 and "--resume" in again.stderr  # a new run is refused
    resumed = subprocess.run(
        [*base, "--resume", "--state", str(state)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.startswith("done: 2000 slots")
    missing = planned - set(cluster.slots_of(target))
    assert not missing, (
        sorted(missing)[:10],
        len(missing),
        resumed.stdout,
        [
            (
                p.address,
                [
                    v.address
                    for v in cluster.nodes_view(p)
                    if any(a <= min(missing) <= b for a, b in v.slots)
                ],
            )
            for p in cluster.processes
        ],
    )
    report = diagnose(cluster.url, sample=0)
    opened = [f for f in report.findings if f.check == "cluster.open_slots"]
    assert [f.status.value for f in opened] == ["pass"], (opened, resumed.stdout, resumed.stderr)
    check_all(cluster)


def test_doctor_fix_closes_a_stuck_slot_and_covers_an_unserved_one(
    redis_topologies: Any,
) -> None:
    cluster: Cluster = redis_topologies.cluster(3, 0)
    fill(cluster, 2000)
    source, target = cluster.primaries()[:2]
    stuck = cluster.slots_of(source)[0]
    with source.client() as c:
        c.execute_command("CLUSTER", "SETSLOT", stuck, "MIGRATING", cluster.node_id(target))
    with target.client() as c:  # a slot of the target's that holds no key
        empty = next(
            s
            for s in cluster.slots_of(target)
            if not c.execute_command("CLUSTER", "COUNTKEYSINSLOT", s)
        )
    for proc in cluster.processes:
        with proc.client() as c:
            c.execute_command("CLUSTER", "DELSLOTS", empty)
    fixed = subprocess.run(
        [
            sys.executable,
            "-m",
            "smartcache",
            "doctor",
            cluster.url,
            "--sample",
            "0",
            "--fix",
            "--yes",
            "--color",
            "never",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert f"fixed: slot {stuck}: set STABLE on {source.address} (nothing moved)" in fixed.stdout
    assert f"fixed: slot {empty}: given to" in fixed.stdout
    deadline = time.monotonic() + 30
    while True:  # the new owner's claim reaches every node by gossip
        report = diagnose(cluster.url, sample=0)
        statuses = {
            f.check: f.status.value for f in report.findings if f.check.startswith("cluster.")
        }
        if statuses.get("cluster.slots") == "pass" or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert statuses["cluster.slots"] == "pass" and statuses["cluster.open_slots"] == "pass"
    check_all(cluster, 2000)


def test_slots_left_open_at_each_step_are_closed(redis_topologies: Any) -> None:
    """An interruption after each step of a slot move, made by hand on real nodes; then
    ``close_open_slots`` closes each one the right way and no key is lost."""
    cluster: Cluster = redis_topologies.cluster(3, 0)
    fill(cluster, 3000)
    src, dst = cluster.primaries()[:2]
    src_id, dst_id = cluster.node_id(src), cluster.node_id(dst)
    with src.client() as s:
        with_keys = [x for x in cluster.slots_of(src) if s.cluster("countkeysinslot", x)][:3]
    after_importing, after_migrate, after_target_node = with_keys
    with src.client() as s, dst.client() as d:
        # 1: the target importing, the source not yet migrating
        d.execute_command("CLUSTER", "SETSLOT", after_importing, "IMPORTING", src_id)
        # 2: both open, the keys moved
        d.execute_command("CLUSTER", "SETSLOT", after_migrate, "IMPORTING", src_id)
        s.execute_command("CLUSTER", "SETSLOT", after_migrate, "MIGRATING", dst_id)
        # 3: the keys moved, the target took the slot, the source never heard
        d.execute_command("CLUSTER", "SETSLOT", after_target_node, "IMPORTING", src_id)
        s.execute_command("CLUSTER", "SETSLOT", after_target_node, "MIGRATING", dst_id)
        for slot in (after_migrate, after_target_node):
            keys = s.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1000)
            s.execute_command("MIGRATE", dst.host, dst.port, "", 0, 5000, "KEYS", *keys)
        d.execute_command("CLUSTER", "SETSLOT", after_target_node, "NODE", dst_id)
    report = diagnose(cluster.url, sample=0)
    (opened,) = [f for f in report.findings if f.check == "cluster.open_slots"]
    assert opened.status.value == "fail"  # seen on every node, not only the URL's
    with src.client(decode_responses=True) as s:  # Valkey clears it when the owner changes
        nodes = s.execute_command("CLUSTER", "NODES")
        own = next(line for line in nodes.splitlines() if "myself" in line)
        still_open = f"[{after_target_node}->-" in own
    with Resharder(cluster.url) as r:
        done = r.close_open_slots()
    expected = [
        f"slot {after_importing}: set STABLE on {dst.address} (nothing moved)",
        f"slot {after_migrate}: finished moving {src.address} -> {dst.address}",
    ]
    if still_open:  # Redis 7: the source keeps migrating a slot it no longer owns
        expected.append(
            f"slot {after_target_node}: {dst.address} owns it; told {src.address} and the others"
        )
    assert done == expected
    assert after_importing in cluster.slots_of(src)
    assert {after_migrate, after_target_node} <= set(cluster.slots_of(dst))
    report = diagnose(cluster.url, sample=0)
    (opened,) = [f for f in report.findings if f.check == "cluster.open_slots"]
    assert opened.status.value == "pass", opened
    check_all(cluster, 3000)
