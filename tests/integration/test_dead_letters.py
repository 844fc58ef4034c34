"""Dead letters you can operate: list, show, replay (original order and version: a newer
write of the key still wins) and drop, through the API (sync and async) and the
``smartcache write-behind dead-letters`` command, on a real server and a real SQLite
database."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from smartcache.cache import SQLiteStore, StoreItem
from smartcache.cache._wb_core import FlushOptions
from tests.integration._cache_world import World

pytestmark = pytest.mark.timeout(120)


class Refusing(SQLiteStore):
    """Refuses the values in ``refused`` (a constraint), until they are taken out."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.refused: set[Any] = set()

    def write_many(self, items: Sequence[StoreItem]) -> None:
        bad = [i.key for i in items if i.value in self.refused]
        if bad:
            raise ValueError(f"constraint violated by {bad}")
        super().write_many(items)


def test_replay_keeps_order_and_versions_and_drop_removes(
    world: World, redis_standalone: Any, tmp_path: Path
) -> None:
    client = world.client(url=redis_standalone.url)
    store = Refusing(str(tmp_path / "app.db"))
    store.refused = {"old", "first", "second"}
    name = f"dl{uuid.uuid4().hex[:8]}"
    wb = world.write_behind(client, store, name=name, options=FlushOptions(max_attempts=1))
    try:
        wb.set("k", "old")  # refused: dead-lettered
        wb.set("a", "first")
        wb.flush(timeout=30)
        wb.set("a", "second")  # refused too: a second dead letter of "a", newer
        wb.flush(timeout=30)
        wb.set("k", "new")  # a newer write of k reaches the store
        wb.flush(timeout=30)
        letters = wb.dead_letters()
        assert sorted((d["key"], d["op"]) for d in letters) == [("a", "set")] * 2 + [("k", "set")]
        of_a = [d for d in letters if d["key"] == "a"]  # one key's letters: in change order
        assert [wb.policy.serializer.loads(d["raw_value"]) for d in of_a] == ["first", "second"]
        assert [d["version"] for d in letters] == sorted(d["version"] for d in letters)
        assert all(d["attempts"] == 1 and "constraint" in d["error"] for d in letters)
        assert store.items() == {"k": "new"}

        planned = wb.replay_dead_letters(dry_run=True)
        assert planned == letters and len(wb.dead_letters()) == 3  # nothing moved

        store.refused = set()
        replayed = wb.replay_dead_letters(keys=["k", "a"])
        assert sorted(d["key"] for d in replayed) == ["a", "a", "k"]
        assert all(d["requeued_id"] for d in replayed)
        wb.drain(timeout=30)
        # k: the replayed "old" kept its version, and "new" is newer: the store kept "new".
        # a: both replayed, in their original order: "second" wins
        assert store.items() == {"k": "new", "a": "second"}
        assert wb.dead_letters() == []
        assert wb.replay_dead_letters() == []  # nothing left: a no-op

        store.refused = {"gone"}
        wb.set("g", "gone")
        wb.flush(timeout=30)
        (dead,) = wb.dead_letters()
        assert wb.drop_dead_letters([dead["dead_id"]]) == [dead]
        assert wb.dead_letters() == [] and "g" not in store.items()
    finally:
        world.close_write_behind(wb, timeout=10)
        store.close()


def test_the_dead_letters_command(redis_standalone: Any, tmp_path: Path) -> None:
    from smartcache import SmartClient, WriteBehind

    client = SmartClient.from_url(redis_standalone.url)
    store = Refusing(str(tmp_path / "cli.db"))
    store.refused = {"x", "y"}
    name = f"dlcli{uuid.uuid4().hex[:6]}"
    wb = WriteBehind(client, store, name=name, options=FlushOptions(max_attempts=1))
    base = [sys.executable, "-m", "smartcache", "write-behind", "dead-letters"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*base, *args[:1], redis_standalone.url, "--name", name, *args[1:]],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    try:
        wb.set("u:1", "x")
        wb.set("u:2", "y")
        wb.flush(timeout=30)
        listed = run("list", "--json")
        assert listed.returncode == 0, listed.stderr
        letters = json.loads(listed.stdout)["letters"]
        assert sorted((d["key"], d["value"]) for d in letters) == [("u:1", "x"), ("u:2", "y")]
        shown = run("show", "--key", "u:2")
        assert shown.returncode == 0 and "value: 'y'" in shown.stdout
        refused = run("replay")
        assert refused.returncode == 2 and "--all" in refused.stderr  # no silent "all"
        dry = run("replay", "--all", "--dry-run")
        assert dry.stdout.startswith("would replay: 2 dead letter(s)")
        assert len(wb.dead_letters()) == 2
        store.refused = {"y"}
        done = run("replay", "--key", "u:1", "--yes")
        assert done.returncode == 0 and done.stdout.startswith("replayed: 1 dead letter(s)")
        wb.drain(timeout=30)
        assert store.items() == {"u:1": "x"}
        dropped = run("drop", "--all", "--yes", "--json")
        assert [d["key"] for d in json.loads(dropped.stdout)["letters"]] == ["u:2"]
        assert wb.dead_letters() == []
    finally:
        wb.close(timeout=10)
        store.close()
        client.close()
