"""Command metadata: key extraction, routing policies, reply merging and multi-key splitting.

A :class:`CommandTable` is built once per topology from the server's own ``COMMAND`` reply
(:meth:`CommandTable.from_command_reply`) or, when that is unavailable, from the built-in table
(:meth:`CommandTable.fallback`); commands the server does not report are taken from the
built-in table too. It answers, for a full command tuple such as ``("GET", "k")`` or
``(b"object", b"encoding", "k")``: which arguments are keys, how to route it
(:class:`RequestPolicy`), how to merge the replies of a fan-out (:class:`ResponsePolicy`,
:func:`merge_replies`), whether it only reads, may block, or may be re-sent after an ambiguous
failure. :func:`split_multi_key` plans MGET/MSET/DEL/... across slots.

Where the server's metadata is wrong for routing we correct it in one place:

- SORT and MIGRATE keys come from the server's own native rules (their key specs are
  "unknown"/"incomplete"); GEORADIUS[BYMEMBER] uses its key specs, which name both the STORE and
  the STOREDIST key when both are given (Valkey's native rule keeps only the last one).
- MSETNX is never split (Redis 7.0 tags it ``multi_shard``; split parts would lose its
  all-or-nothing guarantee, and Valkey dropped the tag).
- Of the other ``multi_shard`` commands, only DEL, EXISTS, TOUCH and UNLINK are split by
  slot when their keys span slots, as redis-py's ``RedisCluster`` splits them: each key is
  independent and the replies add up. MGET and MSET promise one atomic step, so across
  slots they are refused (:class:`~smartcache.exceptions.CrossSlotError`, which is also
  ``RedisClusterException``, what ``RedisCluster`` raises) unless the caller asks for the
  split (``mget_nonatomic()`` / ``mset_nonatomic()``): :func:`plan_across_slots`.
- WAIT and WAITAOF always block (Redis 7.0 lacks the ``blocking`` flag on WAIT).
- Sharded Pub/Sub channels (SPUBLISH, SSUBSCRIBE; spec flag ``not_key``) are returned by
  :meth:`CommandTable.keys` because they route by their slot exactly like keys.

Pure: never does I/O; never imports socket, ssl, asyncio, threading or time.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType
from typing import Any, Final

from smartcache.core._command_reply import parse_command_reply
from smartcache.core._command_static import key_spec, parse_static_table
from smartcache.core._idempotency import ArgsRule, idempotency
from smartcache.core._keyspec import Extractor, KeySpec, compile_key_rule, to_int, token
from smartcache.exceptions import CrossSlotError

__all__ = [
    "CommandSpec",
    "CommandTable",
    "KeySpec",
    "RequestPolicy",
    "ResponsePolicy",
    "SplitPlan",
    "merge_replies",
    "normalize_command",
    "plan_across_slots",
    "slot_argument",
    "split_multi_key",
]

_MEMO_LIMIT = 4096  # raw spellings remembered per table; past it, lookups just take the slow path


class RequestPolicy(enum.Enum):
    """Where a command goes in a cluster (the ``request_policy`` tip of ``COMMAND``)."""

    KEYED = "keyed"  # to the node serving the slot of its keys; any node if it has none
    DEFAULT_KEYLESS = "default_keyless"  # no keys: any one node (a random or first primary)
    ALL_SHARDS = "all_shards"  # every primary
    ALL_NODES = "all_nodes"  # every primary and replica
    MULTI_SHARD = "multi_shard"  # split by key slot (MGET, MSET, DEL, ...): split_multi_key
    SPECIAL = "special"  # needs command-specific handling by the client (SCAN, ...)


class ResponsePolicy(enum.Enum):
    """How the replies of a fanned-out command combine (the ``response_policy`` tip)."""

    DEFAULT = "default"
    ONE_SUCCEEDED = "one_succeeded"
    ALL_SUCCEEDED = "all_succeeded"
    AGG_LOGICAL_AND = "agg_logical_and"
    AGG_LOGICAL_OR = "agg_logical_or"
    AGG_MIN = "agg_min"
    AGG_MAX = "agg_max"
    AGG_SUM = "agg_sum"
    SPECIAL = "special"
    #: smartcache's own (no server sends these): a list of names without repeats
    #: (PUBSUB CHANNELS over every node), and ``[name, count, ...]`` summed per name
    #: (PUBSUB NUMSUB over every node)
    UNION = "smartcache:union"
    SUM_PER_NAME = "smartcache:sum_per_name"


_REQUEST_TIPS = {p.value: p for p in RequestPolicy} | {"default_keyed": RequestPolicy.KEYED}
_RESPONSE_TIPS = {p.value: p for p in ResponsePolicy}
_NEVER_SPLIT = frozenset({"msetnx"})
#: split by slot whenever their keys span slots (RedisCluster's delete/exists/touch/unlink)
_SPLIT_ACROSS_SLOTS = frozenset({"del", "exists", "touch", "unlink"})
#: atomic on one node: split only when the caller asks, with the method named here
_SPLIT_ON_REQUEST = {"mget": "mget_nonatomic()", "mset": "mset_nonatomic()"}
#: keyless subcommands whose first argument is a hash slot: they concern the node serving it
#: (redis-py RedisCluster's ``SLOT_ID`` commands)
_SLOT_ARGUMENT = frozenset(
    {
        "cluster|countkeysinslot",
        "cluster|delslots",
        "cluster|delslotsrange",
        "cluster|getkeysinslot",
        "cluster|setslot",
    }
)
_ALWAYS_BLOCKING = frozenset({"wait", "waitaof"})
#: Pub/sub on a cluster: a subscription lives on the node its connection reached, and
#: PUBLISH counts the receivers of the node it is sent to. PUBLISH goes to the node of the
#: channel's slot (as redis-py's RedisCluster sends it; a pub/sub connection subscribes
#: there too), and the PUBSUB questions ask every node and add up, so the answer is the
#: cluster's, as a single server's would be (RedisCluster asks one "default node").
_PUBLISH_KEY: Final = "@1!not_key"
_CLUSTER_TIPS: Final[dict[str, frozenset[str]]] = {
    name: frozenset({f"request_policy:{request}", f"response_policy:{response.value}"})
    for name, request, response in (
        ("pubsub|channels", "all_nodes", ResponsePolicy.UNION),
        ("pubsub|numpat", "all_nodes", ResponsePolicy.AGG_SUM),
        ("pubsub|numsub", "all_nodes", ResponsePolicy.SUM_PER_NAME),
        ("pubsub|shardchannels", "all_shards", ResponsePolicy.UNION),
        ("pubsub|shardnumsub", "all_shards", ResponsePolicy.SUM_PER_NAME),
    )
}


def _block_option(args: Sequence[Any]) -> bool:
    # XREAD/XREADGROUP block only with a BLOCK option, which comes before STREAMS.
    for arg in args[1:]:
        word = token(arg)
        if word == "BLOCK":
            return True
        if word == "STREAMS":
            return False
    return False


_BLOCKING_RULES: dict[str, Callable[[Sequence[Any]], bool]] = {
    "xread": _block_option,
    "xreadgroup": _block_option,
}


#: Script and function calls that may write (their ``_ro`` variants cannot).
_SCRIPT_CALLS: Final = frozenset({"eval", "evalsha", "fcall"})


@dataclass(frozen=True, slots=True)
class CommandSpec:
    """Everything smartcache knows about one command or subcommand (``"parent|sub"``).

    ``flags`` and ``tips`` are lower-case as the server reports them; ``readonly``, ``write``,
    ``replicates``, ``blocking``, ``pubsub``, ``noscript`` and ``movablekeys`` are derived
    from the flags (``blocking`` means "may block"; :meth:`is_blocking` answers for given
    arguments).
    """

    name: str
    arity: int
    flags: frozenset[str]
    key_specs: tuple[KeySpec, ...]
    request_policy: RequestPolicy
    response_policy: ResponsePolicy
    tips: frozenset[str] = frozenset()
    readonly: bool = field(init=False)
    write: bool = field(init=False)
    #: Its effects may reach replicas: a ``write`` command, or a script/function call that
    #: may write (EVAL, EVALSHA, FCALL; servers flag none of them ``write``, and not their
    #: ``_ro`` twins). ``wait_replicas=`` sends WAIT after these.
    replicates: bool = field(init=False)
    blocking: bool = field(init=False)
    pubsub: bool = field(init=False)
    noscript: bool = field(init=False)
    movablekeys: bool = field(init=False)
    #: Position of the only key when the command always has one key there (GET, HSET); else 0.
    single_key_index: int = field(init=False, repr=False, compare=False)
    #: The compiled key rule: full command tuple -> key arguments.
    extract_keys: Extractor = field(init=False, repr=False, compare=False)
    _idempotent: bool | ArgsRule = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        flags = self.flags
        put = object.__setattr__
        put(self, "readonly", "readonly" in flags)
        put(self, "write", "write" in flags)
        put(self, "replicates", "write" in flags or self.name in _SCRIPT_CALLS)
        put(self, "blocking", "blocking" in flags or self.name in _ALWAYS_BLOCKING)
        put(self, "pubsub", "pubsub" in flags)
        put(self, "noscript", "noscript" in flags)
        put(self, "movablekeys", "movablekeys" in flags)
        single, extract = compile_key_rule(self.name, self.key_specs)
        put(self, "single_key_index", single)
        put(self, "extract_keys", extract)
        put(self, "_idempotent", idempotency(self.name, self.readonly, extract))

    def keys(self, args: Sequence[Any]) -> tuple[Any, ...]:
        """Return the key arguments of ``args`` (the caller's own objects, in order)."""
        i = self.single_key_index
        if i:
            return (args[i],) if len(args) > i else ()
        return self.extract_keys(args)

    def is_blocking(self, args: Sequence[Any]) -> bool:
        """Whether this invocation may block the connection (BLPOP, XREAD ... BLOCK, WAIT)."""
        if not self.blocking:
            return False
        rule = _BLOCKING_RULES.get(self.name)
        return True if rule is None else rule(args)

    def is_idempotent(self, args: Sequence[Any]) -> bool:
        """Whether re-sending this invocation after an ambiguous failure is safe.

        See :mod:`smartcache.core._idempotency` for the classification and its reasons.
        """
        rule = self._idempotent
        return rule if isinstance(rule, bool) else rule(args)


def _make_spec(
    name: str,
    arity: int,
    flags: frozenset[str],
    key_specs: tuple[KeySpec, ...],
    tips: frozenset[str],
) -> CommandSpec:
    request: RequestPolicy | None = None
    response = ResponsePolicy.DEFAULT
    if name in _CLUSTER_TIPS:
        policies = ("request_policy:", "response_policy:")
        tips = frozenset(t for t in tips if not t.startswith(policies)) | _CLUSTER_TIPS[name]
    elif name == "publish" and not key_specs:
        key_specs = (key_spec(_PUBLISH_KEY),)
    for tip in tips:
        kind, _, value = tip.partition(":")
        if kind == "request_policy":
            request = _REQUEST_TIPS.get(value, RequestPolicy.SPECIAL)
        elif kind == "response_policy":
            response = _RESPONSE_TIPS.get(value, ResponsePolicy.SPECIAL)
    if request is RequestPolicy.MULTI_SHARD and name in _NEVER_SPLIT:
        request, response = None, ResponsePolicy.DEFAULT
    if request is None:
        request = RequestPolicy.KEYED if key_specs else RequestPolicy.DEFAULT_KEYLESS
    return CommandSpec(name, arity, flags, key_specs, request, response, tips)


def normalize_command(args: Sequence[Any]) -> tuple[Any, ...]:
    """Split a multi-word command name (``("CONFIG GET", "x")`` -> ``("CONFIG", "GET", "x")``).

    redis-py passes names like ``"MEMORY USAGE"`` as one argument and splits them only when it
    packs the command; the server wants separate words, and key positions count them. Returns
    ``args`` itself (as a tuple) when there is nothing to split.
    """
    name = args[0] if args else None
    if isinstance(name, str | bytes) and (" " in name if isinstance(name, str) else b" " in name):
        return (*name.split(), *args[1:])
    return tuple(args)


def _name_of(raw: object) -> str:
    if isinstance(raw, str):
        return raw.lower()
    if isinstance(raw, bytes | bytearray | memoryview):
        return bytes(raw).decode("latin-1").lower()
    return ""


def _spellings(name: str) -> tuple[object, ...]:
    return (name, name.upper(), name.encode(), name.upper().encode())


def _remember(memo: dict[Any, Any], raw: object, value: object) -> None:
    if len(memo) < _MEMO_LIMIT:
        with suppress(TypeError):  # unhashable spellings are resolved every time
            memo[raw] = value


class _Container:
    """A command with subcommands (OBJECT, CONFIG, ...): picks the spec by ``args[1]``."""

    __slots__ = ("memo", "parent", "subs")

    def __init__(self, parent: CommandSpec, subs: dict[str, CommandSpec]) -> None:
        self.parent = parent
        self.subs = subs
        self.memo: dict[Any, CommandSpec] = {}
        for sub, spec in subs.items():
            for raw in _spellings(sub):
                self.memo[raw] = spec

    def lookup(self, args: Sequence[Any]) -> CommandSpec:
        if len(args) < 2:
            return self.parent
        raw = args[1]
        try:
            spec = self.memo.get(raw)
        except TypeError:  # an unhashable argument cannot name a subcommand
            return self.parent
        if spec is None:
            spec = self.subs.get(_name_of(raw))
            if spec is None:
                return self.parent
            _remember(self.memo, raw, spec)
        return spec


class CommandTable:
    """An immutable table of :class:`CommandSpec`, answering questions about command tuples.

    Every method takes the full command tuple as the client sends it: the name first (``str``
    or ``bytes``, any case), then for container commands the subcommand, then the arguments
    (``str``, ``bytes``, ``int``, ``float``; keys are returned as the very objects passed in).
    A multi-word first element (``"CONFIG GET"``) is accepted but slower; prefer
    :func:`normalize_command` once. Unknown commands have no keys, route to any node
    (``DEFAULT_KEYLESS``), are not read-only, not blocking and not idempotent.
    """

    __slots__ = ("_containers", "_memo", "_source", "_specs")

    def __init__(self, specs: Iterable[CommandSpec], *, source: str = "custom") -> None:
        """Build a table from specs; names with ``|`` are subcommands of their parent."""
        by_name = {spec.name: spec for spec in specs}
        self._specs: Mapping[str, CommandSpec] = MappingProxyType(by_name)
        self._source = source
        subs: dict[str, dict[str, CommandSpec]] = {}
        for name, spec in by_name.items():
            parent, bar, sub = name.partition("|")
            if bar:
                subs.setdefault(parent, {})[sub] = spec
        self._memo: dict[Any, CommandSpec] = {}
        self._containers: dict[Any, _Container] = {}
        for name, spec in by_name.items():
            if "|" not in name and name not in subs:
                for raw in _spellings(name):
                    self._memo[raw] = spec
        for name, sub_specs in subs.items():
            spec = by_name.get(name) or _make_spec(name, -2, frozenset(), (), frozenset())
            container = _Container(spec, sub_specs)
            for raw in _spellings(name):
                self._containers[raw] = container

    @property
    def source(self) -> str:
        """Where the specs came from: ``"static"``, ``"COMMAND"`` or ``"custom"``."""
        return self._source

    @classmethod
    def fallback(cls) -> CommandTable:
        """Return the built-in table (shared; it is immutable)."""
        return _fallback_table()

    @classmethod
    def from_command_reply(cls, reply: object) -> CommandTable:
        """Build a table from the raw reply of ``COMMAND`` (RESP2 lists or RESP3 maps).

        Commands the built-in table knows but the server did not report are added from it;
        for servers older than Redis 7 (no tips, no key specs) the built-in table supplies the
        policies and the rules of commands with movable keys. Raises :class:`ValueError` when
        the reply is not a ``COMMAND`` reply.
        """
        fallback = _fallback_table()
        try:
            entries = parse_command_reply(reply, fallback._specs)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a COMMAND reply: {exc!r}") from exc
        merged = dict(fallback._specs)
        merged.update((entry[0], _make_spec(*entry)) for entry in entries)
        return cls(merged.values(), source="COMMAND")

    def __len__(self) -> int:
        return len(self._specs)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._specs

    def __iter__(self) -> Iterator[CommandSpec]:
        return iter(self._specs.values())

    def get(self, name: str) -> CommandSpec | None:
        """Return the spec named ``name`` (``"get"``, ``"object|encoding"``), or None."""
        return self._specs.get(name.lower())

    def lookup(self, args: Sequence[Any]) -> CommandSpec | None:
        """Return the spec of the command tuple ``args``, or None for an unknown command."""
        try:
            spec = self._memo.get(args[0])
        except IndexError:
            return None
        except TypeError:  # an unhashable name (bytearray): resolved, never memoized
            spec = None
        if spec is not None:
            return spec
        return self._resolve(args)[0]

    def keys(self, args: Sequence[Any]) -> tuple[Any, ...]:
        """Return the key arguments of ``args`` in order (the caller's objects, unencoded)."""
        try:
            spec = self._memo.get(args[0])
        except IndexError:
            return ()
        except TypeError:
            spec = None
        if spec is None:
            spec, args = self._resolve(args)
            if spec is None:
                return ()
        i = spec.single_key_index
        if i:
            return (args[i],) if len(args) > i else ()
        return spec.extract_keys(args)

    def request_policy(self, args: Sequence[Any]) -> RequestPolicy:
        """Return how ``args`` is routed; KEYED with no keys (EVAL ... 0) means any node."""
        spec = self.lookup(args)
        return RequestPolicy.DEFAULT_KEYLESS if spec is None else spec.request_policy

    def response_policy(self, args: Sequence[Any]) -> ResponsePolicy:
        """Return how the replies of a fanned-out ``args`` are merged."""
        spec = self.lookup(args)
        return ResponsePolicy.DEFAULT if spec is None else spec.response_policy

    def is_readonly(self, args: Sequence[Any]) -> bool:
        """Whether ``args`` only reads (flag ``readonly``), so a replica may serve it."""
        spec = self.lookup(args)
        return spec is not None and spec.readonly

    def is_blocking(self, args: Sequence[Any]) -> bool:
        """Whether ``args`` may block the connection (BLPOP, XREAD ... BLOCK, WAIT, ...)."""
        spec, args = self._resolve_any(args)
        return spec is not None and spec.is_blocking(args)

    def is_idempotent(self, args: Sequence[Any]) -> bool:
        """Whether ``args`` may be re-sent after an ambiguous failure (see ``_idempotency``)."""
        spec, args = self._resolve_any(args)
        return spec is not None and spec.is_idempotent(args)

    def _resolve_any(self, args: Sequence[Any]) -> tuple[CommandSpec | None, Sequence[Any]]:
        try:
            spec = self._memo.get(args[0])
        except IndexError:
            return None, args
        except TypeError:
            spec = None
        return (spec, args) if spec is not None else self._resolve(args)

    def _resolve(self, args: Sequence[Any]) -> tuple[CommandSpec | None, Sequence[Any]]:
        # The slow path: containers, new spellings, multi-word names. Memoizes what it finds.
        if not args:
            return None, args
        raw = args[0]
        try:
            container = self._containers.get(raw)
        except TypeError:
            container = None
        if container is not None:
            return container.lookup(args), args
        name = _name_of(raw)
        if " " in name:
            split = normalize_command(args)
            return self._resolve_any(split)[0], split
        container = self._containers.get(name)
        if container is not None:
            _remember(self._containers, raw, container)
            return container.lookup(args), args
        spec = None if "|" in name else self._specs.get(name)  # "a|b" is no client spelling
        if spec is None:
            return None, args
        _remember(self._memo, raw, spec)
        return spec, args


@cache
def _fallback_table() -> CommandTable:
    return CommandTable((_make_spec(*entry) for entry in parse_static_table()), source="static")


_SEQUENCE_REPLY = (list, tuple)


def _raise_first_error(replies: Sequence[object]) -> None:
    for reply in replies:
        if isinstance(reply, BaseException):
            raise reply


_AGGREGATORS: dict[ResponsePolicy, Callable[[Sequence[Any]], Any]] = {
    ResponsePolicy.AGG_SUM: sum,
    ResponsePolicy.AGG_MIN: min,
    ResponsePolicy.AGG_MAX: max,
    ResponsePolicy.AGG_LOGICAL_AND: lambda values: int(all(values)),
    ResponsePolicy.AGG_LOGICAL_OR: lambda values: int(any(values)),
}


def merge_replies(policy: ResponsePolicy, replies: Sequence[object], command_name: str) -> object:
    """Combine the replies of one command sent to several nodes, as ``policy`` says.

    Replies that are exception instances are errors of their node. ONE_SUCCEEDED returns the
    first reply that is not an error, else raises the first error. Every other policy raises
    the first error if there is one; otherwise:

    - ALL_SUCCEEDED: the first reply;
    - AGG_SUM / AGG_MIN / AGG_MAX / AGG_LOGICAL_AND / AGG_LOGICAL_OR: the sum, minimum,
      maximum, ``1``/``0`` of all/any, element-wise when the replies are lists (SCRIPT EXISTS
      returns one 0/1 per SHA) and of the scalars otherwise;
    - DEFAULT: lists (or tuples) are concatenated into one list (KEYS), maps are merged, sets
      are united; any other reply (or a mix) returns the first reply, as one node would have;
    - SPECIAL: the list of replies unchanged, in the order the nodes were asked, for the
      client's command-specific merge (INFO, SCAN, RANDOMKEY, ...).

    ``command_name`` is used in error messages. Raises :class:`ValueError` for no replies or
    for list replies of different lengths under an aggregate policy.
    """
    if not replies:
        raise ValueError(f"{command_name}: no replies to merge")
    if command_name.upper() == "RANDOMKEY":  # a key from a non-empty node, None if all empty
        _raise_first_error(replies)
        return next((reply for reply in replies if reply is not None), None)
    if policy is ResponsePolicy.ONE_SUCCEEDED:
        for reply in replies:
            if not isinstance(reply, BaseException):
                return reply
    _raise_first_error(replies)
    if policy is ResponsePolicy.ALL_SUCCEEDED:
        return replies[0]
    if policy is ResponsePolicy.SPECIAL:
        return list(replies)
    if policy is ResponsePolicy.UNION:
        return list(dict.fromkeys(item for reply in replies for item in _items(reply)))
    if policy is ResponsePolicy.SUM_PER_NAME:
        return _sum_per_name(replies)
    aggregate = _AGGREGATORS.get(policy)
    if aggregate is None:
        return _concatenate(replies)
    lists = [reply for reply in replies if isinstance(reply, list | tuple)]
    if not lists:
        return aggregate(replies)
    if len(lists) != len(replies) or len({len(reply) for reply in lists}) != 1:
        raise ValueError(f"{command_name}: node replies differ in shape")
    return [aggregate(column) for column in zip(*lists, strict=True)]


def _items(reply: object) -> list[Any]:
    return list(reply) if isinstance(reply, list | tuple | set | frozenset) else [reply]


def _sum_per_name(replies: Sequence[object]) -> object:
    """``[name, count, ...]`` (or ``{name: count}`` in RESP3) added up per name, in the
    order of the first reply; the shape of the first reply is kept."""
    totals: dict[Any, int] = {}
    for reply in replies:
        pairs = (
            reply.items()
            if isinstance(reply, dict)
            else zip(_items(reply)[::2], _items(reply)[1::2], strict=True)
        )
        for name, count in pairs:
            totals[name] = totals.get(name, 0) + int(count)
    if isinstance(replies[0], dict):
        return totals
    return [item for pair in totals.items() for item in pair]


def _concatenate(replies: Sequence[object]) -> object:
    lists = [reply for reply in replies if isinstance(reply, list | tuple)]
    if len(lists) == len(replies):
        return [item for reply in lists for item in reply]
    maps = [reply for reply in replies if isinstance(reply, dict)]
    if len(maps) == len(replies):
        merged: dict[Any, Any] = {}
        for reply in maps:
            merged.update(reply)
        return merged
    sets = [reply for reply in replies if isinstance(reply, set | frozenset)]
    if len(sets) == len(replies):
        return set().union(*sets)
    return replies[0]


@dataclass(frozen=True, slots=True)
class SplitPlan:
    """A multi-key command split into one sub-command per slot, and how to merge it back.

    ``parts`` holds ``(slot, args, positions)``: the sub-command for that slot and the
    positions (0-based, in the caller's key order) of the keys it carries. Send every part,
    then pass the replies, in the order of ``parts``, to :meth:`merge`.
    """

    command: str
    parts: tuple[tuple[int, tuple[Any, ...], tuple[int, ...]], ...]
    response_policy: ResponsePolicy

    def merge(self, results: Sequence[object]) -> object:
        """Combine the part replies: MGET values back in key order, DEL/EXISTS/... counts
        summed, MSET's OK once all parts succeeded. Raises the first error reply."""
        if len(results) != len(self.parts):
            raise ValueError(f"{self.command}: {len(results)} replies for {len(self.parts)} parts")
        _raise_first_error(results)
        if len(results) == 1:
            return results[0]
        if self.response_policy is not ResponsePolicy.DEFAULT:
            return merge_replies(self.response_policy, results, self.command)
        ordered: list[object] = [None] * sum([len(part[2]) for part in self.parts])
        for (_, _, positions), result in zip(self.parts, results, strict=True):
            if not isinstance(result, _SEQUENCE_REPLY) or len(result) != len(positions):
                raise ValueError(f"{self.command}: a part reply does not match its keys")
            if len(positions) == 1:  # the common case: one key per slot
                ordered[positions[0]] = result[0]
                continue
            for position, value in zip(positions, result, strict=True):
                ordered[position] = value
        return ordered


def slot_argument(spec: CommandSpec | None, args: Sequence[Any]) -> int | None:
    """The hash slot a keyless command names (``CLUSTER COUNTKEYSINSLOT 42``: 42), so it
    goes to the node serving that slot; ``None`` for any other command."""
    if spec is None or spec.name not in _SLOT_ARGUMENT or len(args) < 3:
        return None
    slot = to_int(args[2])
    return slot if slot is not None and 0 <= slot < 16384 else None


def plan_across_slots(
    args: Sequence[Any],
    spec: CommandSpec | None,
    slot_of: Callable[[Any], int],
    slots: Sequence[int],
    *,
    nonatomic: bool = False,
) -> SplitPlan:
    """Split a command whose keys hash to ``slots`` (more than one), or refuse it.

    DEL, EXISTS, TOUCH and UNLINK are split; MGET and MSET only with ``nonatomic=True``
    (``mget_nonatomic()`` / ``mset_nonatomic()``); anything else raises
    :class:`~smartcache.exceptions.CrossSlotError` before a byte is sent. Raises
    :class:`ValueError` when the arguments do not fit the command (the server says why).
    """
    name = spec.name if spec is not None else (_name_of(args[0]) if args else "")
    splittable = name in _SPLIT_ACROSS_SLOTS or (nonatomic and name in _SPLIT_ON_REQUEST)
    if splittable and spec is not None and spec.request_policy is RequestPolicy.MULTI_SHARD:
        return split_multi_key(args, spec, slot_of)
    upper = name.replace("|", " ").upper()
    instead = _SPLIT_ON_REQUEST.get(name)
    remedy = f"use {instead} to split it by slot, or " if instead else "use "
    raise CrossSlotError(
        f"{upper}: its keys hash to {len(slots)} different slots, and {upper} is atomic only "
        f"on one node, so it is not split (redis-py's RedisCluster refuses it too); {remedy}"
        "a hash tag such as '{user:1}:a' and '{user:1}:b' to keep the keys on one slot",
        command=upper,
        slots=sorted(slots),
    )


def _split_shape(spec: CommandSpec) -> tuple[int, int] | None:
    # Splittable: keys (each followed by step-1 values) fill every argument from the first key.
    if len(spec.key_specs) != 1:
        return None
    key_spec = spec.key_specs[0]
    if key_spec.begin != "index" or key_spec.find != "range":
        return None
    if key_spec.lastkey != -1 or key_spec.limit or key_spec.index < 1:
        return None
    return key_spec.index, key_spec.keystep


def split_multi_key(
    args: Sequence[Any], spec: CommandSpec, slot_of: Callable[[Any], int]
) -> SplitPlan:
    """Split a MULTI_SHARD command (MGET, MSET, DEL, UNLINK, EXISTS, TOUCH, ...) by key slot.

    ``slot_of`` maps a key to its slot (the client passes ``smartcache.core.slots.key_slot``).
    Parts keep each key with its values (MSET) and come in the order their slots first appear;
    when every key shares one slot there is a single part holding ``args`` unchanged.
    Commands whose keys are not one trailing run (MSETEX's numkeys and options) are planned
    only when all keys share a slot, else :class:`~smartcache.exceptions.CrossSlotError`.
    Raises :class:`ValueError` if ``spec`` is not MULTI_SHARD or ``args`` is malformed.
    """
    name = spec.name.upper()
    if spec.request_policy is not RequestPolicy.MULTI_SHARD:
        raise ValueError(f"{name} is not a multi-shard command")
    shape = _split_shape(spec)
    if shape is None:
        keys = spec.keys(args)
        slots = sorted({slot_of(key) for key in keys})
        if len(slots) != 1:
            raise CrossSlotError(
                f"the keys of {name} must share one slot", command=name, slots=slots
            )
        whole = (slots[0], tuple(args), tuple(range(len(keys))))
        return SplitPlan(name, (whole,), spec.response_policy)
    first, step = shape
    if len(args) <= first or (len(args) - first) % step:
        raise ValueError(f"wrong number of arguments for {name}")
    groups: dict[int, tuple[list[Any], list[int]]] = {}
    if step == 1:  # MGET, DEL, EXISTS...: one argument per key
        for position, key in enumerate(args[first:]):
            slot = slot_of(key)
            group = groups.get(slot)
            if group is None:
                groups[slot] = ([key], [position])
            else:
                group[0].append(key)
                group[1].append(position)
    else:
        for position, i in enumerate(range(first, len(args), step)):
            slot = slot_of(args[i])
            group = groups.get(slot)
            if group is None:
                group = groups[slot] = ([], [])
            group[0].extend(args[i : i + step])
            group[1].append(position)
    head = tuple(args[:first])
    if len(groups) == 1:
        ((slot, (_, positions)),) = groups.items()
        return SplitPlan(name, ((slot, tuple(args), tuple(positions)),), spec.response_policy)
    parts = tuple(
        (slot, (*head, *part_args), tuple(positions))
        for slot, (part_args, positions) in groups.items()
    )
    return SplitPlan(name, parts, spec.response_policy)
