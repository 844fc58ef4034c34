"""Key slots: ``CRC16-XMODEM(key) % 16384`` with hash tags, as the Redis Cluster spec defines.

Keys are encoded exactly as redis-py encodes them (``str`` as UTF-8, ``int``/``float`` by
``repr``), so a key hashes to the slot the server computes for the bytes redis-py sends.
Pure: never does I/O.
"""

from __future__ import annotations

from binascii import crc_hqx

from smartcache.exceptions import InvalidArgumentError

__all__ = ["SLOT_COUNT", "encode_key", "key_slot"]

SLOT_COUNT = 16384


def encode_key(key: object) -> bytes:
    """Return the bytes redis-py would send for ``key``.

    Raises :class:`~smartcache.exceptions.InvalidArgumentError` (a ``DataError``) for the
    types redis-py refuses (``bool``, ``None``, containers).
    """
    if isinstance(key, bytes):
        return key
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, bool):
        raise InvalidArgumentError(
            "a key of type bool is ambiguous; convert it to str, bytes, int or float first"
        )
    if isinstance(key, int | float):
        return repr(key).encode()
    if isinstance(key, bytearray | memoryview):
        return bytes(key)
    raise InvalidArgumentError(
        f"a key of type {type(key).__name__} cannot be sent to Redis; use str, bytes, int or float"
    )


def key_slot(key: bytes | str | int | float) -> int:
    """Return the cluster hash slot (0..16383) of ``key``.

    When the key contains ``{...}`` with non-empty content, only the content of the first
    such tag is hashed, so ``user:{1000}:profile`` and ``user:{1000}:orders`` share a slot.
    """
    if type(key) is not bytes:
        key = key.encode() if type(key) is str else encode_key(key)
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return crc_hqx(key, 0) & 16383  # == % SLOT_COUNT; a literal saves a global lookup
