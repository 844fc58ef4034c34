"""Packing commands as RESP with ``hiredis.pack_command``, exactly as the installed redis-py.

Pure: no I/O. The hot path hands the arguments to ``hiredis.pack_command`` (C), which
encodes ``str`` as UTF-8 and takes ``bytes``, ``memoryview``, ``int`` and ``float`` as
redis-py does. Everything else is redis-py's own decision, made by the installed
redis-py's packer (built once, never connected): argument types hiredis refuses
(``bytearray``, ``bool``, ``None``, enums...) are either packed as redis-py packs them or
refused with the ``DataError`` it raises, and a non-UTF-8 ``encoding=`` is applied exactly
as that redis-py applies it. Which release changed what (8.2 started honouring
``encoding=`` with hiredis and reworded the ``DataError``) is thus never written here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

import hiredis
from redis.connection import Connection as _RedisPyConnection

from smartcache.core.slots import key_slot
from smartcache.wire.settings import ConnectionSettings

__all__ = ["Undecoded", "pack_command", "pack_commands", "packer_for", "slot_function"]

Packer = Callable[[tuple[Any, ...]], bytes]
_hiredis_pack: Final[Packer] = hiredis.pack_command


@functools.cache
def _reference_packer(encoding: str, errors: str) -> Callable[..., list[bytes]]:
    """The installed redis-py's packer for these settings (a connection never opened)."""
    return _RedisPyConnection(encoding=encoding, encoding_errors=errors).pack_command  # type: ignore[no-untyped-call]


def _pack_as_redis_py(args: tuple[Any, ...], encoding: str, errors: str) -> bytes:
    """Pack as redis-py would, or raise the ``DataError`` it raises."""
    return b"".join(_reference_packer(encoding, errors)(*args))


def pack_command(args: Sequence[Any]) -> bytes:
    """Pack one command as RESP, as redis-py with its default ``encoding="utf-8"`` does.

    An argument redis-py refuses raises its :class:`redis.exceptions.DataError`.
    """
    args = tuple(args)
    try:
        return _hiredis_pack(args)
    except TypeError:
        return _pack_as_redis_py(args, "utf-8", "strict")


def pack_commands(commands: Iterable[Sequence[Any]]) -> bytes:
    """Pack several commands into one buffer, for a single ``sendall``."""
    return b"".join([pack_command(args) for args in commands])


class _EncodingPacker:
    """A non-UTF-8 ``encoding``/``encoding_errors``: redis-py's packer does all the work."""

    __slots__ = ("encoding", "errors")

    def __init__(self, encoding: str, errors: str) -> None:
        self.encoding = encoding
        self.errors = errors

    def __call__(self, args: tuple[Any, ...]) -> bytes:
        return _pack_as_redis_py(args, self.encoding, self.errors)


def packer_for(settings: ConnectionSettings) -> Packer:
    """The fastest packer that packs as the installed redis-py would with ``settings``.

    With the default encoding that is ``hiredis.pack_command`` itself: callers catch its
    ``TypeError`` and call :func:`pack_command`, which packs (or refuses) as redis-py.
    """
    utf8 = settings.encoding.lower().replace("_", "-") in ("utf-8", "utf8")
    if utf8 and settings.encoding_errors == "strict":
        return _hiredis_pack
    return _EncodingPacker(settings.encoding, settings.encoding_errors)


def slot_function(settings: ConnectionSettings) -> Callable[[Any], int]:
    """The hash slot of a key *as it goes on the wire* with ``settings``.

    With UTF-8 that is :func:`~smartcache.core.slots.key_slot` itself. With another
    ``encoding=`` a ``str`` key is hashed as the bytes the installed redis-py sends for it,
    so the slot always agrees with the node that receives the key.
    """
    if packer_for(settings) is _hiredis_pack:
        return key_slot
    packer = _EncodingPacker(settings.encoding, settings.encoding_errors)
    prefix = len(b"*2\r\n$1\r\nK\r\n$")

    def slot_of(key: Any) -> int:
        if not isinstance(key, str):
            return key_slot(key)
        packed = packer(("K", key))[prefix:]
        return key_slot(packed[packed.index(b"\r\n") + 2 : -2])

    return slot_of


class Undecoded(tuple):  # type: ignore[type-arg]
    """A command (its arguments) whose reply is read as bytes even with ``decode_responses``:
    redis-py's ``NEVER_DECODE`` (DUMP, FUNCTION DUMP...) inside a pipeline batch.

    The connections' ``execute_many`` and ``read_for`` see the mark; everything else
    treats it as the plain tuple it is.
    """

    __slots__ = ()
