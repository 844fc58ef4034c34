"""Read a live deployment into :class:`~._facts.Facts` for the doctor's checks.

Read-only and bounded: ``INFO``, ``CONFIG GET``, ``ACL GETUSER``, ``SLOWLOG GET``,
``CLUSTER NODES``, the ``SENTINEL`` queries, and a rate-limited ``SCAN`` sample with
``TYPE`` / ``MEMORY USAGE`` / ``TTL`` / ``STRLEN`` (a string's value is read only when it
is at most 4 KB, to see whether it is a JSON object). Never ``KEYS``, never a blocking
command. Every connection has short timeouts and one retry, so a dead node costs
seconds, not minutes.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from typing import Any, Final

import redis.exceptions as rx

from smartcache._client_common import sentinel_url_kwargs
from smartcache.ops._facts import (
    Facts,
    HostFacts,
    KeySample,
    NodeFacts,
    SentinelFacts,
    parse_cluster_nodes,
)
from smartcache.ops._nodes import ERRORS, Connector, error_text, mask_url
from smartcache.sync.client import SmartClient
from smartcache.wire.settings import ConnectionSettings

__all__ = ["collect", "discover", "mask_url"]  # mask_url: re-exported for the tests

#: a string is read (to see whether it holds JSON) only up to this size
JSON_PEEK: Final = 4096
#: the listpack limits a hash keeps its compact encoding under, when the server's own
#: (hash-max-listpack-entries / -value) cannot be read
LISTPACK_ENTRIES: Final = 128
LISTPACK_VALUE: Final = 64

Progress = Callable[[int, int], None]


def collect(
    url: str,
    *,
    sample: int = 1000,
    max_seconds: float = 60.0,
    scan_rate: float = 5000.0,
    timeout: float = 5.0,
    progress: Progress | None = None,
    **client_kwargs: Any,
) -> Facts:
    """Read the deployment at ``url`` (a server, a cluster node, or ``redis+sentinel://``).

    ``sample``: keys to sample (0: none); ``max_seconds``: the sampling stops at this
    bound; ``scan_rate``: keys per second SCAN may walk on each primary; ``timeout``:
    seconds per command. ``client_kwargs`` go to every connection (``password=``,
    ``ssl_ca_certs=``...)."""
    started = time.monotonic()
    deadline = started + max_seconds
    facts, connector = _topology(url, timeout, client_kwargs)
    for node in facts.nodes:
        if node.reachable:
            node.local = _is_local(node.host)
    if sample > 0:
        _sample(facts, connector, sample, deadline, scan_rate, progress)
    facts.host = _host_facts(facts)
    facts.seconds = time.monotonic() - started
    return facts


def discover(url: str, timeout: float, **client_kwargs: Any) -> tuple[str, Connector, list[str]]:
    """(kind, a connector, every node's address) of the deployment at ``url``."""
    facts, connector = _topology(url, timeout, client_kwargs)
    return facts.kind, connector, [n.address for n in facts.nodes]


def _topology(url: str, timeout: float, client_kwargs: dict[str, Any]) -> tuple[Facts, Connector]:
    sentinel = sentinel_url_kwargs(url, dict(client_kwargs))
    if sentinel is not None:
        return _collect_sentinel(url, sentinel, timeout)
    kwargs = {**ConnectionSettings.from_url(url).to_redis_kwargs(), **client_kwargs}
    return _collect_server(url, kwargs, timeout)


def _collect_server(url: str, kwargs: dict[str, Any], timeout: float) -> tuple[Facts, Connector]:
    connector = Connector(kwargs, timeout)
    first = f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
    node = _read_node(connector, first)
    if not node.reachable:
        return Facts("standalone", mask_url(url), nodes=[node]), connector
    if str(node.info.get("cluster_enabled", "0")) == "1":
        facts = Facts("cluster", mask_url(url))
        view = node.cluster_nodes or []
        addresses = [c.address for c in view if c.address and not c.address.startswith(":")]
        for address in addresses:
            facts.nodes.append(node if address == first else _read_node(connector, address))
        if first not in addresses:
            facts.nodes.insert(0, node)
    else:
        facts = Facts("standalone", mask_url(url), nodes=[node])
        if node.role == "master":  # its replicas, from its own INFO
            for i in range(int(node.info.get("connected_slaves", 0) or 0)):
                slave = node.info.get(f"slave{i}")
                if isinstance(slave, dict):
                    facts.nodes.append(
                        _read_node(connector, f"{slave.get('ip')}:{slave.get('port')}")
                    )
            if len(facts.nodes) > 1:
                facts.kind = "replicated"
    return facts, connector


def _collect_sentinel(url: str, kwargs: dict[str, Any], timeout: float) -> tuple[Facts, Connector]:
    service = str(kwargs["service_name"])
    facts = Facts("sentinel", mask_url(url), service_name=service)
    sentinel_connector = Connector(dict(kwargs.get("sentinel_kwargs") or {}), timeout)
    node_kwargs = {
        k: v for k, v in kwargs.items() if k not in ("sentinels", "service_name", "sentinel_kwargs")
    }
    connector = Connector(node_kwargs, timeout)
    pending = [f"{h}:{p}" for h, p in kwargs["sentinels"]]
    seen: set[str] = set()
    replicas: dict[str, dict[str, Any]] = {}
    while pending:
        address = pending.pop(0)
        if address in seen:
            continue
        seen.add(address)
        s = SentinelFacts(address)
        facts.sentinels.append(s)
        try:
            with sentinel_connector.client(address) as client:
                c: Any = client  # redis-py's sentinel replies are typed as unions
                master = c.sentinel_master(service)
                s.primary = f"{master.get('ip')}:{master.get('port')}"
                s.quorum = int(master.get("quorum", 0) or 0)
                s.known_sentinels = int(master.get("num-other-sentinels", 0) or 0) + 1
                s.primary_flags = str(master.get("flags", ""))
                try:
                    c.sentinel_ckquorum(service)
                    s.ckquorum, s.ckquorum_ok = "OK", True
                except rx.ResponseError as exc:
                    s.ckquorum, s.ckquorum_ok = str(exc)[:160], False
                for other in c.sentinel_sentinels(service):
                    pending.append(f"{other.get('ip')}:{other.get('port')}")
                for r in c.sentinel_slaves(service):
                    replicas.setdefault(f"{r.get('ip')}:{r.get('port')}", r)
        except ERRORS as exc:
            s.reachable, s.error = False, error_text(exc)
    named = [s.primary for s in facts.sentinels if s.primary]
    if named:
        primary = max(set(named), key=named.count)
        facts.nodes.append(_read_node(connector, primary))
        for address in replicas:
            facts.nodes.append(_read_node(connector, address))
    return facts, connector


def _read_node(connector: Connector, address: str) -> NodeFacts:
    node = NodeFacts(address)
    try:
        with connector.client(address) as c:
            node.info = dict(c.info("everything"))
            try:
                node.config = {str(k): str(v) for k, v in c.config_get("*").items()}
            except rx.ResponseError:
                node.config = None
            with suppress(rx.ResponseError):
                user: Any = c.acl_getuser("default")
                flags = user.get("flags", []) if isinstance(user, dict) else []
                node.default_user_nopass = "nopass" in [
                    f.decode() if isinstance(f, bytes) else str(f) for f in flags
                ]
            with suppress(rx.ResponseError):
                node.slowlog = list(c.slowlog_get(10))
            if str(node.info.get("cluster_enabled", "0")) == "1":
                text = c.execute_command("CLUSTER", "NODES")
                if isinstance(text, bytes):
                    text = text.decode()
                node.cluster_nodes = parse_cluster_nodes(str(text))
    except ERRORS as exc:
        node.reachable, node.error = False, error_text(exc)
    return node


# -- sampling ---------------------------------------------------------------------------
def _sample(  # noqa: PLR0917 - private, called once
    facts: Facts,
    connector: Connector,
    sample: int,
    deadline: float,
    scan_rate: float,
    progress: Progress | None,
) -> None:
    primaries = facts.primaries()
    facts.keys_total = sum(
        int(db.get("keys", 0))
        for n in primaries
        for name, db in n.info.items()
        if name.startswith("db") and isinstance(db, dict)
    )
    goal = min(sample, facts.keys_total)
    if not primaries or goal == 0:
        return
    share = -(-goal // len(primaries))
    done = 0
    for node in primaries:
        try:
            with connector.client(node.address) as c:
                limits = _listpack_limits(node)
                for got in _sample_node(c, node.address, share, deadline, scan_rate, facts, limits):
                    done += got
                    if progress is not None:
                        progress(done, goal)
        except ERRORS:
            continue  # the node's own checks report it
        if time.monotonic() >= deadline:
            facts.sample_complete = False
            break
    facts.sampled = len(facts.samples)


def _sample_node(  # noqa: PLR0917 - private, called once
    c: SmartClient,
    address: str,
    share: int,
    deadline: float,
    scan_rate: float,
    facts: Facts,
    limits: tuple[int, int],
) -> Iterator[int]:
    cursor: int = 0
    taken = 0
    batch = 100
    while taken < share:
        if time.monotonic() >= deadline:
            facts.sample_complete = False
            return
        began = time.monotonic()
        cursor, keys = c.scan(cursor=cursor, count=batch)
        keys = keys[: share - taken]
        if keys:
            samples = _describe(c, address, keys, limits)
            facts.samples.extend(samples)
            taken += len(samples)
            yield len(samples)
        if cursor == 0:
            return
        pause = batch / scan_rate - (time.monotonic() - began)  # the rate limit
        if pause > 0:
            time.sleep(pause)


def _listpack_limits(node: NodeFacts) -> tuple[int, int]:
    """The node's hash listpack limits (either name: ``ziplist`` before Redis 7)."""
    config = node.config or {}

    def read(names: tuple[str, ...], default: int) -> int:
        for name in names:
            with suppress(ValueError):
                if name in config:
                    return int(config[name])
        return default

    return (
        read(("hash-max-listpack-entries", "hash-max-ziplist-entries"), LISTPACK_ENTRIES),
        read(("hash-max-listpack-value", "hash-max-ziplist-value"), LISTPACK_VALUE),
    )


def _describe(
    c: SmartClient, address: str, keys: list[Any], limits: tuple[int, int]
) -> list[KeySample]:
    pipe = c.pipeline(transaction=False)
    for k in keys:
        pipe.type(k)
        pipe.memory_usage(k)
        pipe.ttl(k)
    replies = pipe.execute(raise_on_error=False)
    out: list[KeySample] = []
    strings: list[KeySample] = []
    for i, k in enumerate(keys):
        kind, memory, ttl = replies[3 * i : 3 * i + 3]
        if isinstance(kind, Exception) or kind in (b"none", "none"):
            continue  # expired or deleted meanwhile
        name = k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)
        kind_text = kind.decode() if isinstance(kind, bytes) else str(kind)
        s = KeySample(
            key=name,
            node=address,
            type=kind_text,
            memory=int(memory or 0) if not isinstance(memory, Exception) else 0,
            ttl=int(ttl) if isinstance(ttl, int) else -1,
        )
        out.append(s)
        if kind_text == "string":
            strings.append(s)
    if strings:
        pipe = c.pipeline(transaction=False)
        for s in strings:
            pipe.strlen(s.key)
            pipe.getrange(s.key, 0, JSON_PEEK)
        replies = pipe.execute(raise_on_error=False)
        for i, s in enumerate(strings):
            length, head = replies[2 * i : 2 * i + 2]
            if isinstance(length, int):
                s.value_bytes = length
                if length <= JSON_PEEK and isinstance(head, bytes):
                    _json_shape(s, head, limits)
    return out


def _json_shape(
    s: KeySample, raw: bytes, limits: tuple[int, int] = (LISTPACK_ENTRIES, LISTPACK_VALUE)
) -> None:
    """When ``raw`` is a flat JSON object, the bytes the same fields would take as a hash
    in its listpack encoding (or nothing, when it would not be a listpack)."""
    if not raw.startswith(b"{"):
        return
    try:
        value = json.loads(raw)
    except ValueError:
        return
    max_entries, max_value = limits
    if not isinstance(value, dict) or not value or len(value) > max_entries:
        return
    size = 6 + 1  # listpack header and end byte
    for field, item in value.items():
        if isinstance(item, dict | list):
            return  # nested: not a flat hash
        text = item if isinstance(item, str) else json.dumps(item)
        for part in (str(field), text):
            data = part.encode()
            if len(data) > max_value:
                return  # the hash would switch to a hashtable: no saving to promise
            size += _listpack_entry(data)
    s.json_fields = len(value)
    s.hash_estimate = s.memory - len(raw) + size


def _listpack_entry(data: bytes) -> int:
    """Bytes of one listpack entry: small integers in 1-9 bytes, strings with a 1-2 byte
    header, plus the back-length byte(s)."""
    if data.isdigit() and len(data) < 19 and (data == b"0" or not data.startswith(b"0")):
        n = int(data)
        body = (
            1
            if n < 128
            else 2
            if n < 4096
            else 3
            if n < 32768
            else 4
            if n < 2**23
            else 5
            if n < 2**31
            else 9
        )
    else:
        body = (1 if len(data) < 64 else 2) + len(data)
    return body + (1 if body < 128 else 2)


# -- host -------------------------------------------------------------------------------
def _is_local(host: str) -> bool:
    if host in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
        return True
    with suppress(OSError):
        return host in {socket.gethostbyname(socket.gethostname()), socket.getfqdn()}
    return False


def _host_facts(facts: Facts) -> HostFacts | None:
    local = [n for n in facts.nodes if n.reachable and n.local]
    if not local:
        return None
    host = HostFacts()
    with suppress(OSError), open("/proc/sys/vm/overcommit_memory", encoding="ascii") as f:
        host.overcommit_memory = f.read().strip()
    thp = "/sys/kernel/mm/transparent_hugepage/enabled"
    with suppress(OSError), open(thp, encoding="ascii") as f:
        text = f.read()
        start, end = text.find("["), text.find("]")
        host.transparent_hugepage = text[start + 1 : end] if 0 <= start < end else None
    for n in local:
        pid = n.info.get("process_id")
        limits = f"/proc/{pid}/limits"
        with suppress(OSError, ValueError), open(limits, encoding="ascii") as f:
            for line in f:
                if line.startswith("Max open files"):
                    host.nofile[n.address] = int(line.split()[3])
    return host if (host.overcommit_memory or host.transparent_hugepage or host.nofile) else None
