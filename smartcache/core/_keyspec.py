"""Key specs: which arguments of a command are keys, as the server's ``COMMAND`` reply describes.

Implements the key-spec algorithms of Redis >= 7 / Valkey (``begin_search`` index or keyword,
``find_keys`` range or keynum) exactly as the server's ``getKeysUsingKeySpecs`` does, plus
hand-written rules for the two commands whose server specs are incomplete (SORT, MIGRATE).
Every rule is compiled once per command into a plain function so extraction on the hot path is
a slice or a tuple index. Pure: never does I/O, never imports socket, ssl, asyncio, threading
or time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

__all__ = ["Extractor", "KeySpec", "compile_key_rule", "to_int", "token"]

#: Extracts the key arguments (the caller's own objects, in order) from a full command tuple.
Extractor = Callable[[Sequence[Any]], tuple[Any, ...]]


def token(arg: object) -> str:
    """Return ``arg`` upper-cased as text when it could be a keyword, else ``""``.

    Keywords are ASCII, so bytes are decoded as latin-1 (never fails); numbers are never
    keywords.
    """
    if isinstance(arg, str):
        return arg.upper()
    if isinstance(arg, bytes | bytearray | memoryview):
        return bytes(arg).decode("latin-1").upper()
    return ""


def to_int(arg: object) -> int | None:
    """Return ``arg`` as an int (``2``, ``"2"``, ``b"2"``, any bytes-like ``2``), or None if
    it is not one."""
    if isinstance(arg, int) and not isinstance(arg, bool):
        return arg
    if isinstance(arg, memoryview):  # redis-py sends its bytes, so the server reads a number
        arg = arg.tobytes()
    if isinstance(arg, str | bytes | bytearray):
        try:
            return int(arg)
        except ValueError:
            return None
    return None


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One key spec of a command, as element 9 of a ``COMMAND`` entry describes it.

    ``begin`` is ``"index"`` (the first key is at ``index``), ``"keyword"`` (the first key
    follows ``keyword``, searched from ``startfrom``; negative searches backwards from the
    end) or ``"unknown"``. ``find`` is ``"range"`` (``lastkey`` relative to the first key,
    negative from the end; ``limit`` > 1 means "1/limit of the remaining arguments"),
    ``"keynum"`` (the number of keys is at ``keynumidx`` after the begin position, the keys
    start ``firstkey`` after it) or ``"unknown"``. Indices count the command name as 0.
    """

    begin: str = "index"
    index: int = 1
    keyword: str = ""
    startfrom: int = 0
    find: str = "range"
    lastkey: int = 0
    keystep: int = 1
    limit: int = 0
    keynumidx: int = 0
    firstkey: int = 1
    flags: frozenset[str] = frozenset()

    def positions(self, args: Sequence[Any]) -> range:
        """Return the argument positions this spec selects in ``args`` (empty if none).

        Like the server with ``GET_KEYSPEC_RETURN_PARTIAL``: a spec that does not apply
        (keyword absent, bad numkeys, out of bounds) selects nothing.
        """
        argc = len(args)
        first = self._first(args, argc)
        if not first:
            return range(0)
        step = self.keystep
        if self.find == "range":
            lastkey = self.lastkey
            if lastkey >= 0:
                last = first + lastkey
            elif not self.limit:
                last = argc + lastkey
            else:
                last = first + (argc - first) // self.limit + lastkey
        elif self.find == "keynum":
            at = first + self.keynumidx
            numkeys = to_int(args[at]) if at < argc else None
            if numkeys is None or numkeys < 0:
                return range(0)
            first += self.firstkey
            # Valkey counts keynum keys in steps (MSETEX k v k v); Redis 7 only uses step 1.
            last = first + (numkeys - 1) * step
        else:
            return range(0)
        if last >= argc or last < first or first >= argc:
            return range(0)
        return range(first, last + 1, step)

    def _first(self, args: Sequence[Any], argc: int) -> int:
        if self.begin == "index":
            return self.index
        if self.begin != "keyword":
            return 0
        startfrom = self.startfrom
        if startfrom > 0:
            search = range(startfrom, argc - 1)
        else:
            start = argc + startfrom
            search = range(start, 0, -1) if start < argc else range(0)
        keyword = self.keyword
        for i in search:
            if token(args[i]) == keyword:
                return i + 1
        return 0


def _extract_by_specs(specs: tuple[KeySpec, ...], args: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(args[i] for spec in specs for i in spec.positions(args))


def _no_keys(args: Sequence[Any]) -> tuple[Any, ...]:
    return ()


def _one_key(index: int, args: Sequence[Any]) -> tuple[Any, ...]:
    return (args[index],) if len(args) > index else ()


def _key_run(first: int, step: int, args: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(args[first::step])


def _sort_keys(args: Sequence[Any]) -> tuple[Any, ...]:
    # The server's own sortGetKeys: the STORE key is the last "STORE x" outside LIMIT/GET/BY.
    argc = len(args)
    if argc < 2:
        return ()
    store = 0
    i = 2
    while i < argc:
        word = token(args[i])
        if word == "LIMIT":
            i += 2
        elif word in ("GET", "BY"):
            i += 1
        elif word == "STORE" and i + 1 < argc:
            store = i + 1
        i += 1
    return (args[1], args[store]) if store else (args[1],)


_MIGRATE_SKIP = {"AUTH": 1, "AUTH2": 2}


def _migrate_keys(args: Sequence[Any]) -> tuple[Any, ...]:
    # The server's own migrateGetKeys: "KEYS k1 k2 ..." after the fixed arguments replaces the
    # single key at index 3, which must then be empty; AUTH/AUTH2 values are skipped so a
    # password spelled "KEYS" is not mistaken for the option.
    argc = len(args)
    if argc < 4:
        return ()
    i = 6
    while i < argc:
        word = token(args[i])
        if word == "KEYS":
            single = args[3]
            if not isinstance(single, str | bytes | bytearray | memoryview) or len(single):
                return ()
            return tuple(args[i + 1 :])
        i += _MIGRATE_SKIP.get(word, 0) + 1
    return (args[3],)


#: Commands whose server key specs are incomplete (marked "incomplete" or "unknown"): the
#: server itself falls back to these native rules, so we always use them.
HAND_RULES: dict[str, Extractor] = {"sort": _sort_keys, "migrate": _migrate_keys}


def compile_key_rule(name: str, specs: tuple[KeySpec, ...]) -> tuple[int, Extractor]:
    """Compile the key rule of command ``name`` into ``(single_index, extractor)``.

    ``single_index`` is the position of the only key when the command always has exactly one
    key at a fixed position (GET, HSET, ...), else 0; the extractor works in every case.
    """
    hand = HAND_RULES.get(name)
    if hand is not None:
        return 0, hand
    if not specs:
        return 0, _no_keys
    if len(specs) == 1:
        spec = specs[0]
        if spec.begin == "index" and spec.find == "range" and spec.index > 0:
            if spec.lastkey == 0:
                return spec.index, partial(_one_key, spec.index)
            if spec.lastkey == -1 and not spec.limit:
                return 0, partial(_key_run, spec.index, spec.keystep)
    return 0, partial(_extract_by_specs, specs)
