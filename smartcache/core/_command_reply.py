"""Parse the raw reply of ``COMMAND`` into plain command entries.

Accepts what hiredis (or redis-py without response callbacks) returns for ``COMMAND`` over
RESP2 (maps as flat ``[key, value, ...]`` lists, strings as bytes) and RESP3 (maps as dicts,
sets as lists or sets), from servers with key specs and tips (Redis >= 7, Valkey) or without
(older servers: only ``first_key``/``last_key``/``step``). Each entry is ``[name, arity, flags,
first_key, last_key, step, acl_categories, tips, key_specs, subcommands]``. Pure: never does
I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol

from smartcache.core._command_static import StaticEntry
from smartcache.core._keyspec import KeySpec

__all__ = ["parse_command_reply"]


class _Known(Protocol):
    """What the parser needs to know about a command it may have to complete."""

    @property
    def key_specs(self) -> tuple[KeySpec, ...]: ...

    @property
    def tips(self) -> frozenset[str]: ...


def _text(value: object) -> str:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


def _texts(values: object) -> frozenset[str]:
    if not isinstance(values, Iterable) or isinstance(values, str | bytes):
        raise TypeError(f"expected a list, got {type(values).__name__}")
    return frozenset(_text(value).lower() for value in values)


def _as_map(value: object) -> dict[str, Any]:
    if isinstance(value, Mapping):
        return {_text(key).lower(): item for key, item in value.items()}
    if isinstance(value, list | tuple):
        return {_text(value[i]).lower(): value[i + 1] for i in range(0, len(value) - 1, 2)}
    raise TypeError(f"expected a map, got {type(value).__name__}")


def _key_spec(raw: object) -> KeySpec:
    spec = _as_map(raw)
    flags = _texts(spec.get("flags", ()))
    begin = _as_map(spec["begin_search"])
    find = _as_map(spec["find_keys"])
    begin_type = _text(begin.get("type", "unknown")).lower()
    find_type = _text(find.get("type", "unknown")).lower()
    begin_spec = _as_map(begin.get("spec") or [])
    find_spec = _as_map(find.get("spec") or [])
    values: dict[str, Any] = {"flags": flags}
    if begin_type == "index":
        values.update(begin="index", index=int(begin_spec["index"]))
    elif begin_type == "keyword":
        values.update(
            begin="keyword",
            index=0,
            keyword=_text(begin_spec["keyword"]).upper(),
            startfrom=int(begin_spec["startfrom"]),
        )
    else:
        values.update(begin="unknown", index=0)
    if find_type == "range":
        values.update(
            find="range",
            lastkey=int(find_spec["lastkey"]),
            keystep=int(find_spec["keystep"]),
            limit=int(find_spec["limit"]),
        )
    elif find_type == "keynum":
        values.update(
            find="keynum",
            keynumidx=int(find_spec["keynumidx"]),
            firstkey=int(find_spec["firstkey"]),
            keystep=int(find_spec["keystep"]),
        )
    else:
        values.update(find="unknown")
    return KeySpec(**values)


def _legacy_specs(first: int, last: int, step: int) -> tuple[KeySpec, ...]:
    # Before Redis 7: keys from first to last (negative: from the end) every step.
    if first <= 0:
        return ()
    lastkey = last - first if last >= 0 else last
    return (KeySpec(index=first, lastkey=lastkey, keystep=max(step, 1)),)


def _entries(entry: object, known: Mapping[str, _Known]) -> Iterator[StaticEntry]:
    if not isinstance(entry, list | tuple) or len(entry) < 6:
        raise TypeError("a COMMAND entry is a list of at least 6 elements")
    name = _text(entry[0]).lower()
    arity = int(entry[1])
    flags = _texts(entry[2])
    static = known.get(name)
    if len(entry) > 8:
        specs = tuple(_key_spec(raw) for raw in entry[8])
    elif "movablekeys" in flags and static is not None:
        specs = static.key_specs
    else:
        specs = _legacy_specs(int(entry[3]), int(entry[4]), int(entry[5]))
    if len(entry) > 7:
        tips = _texts(entry[7])
    else:
        tips = static.tips if static is not None else frozenset()
    yield name, arity, flags, specs, tips
    if len(entry) > 9:
        for sub in entry[9]:
            yield from _entries(sub, known)


def parse_command_reply(reply: object, known: Mapping[str, _Known]) -> list[StaticEntry]:
    """Return one ``(name, arity, flags, key_specs, tips)`` entry per command and subcommand.

    ``known`` (name -> spec) completes replies of servers without tips or key specs. Raises
    :class:`TypeError`, :class:`KeyError` or :class:`ValueError` on a malformed reply.
    """
    if isinstance(reply, Mapping):
        reply = list(reply.values())
    if not isinstance(reply, list | tuple):
        raise TypeError(f"a COMMAND reply is a list, got {type(reply).__name__}")
    return [item for entry in reply for item in _entries(entry, known)]
