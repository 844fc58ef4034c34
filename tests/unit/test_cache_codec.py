from __future__ import annotations

import importlib.util
import json
import struct
from typing import Any

import pytest

from smartcache.cache._codec import (
    FORMAT_VERSION,
    HEADER_SIZE,
    CorruptEntryError,
    decode_entry,
    encode_entry,
    get_serializer,
)

JSON = get_serializer("json")
PICKLE = get_serializer("pickle")


def test_round_trip_keeps_header_fields() -> None:
    data = encode_entry({"a": [1, 2]}, serializer=JSON, expiry_ms=123456, load_us=789)
    assert data[:2] == b"SC" and data[2] == FORMAT_VERSION and data[3] == JSON.ident
    entry = decode_entry(data, JSON)
    assert entry is not None
    assert entry.value == {"a": [1, 2]}
    assert (entry.expiry_ms, entry.load_us, entry.serializer_id) == (123456, 789, 1)


def test_missing_key_is_none() -> None:
    assert decode_entry(None, JSON) is None


def test_large_payload_is_compressed_small_is_not() -> None:
    big = "x" * 20_000
    data = encode_entry(big, serializer=JSON, expiry_ms=0, load_us=0, compress_over=10_240)
    assert data[4] != 0 and len(data) < 2_000
    assert decode_entry(data, JSON).value == big  # type: ignore[union-attr]
    small = encode_entry("x" * 100, serializer=JSON, expiry_ms=0, load_us=0)
    assert small[4] == 0
    raw = encode_entry(big, serializer=JSON, expiry_ms=0, load_us=0, compress_over=None)
    assert raw[4] == 0


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"plain value",
        b"XX" + b"\x00" * 20,
        struct.pack(">2sBBBqI", b"SC", 99, 1, 0, 0, 0) + b"1",  # future format version
        struct.pack(">2sBBBqI", b"SC", 1, 1, 0, 0, 0) + b"{not json",
        struct.pack(">2sBBBqI", b"SC", 1, 1, 1, 0, 0) + b"not zlib",
        "a str reply",
    ],
)
def test_foreign_or_corrupt_entries_raise_corrupt(data: bytes | str) -> None:
    with pytest.raises(CorruptEntryError):
        decode_entry(data, JSON)


def test_entry_of_another_serializer_is_foreign() -> None:
    data = encode_entry([1], serializer=PICKLE, expiry_ms=0, load_us=0)
    with pytest.raises(CorruptEntryError):
        decode_entry(data, JSON)  # a JSON reader never unpickles
    assert decode_entry(data, PICKLE).value == [1]  # type: ignore[union-attr]


def test_pickle_handles_python_objects() -> None:
    value = {1: {2, 3}, "t": (1, 2)}
    data = encode_entry(value, serializer=PICKLE, expiry_ms=0, load_us=0)
    assert decode_entry(data, PICKLE).value == value  # type: ignore[union-attr]


def test_load_time_is_clamped_and_staleness() -> None:
    data = encode_entry(1, serializer=JSON, expiry_ms=1000, load_us=2**40)
    entry = decode_entry(data, JSON)
    assert entry is not None and entry.load_us == 0xFFFFFFFF
    assert not entry.is_stale(999) and entry.is_stale(1000)
    assert HEADER_SIZE == 17


def test_unknown_serializer_name() -> None:
    with pytest.raises(ValueError, match="unknown serializer"):
        get_serializer("yaml")


@pytest.mark.skipif(importlib.util.find_spec("msgpack") is not None, reason="msgpack installed")
def test_msgpack_needs_the_optional_package() -> None:
    with pytest.raises(ImportError):
        get_serializer("msgpack")


@pytest.mark.parametrize(
    "data",
    [
        b'{"a":[1,2.5,"\xc3\xa9",null,true]}',  # what dumps writes
        '{"a":"é"}'.encode("utf-16"),  # another encoding json.loads detects
        b'\xef\xbb\xbf{"a":1}',  # a UTF-8 BOM
        bytearray(b'{"a":1}'),
        '{"a":1}',
    ],
)
def test_json_loads_reads_what_json_loads_reads(data: Any) -> None:
    assert get_serializer("json").loads(data) == json.loads(data)


@pytest.mark.parametrize("data", [b"{not json", b"\xff\xfe\x00", b""])
def test_json_loads_fails_as_json_loads_fails(data: bytes) -> None:
    with pytest.raises(ValueError) as ours:
        get_serializer("json").loads(data)
    with pytest.raises(ValueError) as theirs:
        json.loads(data)
    assert type(ours.value) is type(theirs.value) and str(ours.value) == str(theirs.value)
