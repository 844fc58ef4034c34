"""Packing commands as RESP with ``hiredis.pack_command``, refusing what redis-py refuses.

Pure: no I/O. ``str`` arguments are encoded as UTF-8 by hiredis itself; other encodings
(``ConnectionSettings.encoding``) go through :class:`EncodingPacker`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import hiredis
import redis.exceptions as rx

from smartcache.wire.settings import ConnectionSettings

__all__ = ["EncodingPacker", "data_error", "pack_command", "pack_commands", "packer_for"]

Packer = Callable[[tuple[Any, ...]], bytes]
_hiredis_pack: Final[Packer] = hiredis.pack_command


def data_error(args: Iterable[object]) -> rx.DataError:
    """The error redis-py's ``Encoder`` raises for an argument it cannot send."""
    for arg in args:
        if isinstance(arg, bool) or not isinstance(arg, bytes | memoryview | str | int | float):
            return rx.DataError(
                f"Invalid input of type: '{type(arg).__name__}'. "
                "Convert to a bytes, string, int or float first."
            )
    return rx.DataError("command arguments cannot be packed")


def pack_command(args: Sequence[Any]) -> bytes:
    """Pack one command as RESP, encoding ``str`` as UTF-8 like redis-py's default.

    ``bytes``, ``memoryview``, ``str``, ``int`` and ``float`` are accepted (numbers as
    their ``repr``); ``bool``, ``None`` and anything else raise
    :class:`redis.exceptions.DataError` with redis-py's message.
    """
    try:
        return _hiredis_pack(tuple(args))
    except TypeError:
        raise data_error(args) from None


def pack_commands(commands: Iterable[Sequence[Any]]) -> bytes:
    """Pack several commands into one buffer, for a single ``sendall``."""
    return b"".join([pack_command(args) for args in commands])


class EncodingPacker:
    """Packs with a non-UTF-8 ``encoding``/``encoding_errors``, as redis-py's Encoder would."""

    __slots__ = ("encoding", "errors")

    def __init__(self, encoding: str, errors: str) -> None:
        self.encoding = encoding
        self.errors = errors

    def __call__(self, args: tuple[Any, ...]) -> bytes:
        enc, errors = self.encoding, self.errors
        return _hiredis_pack(
            tuple(a.encode(enc, errors) if isinstance(a, str) else a for a in args)
        )


def packer_for(settings: ConnectionSettings) -> Packer:
    """The fastest packer that encodes ``str`` as ``settings`` asks."""
    utf8 = settings.encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    if utf8 and settings.encoding_errors == "strict":
        return _hiredis_pack
    return EncodingPacker(settings.encoding, settings.encoding_errors)
