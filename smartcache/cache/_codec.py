"""Cache entry format: a small versioned header followed by the (maybe compressed) payload.

Pure: no I/O, no clock (times are passed in). Layout (big-endian, 17 bytes)::

    magic "SC" | format version u8 | serializer id u8 | flags u8 | expiry ms i64 | load us u32

``expiry`` is the *logical* expiry (epoch milliseconds) after which the value is stale and
should be refreshed; the physical Redis TTL may be longer (``stale_ttl``). ``load`` is how long
the loader took, which XFetch uses as its ``delta``. Anything that does not parse is a
:class:`CorruptEntryError`, which callers treat as a miss (and overwrite), never as a failure.
"""

from __future__ import annotations

import json
import pickle
import struct
import zlib
from dataclasses import dataclass
from typing import Any, Final, Protocol

__all__ = [
    "FORMAT_VERSION",
    "CorruptEntryError",
    "Entry",
    "Serializer",
    "decode_entry",
    "encode_entry",
    "get_serializer",
]

MAGIC: Final = b"SC"
FORMAT_VERSION: Final = 1
_HEADER: Final = struct.Struct(">2sBBBqI")
#: the logical expiry of a write-behind entry: never (it is fresh until it is gone: pinned
#: while its change is queued, then for its TTL)
PINNED_EXPIRY_MS: Final = 2**62
HEADER_SIZE: Final = _HEADER.size

FLAG_ZLIB: Final = 0x01
FLAG_ZSTD: Final = 0x02
_MAX_LOAD_US: Final = 0xFFFFFFFF


class CorruptEntryError(ValueError):
    """The bytes under a cache key are not an entry this version can read (treated as a miss)."""


class Serializer(Protocol):
    """Turns values into bytes and back; ``ident`` is stored in every entry header."""

    ident: int
    name: str

    def dumps(self, value: Any) -> bytes:
        """Serialize ``value``."""
        ...

    def loads(self, data: bytes) -> Any:
        """Deserialize ``data``."""
        ...


_JSON_DECODE = json.JSONDecoder().decode


class JsonSerializer:
    """Compact JSON (the default): portable, safe to read from any language."""

    ident = 1
    name = "json"

    def dumps(self, value: Any) -> bytes:
        """Serialize ``value`` as compact UTF-8 JSON."""
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()

    def loads(self, data: bytes) -> Any:
        """Parse JSON bytes."""
        if type(data) is bytes:  # what dumps writes, UTF-8: skip json.loads' sniffing
            try:
                return _JSON_DECODE(data.decode("utf-8", "surrogatepass"))
            except ValueError:
                pass  # another encoding, a BOM, or not JSON: json.loads decides and says
        return json.loads(data)


class PickleSerializer:
    """Pickle: any Python object, but only for data you trust (loading pickle runs code)."""

    ident = 2
    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        """Pickle ``value`` with the highest protocol."""
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)

    def loads(self, data: bytes) -> Any:
        """Unpickle ``data``."""
        return pickle.loads(data)


class MsgpackSerializer:
    """MessagePack via the optional ``msgpack`` package (not a smartcache dependency)."""

    ident = 3
    name = "msgpack"

    def __init__(self) -> None:
        import msgpack  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415 - optional

        self._msgpack: Any = msgpack

    def dumps(self, value: Any) -> bytes:
        """Pack ``value``."""
        data: bytes = self._msgpack.packb(value, use_bin_type=True)
        return data

    def loads(self, data: bytes) -> Any:
        """Unpack ``data``."""
        return self._msgpack.unpackb(data, raw=False)


_BY_NAME: dict[str, type[JsonSerializer | PickleSerializer | MsgpackSerializer]] = {
    "json": JsonSerializer,
    "pickle": PickleSerializer,
    "msgpack": MsgpackSerializer,
}
_INSTANCES: dict[str, Serializer] = {}


