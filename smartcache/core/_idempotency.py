"""Which commands are safe to re-send after an ambiguous failure (sent, then the connection broke).

A command is idempotent here when running it twice leaves the same data as running it once.
The second reply may differ and that is accepted: a count of 0 instead of 1 (DEL, SADD, HSET),
the new value instead of the old one (SET ... GET, GETSET), or the "already exists" error a
caller already handles (XGROUP CREATE's BUSYGROUP; XADD with an explicit ID, whose duplicate is
refused). RESTORE and FUNCTION LOAD count only with REPLACE, FUNCTION RESTORE only with FLUSH
or REPLACE. Not idempotent, even where the data would end up the same:

- anything that changes the data again: INCR*, DECR*, APPEND, pushes, pops, moves, LINSERT,
  ZINCRBY, ZADD ... INCR, BITFIELD ... INCRBY, XADD with ``*`` (a second entry), XREADGROUP
  (advances the group), XCLAIM/XAUTOCLAIM, ZUNIONSTORE/ZINTERSTORE/BITOP/ZRANGESTORE whose
  destination is also a source, LTRIM/LREM except the forms that reach a fixed point;
- replies that tell the caller it lost a race it actually won, or that return data the first
  run already destroyed: SET NX, SETNX, MSETNX, HSETNX, MSETEX/HSETEX NX, SET IFEQ, DELIFEQ,
  GETDEL, HGETDEL, RENAME/RENAMENX/MOVE (the source is gone: "no such key");
- scripts and functions (EVAL, EVALSHA, FCALL: unknown effects; the ``_RO`` variants are
  read-only), PUBLISH/SPUBLISH (delivered twice), transactions (MULTI/EXEC), and every command
  not listed below: unknown means not idempotent.

Read-only commands (flag ``readonly``) are idempotent, as are the administrative and
connection commands listed in ``_IDEMPOTENT`` and every ``...|help`` subcommand. Pure: never
does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from smartcache.core._keyspec import Extractor, to_int, token

__all__ = ["ArgsRule", "idempotency"]

#: Decides from the full command tuple whether that invocation is idempotent.
ArgsRule = Callable[[Sequence[Any]], bool]


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


_IDEMPOTENT = _words(
    # Writes that reach the same data when repeated.
    "copy del unlink expire expireat pexpire pexpireat persist flushall flushdb "
    "geoadd georadius georadiusbymember geosearchstore getex getset hdel hset hmset hgetex "
    "hexpire hexpireat hpexpire hpexpireat hpersist lset mset psetex setex setbit setrange "
    "pfadd pfmerge sadd srem smove sdiffstore sinterstore sunionstore sort zrem "
    "zremrangebylex zremrangebyscore zdiffstore xack xdel xsetid xtrim "
    "xgroup|create xgroup|createconsumer xgroup|delconsumer xgroup|destroy xgroup|setid "
    "function|delete function|flush cluster|flushslot "
    # Connection, introspection and configuration commands that only set or report state.
    "asking auth echo hello info lastsave ping readonly readwrite reset role save select time "
    "unwatch wait waitaof watch subscribe psubscribe ssubscribe unsubscribe punsubscribe "
    "sunsubscribe acl|cat acl|deluser acl|dryrun acl|genpass acl|getuser acl|list acl|load "
    "acl|log acl|save acl|setuser acl|users acl|whoami client|getname client|getredir "
    "client|id client|info client|list client|no-evict client|no-touch client|setinfo "
    "client|setname client|trackinginfo client|unpause cluster|count-failure-reports "
    "cluster|countkeysinslot cluster|getkeysinslot cluster|getslotmigrations cluster|info "
    "cluster|keyslot cluster|links cluster|myid cluster|myshardid cluster|nodes "
    "cluster|replicas cluster|shards cluster|slaves cluster|slot-stats cluster|slots "
    "command command|count command|docs command|getkeys command|getkeysandflags command|info "
    "command|list commandlog|get commandlog|len commandlog|reset config|get config|resetstat "
    "config|rewrite config|set function|dump function|list function|stats latency|doctor "
    "latency|graph latency|histogram latency|history latency|latest latency|reset "
    "memory|doctor memory|malloc-stats memory|purge memory|stats module|list pubsub|channels "
    "pubsub|numpat pubsub|numsub pubsub|shardchannels pubsub|shardnumsub script|exists "
    "script|flush script|load script|show slowlog|get slowlog|len slowlog|reset"
)


def _options(args: Sequence[Any], start: int, stop_at: str = "") -> list[str]:
    words = []
    for arg in args[start:]:
        word = token(arg)
        if word == stop_at:
            break
        words.append(word)
    return words


def _set(args: Sequence[Any]) -> bool:
    return not {"NX", "IFEQ"}.intersection(_options(args, 3))


def _zadd(args: Sequence[Any]) -> bool:
    for arg in args[2:]:
        word = token(arg)
        if word == "INCR":
            return False
        if word not in ("NX", "XX", "GT", "LT", "CH"):
            return True  # the first score: options are over
    return True


def _xadd(args: Sequence[Any]) -> bool:
    # XADD key [NOMKSTREAM] [MAXLEN|MINID [=|~] threshold [LIMIT count]] <* | id> field value ...
    i, argc = 2, len(args)
    while i < argc:
        word = token(args[i])
        if word == "NOMKSTREAM":
            i += 1
        elif word in ("MAXLEN", "MINID"):
            i += 2 if i + 1 < argc and token(args[i + 1]) in ("=", "~") else 1
            i += 1
            if i < argc and token(args[i]) == "LIMIT":
                i += 2
        else:
            break
    if i >= argc:
        return False
    entry_id = args[i]
    if isinstance(entry_id, int):
        return True
    return "*" not in token(entry_id)


def _bitfield(args: Sequence[Any]) -> bool:
    return "INCRBY" not in _options(args, 2)


def _lrem(args: Sequence[Any]) -> bool:
    return len(args) > 2 and to_int(args[2]) == 0  # count 0 removes every occurrence


def _ltrim(args: Sequence[Any]) -> bool:
    # Keeping the first N or the last N elements is a fixed point; other ranges shrink again.
    start = to_int(args[2]) if len(args) > 3 else None
    stop = to_int(args[3]) if len(args) > 3 else None
    if start is None or stop is None:
        return False
    return (start == 0 and stop >= -1) or (start < 0 and stop == -1)


def _replace_at(position: int, words: tuple[str, ...], args: Sequence[Any]) -> bool:
    return len(args) > position + 1 and token(args[position]) in words


def _restore(args: Sequence[Any]) -> bool:
    return "REPLACE" in _options(args, 4)


def _msetex(args: Sequence[Any]) -> bool:
    numkeys = to_int(args[1]) if len(args) > 1 else None
    return numkeys is not None and "NX" not in _options(args, 2 + 2 * numkeys)


def _hsetex(args: Sequence[Any]) -> bool:
    return not {"NX", "FNX"}.intersection(_options(args, 2, stop_at="FIELDS"))


def _as_bytes(key: object) -> bytes:
    if isinstance(key, str):
        return key.encode()
    if isinstance(key, bytes | bytearray | memoryview):
        return bytes(key)
    return repr(key).encode()


def _destination_not_source(extract: Extractor, args: Sequence[Any]) -> bool:
    keys = [_as_bytes(key) for key in extract(args)]
    return bool(keys) and keys[0] not in keys[1:]


_RULES: dict[str, ArgsRule] = {
    "set": _set,
    "zadd": _zadd,
    "xadd": _xadd,
    "bitfield": _bitfield,
    "lrem": _lrem,
    "ltrim": _ltrim,
    "restore": _restore,
    "msetex": _msetex,
    "hsetex": _hsetex,
    # FUNCTION LOAD [REPLACE] code; FUNCTION RESTORE payload [FLUSH | APPEND | REPLACE]
    "function|load": partial(_replace_at, 2, ("REPLACE",)),
    "function|restore": lambda args: len(args) > 3 and token(args[3]) in ("FLUSH", "REPLACE"),
}
_STORE_RULES = frozenset({"zunionstore", "zinterstore", "zrangestore", "bitop"})


def idempotency(name: str, readonly: bool, extract: Extractor) -> bool | ArgsRule:
    """Classify command ``name``: True or False for every invocation, or a rule on its args.

    ``extract`` is the command's key extractor (for rules that compare keys).
    """
    if readonly or name in _IDEMPOTENT or name.endswith("|help"):
        return True
    if name in _STORE_RULES:
        return partial(_destination_not_source, extract)
    return _RULES.get(name, False)
