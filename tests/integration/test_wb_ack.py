"""The write-behind acknowledgement on a real server: it removes exactly the entries it
acknowledges. One XTRIM when every entry up to them was delivered and none is pending (the
common case), else one XDEL of their IDs: an entry still pending to another flusher, or
one the group never delivered (a promoted replica that missed the delivery), stays."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from smartcache import SmartClient
from smartcache.cache._wb_core import QueueLayout, ack_command, coalesce

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def setup(redis_standalone: Any) -> Iterator[tuple[SmartClient, QueueLayout]]:
    client = SmartClient.from_url(redis_standalone.url)
    layout = QueueLayout(f"ack{uuid.uuid4().hex[:8]}", partitions=1)
    stream = layout.stream(0)
    for i in range(1, 11):
        client.xadd(stream, {"op": "s", "k": f"k{i}", "v": json.dumps(i), "px": 60000}, id=f"1-{i}")
    client.xgroup_create(stream, layout.group, id="0")
    yield client, layout
    client.delete(stream, layout.attempts(0), layout.dirty(0))
    client.close()


def _read(client: SmartClient, layout: QueueLayout, consumer: str, count: int) -> list[str]:
    reply = client.xreadgroup(layout.group, consumer, {layout.stream(0): ">"}, count=count)
    return [entry_id.decode() for entry_id, _fields in reply[0][1]]


def _ack(client: SmartClient, layout: QueueLayout, ids: list[str], top: str) -> int:
    """Run the flusher's acknowledgement of ``ids``; XACK's count (those in the PEL)."""
    fields = {b"op": b"s", b"v": b"1", b"px": b"60000"}
    changes = coalesce([(0, i, {**fields, b"k": f"k{i}".encode()}) for i in ids])
    return int(client.execute_command(*ack_command(layout, 0, changes, top)))


def _ids(client: SmartClient, layout: QueueLayout) -> list[str]:
    return [entry_id.decode() for entry_id, _ in client.xrange(layout.stream(0))]


def test_nothing_pending_below_one_xtrim_removes_them(
    setup: tuple[SmartClient, QueueLayout],
) -> None:
    client, layout = setup
    assert _read(client, layout, "a", 4) == ["1-1", "1-2", "1-3", "1-4"]
    client.config_resetstat()
    assert _ack(client, layout, ["1-1", "1-2", "1-3", "1-4"], "1-4") == 4
    assert _ids(client, layout) == [f"1-{i}" for i in range(5, 11)]  # undelivered ones stay
    stats = client.info("commandstats")
    assert "cmdstat_xtrim" in stats and "cmdstat_xdel" not in stats


def test_an_entry_pending_to_another_flusher_stays(
    setup: tuple[SmartClient, QueueLayout],
) -> None:
    client, layout = setup
    assert _read(client, layout, "a", 4) == ["1-1", "1-2", "1-3", "1-4"]
    assert _read(client, layout, "b", 4) == ["1-5", "1-6", "1-7", "1-8"]
    assert _ack(client, layout, ["1-5", "1-6", "1-7", "1-8"], "1-8") == 4  # a holds 1-1..1-4
    assert _ids(client, layout) == ["1-1", "1-2", "1-3", "1-4", "1-9", "1-10"]
    assert _ack(client, layout, ["1-1", "1-2", "1-3", "1-4"], "1-4") == 4  # none pending below
    assert _ids(client, layout) == ["1-9", "1-10"]
    assert client.xpending(layout.stream(0), layout.group)["pending"] == 0


def test_an_entry_the_group_never_delivered_stays(
    setup: tuple[SmartClient, QueueLayout],
) -> None:
    # A flusher committed 1-5 and 1-6 it read from the old primary; the promoted replica
    # never saw that delivery: its group delivered up to 1-2, so 1-3 and 1-4 wait for a
    # flusher. Trimming up to 1-6 would drop them unflushed.
    client, layout = setup
    assert _read(client, layout, "a", 2) == ["1-1", "1-2"]
    assert _ack(client, layout, ["1-1", "1-2"], "1-2") == 2
    assert _ack(client, layout, ["1-5", "1-6"], "1-6") == 0  # not in this server's PEL
    assert _ids(client, layout) == ["1-3", "1-4", *(f"1-{i}" for i in range(7, 11))]
    assert _read(client, layout, "a", 2) == ["1-3", "1-4"]  # delivered, not lost


def test_a_stream_or_group_that_is_gone_fails_nothing(
    setup: tuple[SmartClient, QueueLayout],
) -> None:
    # a failover to a replica that never had the partition: acknowledging counts 0, as
    # XACK does, instead of failing the flusher's round
    client, layout = setup
    assert _read(client, layout, "a", 2) == ["1-1", "1-2"]
    client.xgroup_destroy(layout.stream(0), layout.group)
    assert _ack(client, layout, ["1-1", "1-2"], "1-2") == 0
    client.delete(layout.stream(0))
    assert _ack(client, layout, ["1-3"], "1-3") == 0