def get_serializer(spec: str | Serializer = "json") -> Serializer:
    """The serializer named ``spec`` ("json", "pickle", "msgpack") or ``spec`` itself.

    ``msgpack`` raises :class:`ImportError` when the optional package is not installed.
    """
    if not isinstance(spec, str):
        return spec
    try:
        cls = _BY_NAME[spec]
    except KeyError:
        raise ValueError(f"unknown serializer {spec!r}; use one of {sorted(_BY_NAME)}") from None
    instance = _INSTANCES.get(spec)
    if instance is None:
        instance = _INSTANCES[spec] = cls()
    return instance


def builtin_name(serializer: Serializer) -> str | None:
    """``serializer``'s name when it is one of the built-in ones (their bytes mean the same
    everywhere), else ``None`` (an object of the application's: nothing is assumed)."""
    name = getattr(serializer, "name", None)
    if isinstance(name, str) and type(serializer) is _BY_NAME.get(name):
        return name
    return None


def _zstd() -> Any:
    try:
        import zstandard  # type: ignore[import-not-found, unused-ignore]  # noqa: PLC0415 - optional
    except ImportError:
        return None
    return zstandard


_ZSTD: Final[Any] = _zstd()


@dataclass(frozen=True, slots=True)
class Entry:
    """A decoded cache entry."""

    value: Any
    expiry_ms: int
    load_us: int
    serializer_id: int

    def is_stale(self, now_ms: int) -> bool:
        """Whether the logical expiry has passed (``expiry_ms == 0`` means never)."""
        return self.expiry_ms != 0 and now_ms >= self.expiry_ms


def encode_entry(
    value: Any,
    *,
    serializer: Serializer,
    expiry_ms: int,
    load_us: int,
    compress_over: int | None = 10_240,
) -> bytes:
    """Serialize ``value`` behind a header; compress payloads larger than ``compress_over``."""
    payload = serializer.dumps(value)
    flags = 0
    if compress_over is not None and len(payload) > compress_over:
        if _ZSTD is not None:
            payload = _ZSTD.ZstdCompressor().compress(payload)
            flags |= FLAG_ZSTD
        else:
            payload = zlib.compress(payload, 6)
            flags |= FLAG_ZLIB
    load_us = min(max(load_us, 0), _MAX_LOAD_US)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, serializer.ident, flags, expiry_ms, load_us)
    return header + payload


def decode_entry(data: bytes | str | None, serializer: Serializer) -> Entry | None:
    """Decode what GET returned: ``None`` for a missing key; raise CorruptEntryError if foreign.

    An entry written with another serializer is foreign too: a JSON reader never unpickles
    bytes it did not ask for.
    """
    if data is None:
        return None
    if isinstance(data, str):  # a client with decode_responses=True cannot hold our bytes
        raise CorruptEntryError("entry came back as str; use a client without decode_responses")
    if len(data) < HEADER_SIZE:
        raise CorruptEntryError("entry shorter than its header")
    magic, version, ser_id, flags, expiry_ms, load_us = _HEADER.unpack_from(data)
    if magic != MAGIC or version != FORMAT_VERSION:
        raise CorruptEntryError(f"foreign entry (magic {magic!r}, version {version})")
    if ser_id != serializer.ident:
        raise CorruptEntryError(f"entry written by serializer {ser_id}, not {serializer.name}")
    payload = data[HEADER_SIZE:]
    try:
        if flags & FLAG_ZSTD:
            if _ZSTD is None:
                raise CorruptEntryError("entry is zstd-compressed and zstandard is not installed")
            payload = _ZSTD.ZstdDecompressor().decompress(payload)
        elif flags & FLAG_ZLIB:
            payload = zlib.decompress(payload)
        value = serializer.loads(payload)
    except CorruptEntryError:
        raise
    except Exception as exc:
        raise CorruptEntryError(f"undecodable payload: {exc!r}") from exc
    return Entry(value, expiry_ms, load_us, ser_id)
