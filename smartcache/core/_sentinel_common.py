"""Small readers shared by the Sentinel parsers: reply values as text, ints and ports.

Pure: no I/O. ``bytes`` (RESP, ``decode_responses=False``) and ``str`` read the same.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Address", "as_int", "as_port", "as_text", "format_address"]

#: ``(host, port)`` of a node or sentinel.
Address = tuple[str, int]


def format_address(address: Address) -> str:
    """``host:port``, as errors and the rest of smartcache name a node."""
    return f"{address[0]}:{address[1]}"


def as_text(value: Any) -> str:
    """A reply value as text (``bytes`` decoded as UTF-8)."""
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def as_int(value: Any, default: int = 0) -> int:
    """A reply value as an int, or ``default`` when it is not one."""
    try:
        return int(as_text(value))
    except (TypeError, ValueError):
        return default


def as_port(value: Any) -> int:
    """A reply value as a TCP port; ``ValueError`` when it is not one."""
    port = as_int(value, -1)
    if not 0 < port < 65536:
        raise ValueError(f"invalid port {value!r}")
    return port
