from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis._parsers.encoders import Encoder
from redis.crc import key_slot as redis_key_slot

from smartcache import ConfigurationError, key_slot
from smartcache.core.slots import SLOT_COUNT, encode_key

ENCODER = Encoder("utf-8", "strict", False)

brace_text = st.text(alphabet="{}ab\x00é", max_size=12)
keys = st.one_of(
    st.binary(max_size=48),
    st.text(max_size=32),
    brace_text,
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
)


@pytest.mark.parametrize(
    ("key", "slot"),
    [
        (b"123456789", 0x31C3 % SLOT_COUNT),  # the CRC16-XMODEM check value
        ("", 0),
        ("foo", 12182),
        ("user:{1000}:profile", key_slot("1000")),
        ("{}", key_slot(b"{}")),
        ("{{a}}", key_slot(b"{a")),
        ("a{}b{c}", key_slot(b"a{}b{c}")),
        ("a{b", key_slot(b"a{b")),
        ("a}b{", key_slot(b"a}b{")),
        ("x{y}z{w}", key_slot(b"y")),
    ],
)
def test_known_slots(key: str | bytes, slot: int) -> None:
    assert key_slot(key) == slot


def test_hash_tag_groups_keys() -> None:
    assert key_slot("user:{1000}:profile") == key_slot("user:{1000}:orders")
    assert key_slot("user:1000:profile") != key_slot("user:1000:orders")


@given(keys)
@settings(max_examples=3000)
def test_matches_redis_py_for_what_redis_py_sends(key: bytes | str | int | float) -> None:
    encoded = ENCODER.encode(key)
    assert encode_key(key) == encoded
    assert key_slot(key) == redis_key_slot(encoded)
    assert 0 <= key_slot(key) < SLOT_COUNT


@pytest.mark.parametrize("bad", [True, None, [b"a"], {"a": 1}, object()])
def test_refuses_what_redis_py_refuses(bad: object) -> None:
    with pytest.raises(ConfigurationError, match="cannot be sent|ambiguous"):
        key_slot(bad)  # type: ignore[arg-type]


def test_bytes_like_keys() -> None:
    assert key_slot(bytearray(b"abc")) == key_slot(b"abc")  # type: ignore[arg-type]
    assert key_slot(memoryview(b"abc")) == key_slot(b"abc")  # type: ignore[arg-type]
