"""The production checklist as rules over :class:`~._facts.Facts` (no I/O).

Each check reads the facts and returns findings: the measured value, why it matters and
the exact fix (a config line or a command). A check that cannot see what it needs says
``unknown`` and how to look by hand; it never guesses ``pass``. Thresholds are the
guide's where it gives one (memory over 80% of ``maxmemory``, values over 10 KB, an odd
number of at least three sentinels).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Final

from smartcache.ops._facts import ClusterNode, Facts, Finding, KeySample, NodeFacts, Status

__all__ = ["CHECKS", "run_checks"]

SLOTS: Final = 16384
BIG_VALUE: Final = 10 * 1024  #: the guide's "large values (>10KB)"
MEMORY_WARN: Final = 0.80
MEMORY_FAIL: Final = 0.95
LAG_BYTES_WARN: Final = 1024 * 1024
LAG_SECONDS_WARN: Final = 10
SLOW_CALL_USEC: Final = 1000  #: a command averaging above 1 ms per call is O(N) somewhere
#: commands that walk the whole keyspace or a whole value whatever their arguments
BLOCKING: Final = ("keys", "flushall", "flushdb", "debug")
#: administration and replication, not the application's workload: never "slow commands"
ADMIN: Final = frozenset(
    [
        "psync",
        "sync",
        "replconf",
        "command",
        "config",
        "info",
        "cluster",
        "slowlog",
        "client",
        "acl",
        "latency",
        "memory",
        "module",
        "monitor",
        "save",
        "bgsave",
        "bgrewriteaof",
        "debug",
        "shutdown",
        "failover",
        "hello",
        "auth",
    ]
)
#: a command's average per call means something only over this many calls
SLOW_CALLS_MIN: Final = 10

Check = Callable[[Facts], Iterable[Finding]]

P, W, F, U = Status.PASS, Status.WARN, Status.FAIL, Status.UNKNOWN


def _mb(n: float) -> str:
    return f"{n / 1024 / 1024:.1f} MB"


def _int(info: dict[str, Any], key: str, default: int = 0) -> int:
    try:
        return int(info.get(key, default))
    except (TypeError, ValueError):
        return default


def _cfg(node: NodeFacts, name: str) -> str | None:
    return None if node.config is None else node.config.get(name)


def _no_config(check: str, title: str, node: NodeFacts) -> Finding:
    return Finding(
        check,
        title,
        U,
        "CONFIG GET refused",
        "the server's configuration could not be read (CONFIG renamed or not allowed)",
        f"redis-cli -h {node.host} -p {node.address.rsplit(':', 1)[1]} CONFIG GET '*' "
        "as an admin user",
        node.address,
    )


def _cluster_view(facts: Facts) -> list[ClusterNode]:
    """The first reachable node's ``CLUSTER NODES`` (a primary's if possible)."""
    views = [n for n in facts.nodes if n.reachable and n.cluster_nodes is not None]
    views.sort(key=lambda n: n.role != "master")
    return views[0].cluster_nodes or [] if views else []


# -- topology --------------------------------------------------------------------------
def check_reachable(facts: Facts) -> Iterable[Finding]:
    """Every node the deployment names answers."""
    down = [n for n in facts.nodes if not n.reachable]
    if not facts.nodes:
        yield Finding("topology.reachable", "Servers answer", F, "no server answered")
        return
    if not down:
        yield Finding(
            "topology.reachable", "Servers answer", P, f"{len(facts.nodes)} of {len(facts.nodes)}"
        )
    for n in down:
        yield Finding(
            "topology.reachable",
            "Servers answer",
            F,
            f"unreachable: {n.error}",
            "a node that does not answer serves nothing; a primary down makes its slots or "
            "the whole service unavailable until a failover",
            f"start the server at {n.address}, or remove it: CLUSTER FORGET / SENTINEL RESET",
            n.address,
        )


def check_shape(facts: Facts) -> Iterable[Finding]:
    """Cluster: >= 3 primaries with >= 1 replica each; Sentinel: a replica; standalone: none."""
    title = "Primaries and replicas"
    if facts.kind == "standalone":
        yield Finding(
            "topology.shape",
            title,
            W,
            "1 server, no replica, no failover",
            "a crash stops the service until the server restarts, and loses what was "
            "written since the last save",
            "run a Sentinel group (3 sentinels, >= 1 replica) or a Cluster (3 primaries + 3 "
            "replicas); connect with redis+sentinel://... or a cluster URL",
        )
        return
    if facts.kind == "replicated":
        yield Finding(
            "topology.shape",
            title,
            W,
            f"1 primary, {len(facts.nodes) - 1} replica(s), no Sentinel",
            "replicas without Sentinel are copies, not failover: when the primary dies "
            "someone must promote a replica and repoint every client by hand",
            "run 3 sentinels monitoring the primary (sentinel monitor <name> <host> <port> 2) "
            "and connect with redis+sentinel://...",
        )
        return
    if facts.kind == "sentinel":
        primaries = facts.primaries()
        if not primaries:
            yield Finding("topology.shape", title, F, "no primary answered", "", "")
            return
        replicas = _int(primaries[0].info, "connected_slaves")
        status = P if replicas >= 1 else F
        yield Finding(
            "topology.shape",
            title,
            status,
            f"1 primary, {replicas} connected replica(s)",
            "" if status is P else "with no replica Sentinel has nothing to fail over to",
            "" if status is P else "add a replica: replicaof <primary-host> <primary-port>",
            primaries[0].address,
        )
        return
    view = _cluster_view(facts)
    if not view:
        yield Finding("topology.shape", title, U, "no node's CLUSTER NODES could be read")
        return
    primaries_v = [c for c in view if c.is_primary and c.slots and not c.failed]
    replicas_of: dict[str, int] = {}
    for c in view:
        if not c.is_primary and c.primary_id and not c.failed and c.connected:
            replicas_of[c.primary_id] = replicas_of.get(c.primary_id, 0) + 1
    alone = [c.address for c in primaries_v if replicas_of.get(c.node_id, 0) == 0]
    value = f"{len(primaries_v)} primaries, replicas per primary: " + ", ".join(
        f"{c.address}={replicas_of.get(c.node_id, 0)}" for c in primaries_v
    )
    if len(primaries_v) < 3:
        yield Finding(
            "topology.shape",
            title,
            F,
            value,
            "fewer than 3 primaries cannot elect a replica when one fails (a majority of "
            "primaries votes)",
            "add primaries: smartcache cluster add-node / redis-cli --cluster add-node, then "
            "rebalance",
        )
    elif alone:
        yield Finding(
            "topology.shape",
            title,
            F,
            value,
            "a primary without a live replica loses its slots when it fails: the cluster "
            "goes down (cluster-require-full-coverage) or serves part of the keys",
            "start or add a replica for " + ", ".join(alone) + ": CLUSTER REPLICATE "
            "<primary-id> on a new node",
        )
    else:
        yield Finding("topology.shape", title, P, value)


def check_hosts(facts: Facts) -> Iterable[Finding]:
    """A primary and its replicas on different hosts."""
    title = "Replicas on other hosts than their primary"
    pairs: list[tuple[str, str]] = []  # (primary address, replica address)
    if facts.kind == "cluster":
        view = _cluster_view(facts)
        by_id = {c.node_id: c for c in view}
        for c in view:
            if not c.is_primary and c.primary_id in by_id:
                pairs.append((by_id[c.primary_id].address, c.address))
    elif facts.kind in ("sentinel", "replicated"):
        for p in facts.primaries():
            for i in range(_int(p.info, "connected_slaves")):
                slave = p.info.get(f"slave{i}")
                if isinstance(slave, dict):
                    pairs.append((p.address, f"{slave.get('ip')}:{slave.get('port')}"))
    if not pairs:
        return
    shared = [(p, r) for p, r in pairs if p.rsplit(":", 1)[0] == r.rsplit(":", 1)[0]]
    if not shared:
        yield Finding("topology.hosts", title, P, f"{len(pairs)} replica(s), all on other hosts")
        return
    yield Finding(
        "topology.hosts",
        title,
        W,
        f"{len(shared)} of {len(pairs)} replica(s) share their primary's host: "
        + ", ".join(f"{r} -> {p}" for p, r in shared[:5]),
        "one machine (or zone) failing takes the primary and its copy together",
        "place each replica on another machine or availability zone than its primary",
    )


def _slot_ranges(slots: Sequence[int]) -> str:
    out: list[str] = []
    start = prev = -2
    for s in sorted(slots):
        if s != prev + 1:
            if start >= 0:
                out.append(f"{start}-{prev}" if prev != start else str(start))
            start = s
        prev = s
    if start >= 0:
        out.append(f"{start}-{prev}" if prev != start else str(start))
    return ",".join(out)


def check_slots(facts: Facts) -> Iterable[Finding]:
    """All 16,384 slots served by a live primary; none left migrating or importing."""
    if facts.kind != "cluster":
        return
    view = _cluster_view(facts)
    if not view:
        return
    covered = bytearray(SLOTS)
    for c in view:
        if c.is_primary and not c.failed:
            for a, b in c.slots:
                covered[a : b + 1] = b"\x01" * (b - a + 1)
    missing = [s for s in range(SLOTS) if not covered[s]]
    if missing:
        yield Finding(
            "cluster.slots",
            "All 16,384 slots served",
            F,
            f"{len(missing)} slot(s) not served: {_slot_ranges(missing)[:120]}",
            "a key in an unserved slot fails (CLUSTERDOWN Hash slot not served); with "
            "cluster-require-full-coverage yes the whole cluster refuses commands",
            "smartcache doctor --fix <url> (assigns them to the primaries with fewest slots), "
            "or CLUSTER ADDSLOTSRANGE <first> <last> on a primary",
        )
    else:
        yield Finding("cluster.slots", "All 16,384 slots served", P, "16384 of 16384")
    # a node shows only its own open slots: each node's own line, from its own view
    own = {c.node_id: c for c in facts.open_slots()}
    by_id = {c.node_id: own.get(c.node_id, c) for c in view}
    opened: list[str] = []
    broken = False
    for c in by_id.values():
        if not c.is_primary:
            continue  # a replica may mirror its primary's open slots: one report
        for slot, target in sorted(c.migrating.items()):
            peer = by_id.get(target)
            matched = peer is not None and peer.importing.get(slot) == c.node_id
            broken |= not matched
            opened.append(
                f"{slot} migrating {c.address} -> {peer.address if peer else target[:8]}"
                + ("" if matched else " (target not importing)")
            )
        for slot, source in sorted(c.importing.items()):
            peer = by_id.get(source)
            if peer is None or peer.migrating.get(slot) != c.node_id:
                broken = True
                opened.append(
                    f"{slot} importing {c.address} <- "
                    f"{peer.address if peer else source[:8]} (source not migrating)"
                )
    if not opened:
        yield Finding("cluster.open_slots", "No slot left migrating/importing", P, "none open")
        return
    yield Finding(
        "cluster.open_slots",
        "No slot left migrating/importing",
        F if broken else W,
        "; ".join(opened[:6]) + (f" (+{len(opened) - 6} more)" if len(opened) > 6 else ""),
        "an open slot sends clients ASK redirects; one left open by an interrupted "
        "resharding is never closed by itself"
        + (" and is half-open here: keys can be lost on the next migration" if broken else ""),
        "finish it (smartcache cluster reshard resumes), or close it: smartcache doctor "
        "--fix <url>, or CLUSTER SETSLOT <slot> STABLE on both nodes",
    )


def check_sentinels(facts: Facts) -> Iterable[Finding]:
    """An odd number (>= 3) of reachable sentinels that agree and reach their quorum."""
    if facts.kind != "sentinel":
        return
    title = "Sentinels: >= 3, odd, all up"
    up = [s for s in facts.sentinels if s.reachable]
    down = [s for s in facts.sentinels if not s.reachable]
    value = f"{len(up)} of {len(facts.sentinels)} reachable"
    if down:
        yield Finding(
            "sentinel.count",
            title,
            F,
            value + ": down " + ", ".join(s.address for s in down),
            "each sentinel down brings the group closer to losing the majority a failover needs",
            "restart the sentinel(s) at " + ", ".join(s.address for s in down),
        )
    elif len(up) < 3 or len(up) % 2 == 0:
        yield Finding(
            "sentinel.count",
            title,
            W,
            value,
            "fewer than 3, or an even number, tolerates no more failures than the next odd "
            "number below it",
            "run 3 or 5 sentinels, on different machines",
        )
    else:
        yield Finding("sentinel.count", title, P, value)
    named = {s.primary for s in up if s.primary}
    if len(named) > 1:
        yield Finding(
            "sentinel.agree",
            "Sentinels agree on the primary",
            F,
            "; ".join(f"{s.address} says {s.primary}" for s in up),
            "sentinels naming different primaries: clients may write to two primaries "
            "(split brain)",
            "check the network between sentinels; SENTINEL RESET <service> on the odd ones",
        )
    elif named:
        yield Finding(
            "sentinel.agree", "Sentinels agree on the primary", P, f"all name {named.pop()}"
        )
    bad = [s for s in up if s.ckquorum_ok is False]
    if bad:
        yield Finding(
            "sentinel.quorum",
            "Quorum reachable (SENTINEL CKQUORUM)",
            F,
            "; ".join(f"{s.address}: {s.ckquorum}" for s in bad),
            "without a reachable quorum and majority no failover can be authorized",
            "bring sentinels back until SENTINEL CKQUORUM <service> answers OK",
        )
    elif up:
        quorum = up[0].quorum
        yield Finding(
            "sentinel.quorum",
            "Quorum reachable (SENTINEL CKQUORUM)",
            P,
            f"OK (quorum {quorum})" if quorum is not None else "OK",
        )


def check_replication(facts: Facts) -> Iterable[Finding]:
    """Replicas linked to their primary, in sync, and how far behind."""
    primaries = {n.address: n for n in facts.primaries()}
    for n in facts.nodes:
        if not n.reachable or n.role != "slave":
            continue
        info = n.info
        link = str(info.get("master_link_status", ""))
        syncing = _int(info, "master_sync_in_progress")
        source = f"{info.get('master_host')}:{info.get('master_port')}"
        if link != "up" or syncing:
            yield Finding(
                "replication.link",
                "Replica linked and in sync",
                F,
                f"link {link or '?'} to {source}" + (", full sync in progress" if syncing else ""),
                "a replica that is not in sync cannot take over without losing writes",
                "check the replica's log; masterauth must match the primary's password",
                n.address,
            )
            continue
        primary = primaries.get(source)
        lag_bytes = None
        if primary is not None:
            lag_bytes = _int(primary.info, "master_repl_offset") - _int(info, "slave_repl_offset")
        lag_s = _int(info, "master_last_io_seconds_ago", -1)
        warn = (lag_bytes or 0) > LAG_BYTES_WARN or lag_s > LAG_SECONDS_WARN
        yield Finding(
            "replication.link",
            "Replica linked and in sync",
            W if warn else P,
            f"up to {source}; lag "
            + (f"{lag_bytes} bytes" if lag_bytes is not None else "? bytes")
            + (f", last I/O {lag_s} s ago" if lag_s >= 0 else ""),
            "a lagging replica loses what it has not received if it takes over" if warn else "",
            "check the network and the primary's write load; repl-backlog-size" if warn else "",
            n.address,
        )


# -- configuration ---------------------------------------------------------------------
def _per_node(
    facts: Facts, check: str, title: str, rule: Callable[[NodeFacts], Finding | None]
) -> Iterable[Finding]:
    for n in facts.nodes:
        if not n.reachable:
            continue
        if n.config is None:
            yield _no_config(check, title, n)
            continue
        finding = rule(n)
        if finding is not None:
            yield finding


def check_maxmemory(facts: Facts) -> Iterable[Finding]:
    """``maxmemory`` set, and a policy that fits the data."""

    def rule(n: NodeFacts) -> Finding:
        limit = int(_cfg(n, "maxmemory") or 0)
        policy = _cfg(n, "maxmemory-policy") or "?"
        if limit == 0:
            return Finding(
                "config.maxmemory",
                "maxmemory set",
                F,
                f"0 (no limit), policy {policy}",
                "without a limit Redis grows until the kernel's OOM killer ends it (or the "
                "machine swaps): every key is lost at once instead of a few evicted",
                "maxmemory <about 70% of the machine's RAM> (CONFIG SET maxmemory 4gb; "
                "CONFIG REWRITE)",
                n.address,
            )
        return Finding(
            "config.maxmemory",
            "maxmemory set",
            P,
            f"{_mb(limit)}, policy {policy}",
            "",
            "",
            n.address,
        )

    yield from _per_node(facts, "config.maxmemory", "maxmemory set", rule)


def _no_ttl_share(facts: Facts) -> float | None:
    keys = expires = 0
    for n in facts.primaries():
        for name, db in n.info.items():
            if name.startswith("db") and isinstance(db, dict):
                keys += _int(db, "keys")
                expires += _int(db, "expires")
    return None if keys == 0 else (keys - expires) / keys


def check_eviction_policy(facts: Facts) -> Iterable[Finding]:
    """A ``volatile-*`` policy with most keys lacking a TTL cannot evict them."""
    share = _no_ttl_share(facts)

    def rule(n: NodeFacts) -> Finding | None:
        policy = _cfg(n, "maxmemory-policy") or ""
        if not policy.startswith("volatile") or share is None:
            return None
        if share > 0.5:
            return Finding(
                "config.eviction_policy",
                "Eviction policy fits the keys",
                W,
                f"{policy}, but {share:.0%} of keys have no TTL",
                "volatile-* policies evict only keys with a TTL: when those run out, writes "
                "fail with OOM",
                "maxmemory-policy allkeys-lru (a cache), or noeviction (data that must not be "
                "lost), or give the keys TTLs",
                n.address,
            )
        return None

    yield from _per_node(facts, "config.eviction_policy", "Eviction policy fits the keys", rule)


def check_persistence(facts: Facts) -> Iterable[Finding]:
    """``appendonly yes`` with ``aof-use-rdb-preamble yes``."""

    def rule(n: NodeFacts) -> Finding:
        aof, preamble = _cfg(n, "appendonly"), _cfg(n, "aof-use-rdb-preamble")
        ok = aof == "yes" and preamble == "yes"
        return Finding(
            "config.persistence",
            "AOF with RDB preamble",
            P if ok else W,
            f"appendonly {aof}, aof-use-rdb-preamble {preamble}, save '{_cfg(n, 'save')}'",
            "" if ok else "without AOF a restart loses every write since the last snapshot",
            "" if ok else "appendonly yes\naof-use-rdb-preamble yes\nappendfsync everysec",
            n.address,
        )

    yield from _per_node(facts, "config.persistence", "AOF with RDB preamble", rule)


def check_auth(facts: Facts) -> Iterable[Finding]:
    """A password on the default user; ``masterauth`` wherever a node may replicate."""
    for n in facts.nodes:
        if not n.reachable:
            continue
        open_ = n.default_user_nopass
        if open_ is None and n.config is not None:
            open_ = not _cfg(n, "requirepass")
        if open_ is None:
            yield _no_config("config.auth", "Password required", n)
            continue
        yield Finding(
            "config.auth",
            "Password required",
            F if open_ else P,
            "the default user needs no password" if open_ else "required",
            "anyone who reaches the port can read, write and CONFIG SET (or FLUSHALL)"
            if open_
            else "",
            'requirepass <a strong password> (or ACL SETUSER default on ">password"); give '
            "clients the password in the URL: redis://:password@host:port"
            if open_
            else "",
            n.address,
        )
        may_replicate = facts.kind != "standalone" or n.role == "slave"
        if not open_ and may_replicate and n.config is not None:
            has = bool(_cfg(n, "masterauth"))
            yield Finding(
                "config.masterauth",
                "masterauth set (replication authenticates)",
                P if has else F,
                "set" if has else "empty",
                ""
                if has
                else "a replica (or a primary demoted by a failover) cannot sync "
                "from a primary that requires a password",
                "" if has else "masterauth <the primaries' password> (and masteruser for ACL)",
                n.address,
            )


def check_limits(facts: Facts) -> Iterable[Finding]:
    """``maxclients``, ``cluster-node-timeout``, ``min-replicas-to-write``, scripts' time."""

    def rule(n: NodeFacts) -> Finding:
        maxclients = int(_cfg(n, "maxclients") or 0)
        return Finding(
            "config.maxclients",
            "maxclients",
            P if maxclients >= 1000 else W,
            str(maxclients),
            "" if maxclients >= 1000 else "a few pooled services exhaust a low limit",
            "" if maxclients >= 1000 else "maxclients 10000 (and ulimit -n above it)",
            n.address,
        )

    yield from _per_node(facts, "config.maxclients", "maxclients", rule)
    if facts.kind == "cluster":

        def timeout_rule(n: NodeFacts) -> Finding:
            ms = int(_cfg(n, "cluster-node-timeout") or 0)
            ok = 1000 <= ms <= 15000
            return Finding(
                "config.cluster_node_timeout",
                "cluster-node-timeout",
                P if ok else W,
                f"{ms} ms",
                ""
                if ok
                else "longer: a dead primary's slots stay down that long before a "
                "failover; shorter: network hiccups start needless failovers",
                ""
                if ok
                else "cluster-node-timeout 15000 (the guide's value; 5000 for faster "
                "failovers on a good network)",
                n.address,
            )

        yield from _per_node(
            facts, "config.cluster_node_timeout", "cluster-node-timeout", timeout_rule
        )
    if facts.kind != "standalone":

        def min_replicas(n: NodeFacts) -> Finding | None:
            if n.role != "master":
                return None
            value = int(_cfg(n, "min-replicas-to-write") or 0)
            return Finding(
                "config.min_replicas",
                "min-replicas-to-write",
                P if value >= 1 else W,
                str(value),
                ""
                if value
                else "a primary cut off from its replicas keeps accepting writes "
                "that the failover on the other side will discard",
                "" if value else "min-replicas-to-write 1\nmin-replicas-max-lag 10",
                n.address,
            )

        yield from _per_node(facts, "config.min_replicas", "min-replicas-to-write", min_replicas)

    def busy(n: NodeFacts) -> Finding:
        name = "busy-reply-threshold" if _cfg(n, "busy-reply-threshold") else "lua-time-limit"
        ms = int(_cfg(n, name) or 0)
        ok = 0 < ms <= 5000
        return Finding(
            "config.busy_threshold",
            "Script time limit (BUSY)",
            P if ok else W,
            f"{name} {ms} ms",
            ""
            if ok
            else "a long script blocks every client; after this time the server "
            "answers BUSY and SCRIPT KILL becomes possible",
            "" if ok else f"{name} 5000",
            n.address,
        )

    yield from _per_node(facts, "config.busy_threshold", "Script time limit (BUSY)", busy)

    def lazy(n: NodeFacts) -> Finding:
        names = ("lazyfree-lazy-eviction", "lazyfree-lazy-expire", "lazyfree-lazy-server-del")
        off = [k for k in names if _cfg(n, k) != "yes"]
        return Finding(
            "config.lazyfree",
            "Lazy freeing",
            W if off else P,
            "off: " + ", ".join(off) if off else "on",
            "freeing a big key on the main thread stalls every client" if off else "",
            "\n".join(f"{k} yes" for k in off),
            n.address,
        )

    yield from _per_node(facts, "config.lazyfree", "Lazy freeing", lazy)


# -- runtime ---------------------------------------------------------------------------
def check_memory(facts: Facts) -> Iterable[Finding]:
    """Used memory against ``maxmemory``; fragmentation; evictions."""
    for n in facts.nodes:
        if not n.reachable:
            continue
        used = _int(n.info, "used_memory")
        limit = _int(n.info, "maxmemory")
        if limit:
            share = used / limit
            status = F if share > MEMORY_FAIL else W if share > MEMORY_WARN else P
            yield Finding(
                "memory.used",
                "Memory used < 80% of maxmemory",
                status,
                f"{_mb(used)} of {_mb(limit)} ({share:.0%})",
                ""
                if status is P
                else "near the limit Redis evicts (or refuses writes with noeviction)",
                ""
                if status is P
                else "raise maxmemory, add shards, or shrink the data (TTLs, compression)",
                n.address,
            )
        rss = _int(n.info, "used_memory_rss")
        ratio = float(n.info.get("mem_fragmentation_ratio", 0) or 0)
        if rss > 100 * 1024 * 1024 and (ratio > 1.5 or 0 < ratio < 1.0):
            yield Finding(
                "memory.fragmentation",
                "Memory fragmentation",
                W,
                f"ratio {ratio:.2f} (rss {_mb(rss)})",
                "above 1.5 the process holds much more than its data; below 1 it swaps",
                "activedefrag yes (jemalloc builds); below 1: add RAM, lower maxmemory",
                n.address,
            )
        else:
            yield Finding(
                "memory.fragmentation",
                "Memory fragmentation",
                P,
                # below 100 MB the ratio is dominated by fixed overheads: not shown
                f"ratio {ratio:.2f}" if rss > 100 * 2**20 else "not judged below 100 MB of RSS",
                node=n.address,
            )
        evicted = _int(n.info, "evicted_keys")
        if evicted:
            yield Finding(
                "memory.evictions",
                "No evictions",
                W,
                f"{evicted} keys evicted since start",
                "evicted keys are gone: fine for a cache, data loss for anything else",
                "raise maxmemory or add shards if the data must stay",
                n.address,
            )


def check_clients(facts: Facts) -> Iterable[Finding]:
    """Hit rate, clients against ``maxclients``, rejected connections, slow commands."""
    hits = sum(_int(n.info, "keyspace_hits") for n in facts.primaries())
    misses = sum(_int(n.info, "keyspace_misses") for n in facts.primaries())
    if hits + misses >= 1000:
        rate = hits / (hits + misses)
        yield Finding(
            "stats.hit_rate",
            "Cache hit rate",
            P if rate >= 0.8 else W,
            f"{rate:.1%} of {hits + misses} reads",
            ""
            if rate >= 0.8
            else "most reads miss: the TTLs are too short, the keys "
            "differ from what is read, or the cache is too small (evictions)",
            ""
            if rate >= 0.8
            else "check evicted_keys and the TTLs; cache the reads that repeat (@cached)",
        )
    else:
        yield Finding(
            "stats.hit_rate", "Cache hit rate", U, f"{hits + misses} reads so far (< 1000)"
        )
    for n in facts.nodes:
        if not n.reachable:
            continue
        connected = _int(n.info, "connected_clients")
        maxclients = _int(n.info, "maxclients") or int(_cfg(n, "maxclients") or 0)
        if maxclients:
            share = connected / maxclients
            yield Finding(
                "clients.connected",
                "Clients < 80% of maxclients",
                W if share > 0.8 else P,
                f"{connected} of {maxclients}",
                "" if share <= 0.8 else "new connections are refused at the limit",
                ""
                if share <= 0.8
                else "raise maxclients; check for connection leaks (pools without limits)",
                n.address,
            )
        rejected = _int(n.info, "rejected_connections")
        if rejected:
            yield Finding(
                "clients.rejected",
                "No rejected connections",
                W,
                f"{rejected} since start",
                "clients were refused (maxclients reached)",
                "raise maxclients (and ulimit -n); bound client pools",
                n.address,
            )
        blocked = _int(n.info, "blocked_clients")
        if blocked:
            yield Finding(
                "clients.blocked",
                "Blocked clients",
                P,
                f"{blocked} waiting in BLPOP/XREAD/WAIT...",
                node=n.address,
            )


def check_commands(facts: Facts) -> Iterable[Finding]:
    """KEYS and other whole-keyspace commands; commands slow per call; the slow log."""
    for n in facts.nodes:
        if not n.reachable:
            continue
        used = []
        slow = []
        for name, stat in n.info.items():
            if not name.startswith("cmdstat_") or not isinstance(stat, dict):
                continue
            command = name.removeprefix("cmdstat_")
            calls = _int(stat, "calls")
            if command in BLOCKING and calls:
                used.append(f"{command.upper()} x{calls}")
            per_call = float(stat.get("usec_per_call", 0) or 0)
            slow_enough = per_call > SLOW_CALL_USEC and calls >= SLOW_CALLS_MIN
            if slow_enough and command.split("|", 1)[0] not in ADMIN:
                slow.append((per_call, f"{command.upper()} {per_call / 1000:.1f} ms/call x{calls}"))
        if used:
            yield Finding(
                "commands.blocking",
                "No KEYS / FLUSHALL in production",
                F,
                ", ".join(used),
                "KEYS walks every key while all other clients wait",
                "use SCAN (client.scan_iter); forbid it: ACL SETUSER <app-user> -keys "
                '-flushall -flushdb, or rename-command KEYS ""',
                n.address,
            )
        else:
            yield Finding(
                "commands.blocking",
                "No KEYS / FLUSHALL in production",
                P,
                "none called",
                node=n.address,
            )
        if slow:
            slow.sort(reverse=True)
            yield Finding(
                "commands.slow",
                "No command slower than 1 ms per call",
                W,
                "; ".join(text for _, text in slow[:4]),
                "a command this slow on average works on big values (O(N)): every client "
                "waits behind it",
                "split big keys; use SCAN-family commands (HSCAN, SSCAN) or ranges",
                n.address,
            )
        entries = sorted(n.slowlog, key=lambda e: -int(e.get("duration", 0)))
        if entries:
            top = "; ".join(
                f"{_command_text(e)} {int(e.get('duration', 0)) / 1000:.1f} ms" for e in entries[:3]
            )
            yield Finding(
                "commands.slowlog",
                "Slow log",
                W,
                f"{len(n.slowlog)} entries; slowest: {top}",
                "each entry blocked every client for that long",
                "SLOWLOG GET 10 for details; split the keys or the work",
                n.address,
            )


def _command_text(entry: dict[str, Any]) -> str:
    command = entry.get("command", b"")
    if isinstance(command, bytes):
        command = command.decode("utf-8", "replace")
    words = str(command).split()
    return words[0].upper() if words else "?"


def check_ttls(facts: Facts) -> Iterable[Finding]:
    """The share of keys without a TTL."""
    share = _no_ttl_share(facts)
    if share is None:
        return
    yield Finding(
        "keys.ttl",
        "Keys have TTLs",
        W if share > 0.5 else P,
        f"{share:.0%} of keys have no TTL",
        ""
        if share <= 0.5
        else "keys without a TTL stay forever: memory only grows, and "
        "stale values are served until someone deletes them",
        ""
        if share <= 0.5
        else "give cached keys a TTL (@cached(ttl=..., jitter=...)); "
        "keep permanent data in a database or a separate instance",
    )


# -- data layout (sampled) -------------------------------------------------------------
def _sample_note(facts: Facts) -> str:
    note = f"{facts.sampled} of {facts.keys_total} keys sampled"
    return note + ("" if facts.sample_complete else ", stopped by --max-seconds")


def check_big_values(facts: Facts) -> Iterable[Finding]:
    """Values over 10 KB."""
    if not facts.sampled:
        return
    big = sorted((s for s in facts.samples if _size_of(s) > BIG_VALUE), key=lambda s: -_size_of(s))
    if not big:
        yield Finding("data.big_values", "No value over 10 KB", P, f"none ({_sample_note(facts)})")
        return
    yield Finding(
        "data.big_values",
        "No value over 10 KB",
        W,
        f"{len(big)} found ({_sample_note(facts)}): "
        + ", ".join(f"{_short(s.key)} {s.type} {_size_of(s) / 1024:.0f} KB" for s in big[:5]),
        "a big value costs every read and write the time to copy it, blocks the server "
        "while it is freed or migrated, and unbalances a cluster",
        "compress it (@cached compresses values over compress_over=10240 bytes) or split it into "
        "a hash or several keys",
    )


def _size_of(s: KeySample) -> int:
    return s.value_bytes if s.value_bytes is not None else s.memory


def _short(key: str) -> str:
    return key if len(key) <= 40 else key[:37] + "..."


def check_json_strings(facts: Facts) -> Iterable[Finding]:
    """Flat JSON objects in strings that would take less memory as hashes."""
    candidates = [s for s in facts.samples if s.hash_estimate is not None]
    if not candidates:
        return
    as_string = sum(s.memory for s in candidates)
    as_hash = sum(s.hash_estimate or 0 for s in candidates)
    saving = 1 - as_hash / as_string if as_string else 0.0
    status = W if saving >= 0.2 and len(candidates) >= 10 else P
    yield Finding(
        "data.json_strings",
        "JSON strings vs hashes",
        status,
        f"{len(candidates)} sampled keys hold flat JSON objects: {as_string} bytes as "
        f"strings, about {as_hash} as hashes ({saving:.0%} less)",
        ""
        if status is P
        else "a small hash is stored as a compact listpack and lets you read or change one field",
        "" if status is P else "store such objects with HSET (fields as hash fields)",
    )


def check_skew(facts: Facts) -> Iterable[Finding]:
    """Cluster: keys and memory spread evenly over the primaries (hash-tag skew)."""
    if facts.kind != "cluster":
        return
    primaries = facts.primaries()
    if len(primaries) < 2:
        return
    keys = {n.address: _keys(n) for n in primaries}
    memory = {
        n.address: _int(n.info, "used_memory_dataset", _int(n.info, "used_memory"))
        for n in primaries
    }
    total = sum(keys.values())
    if total < 100:
        yield Finding(
            "cluster.skew", "Keys spread over primaries", U, f"{total} keys: too few to judge"
        )
        return
    mean = total / len(keys)
    worst = max(keys, key=lambda a: keys[a])
    ratio = keys[worst] / mean if mean else 0.0
    value = (
        "keys "
        + ", ".join(f"{a}={k}" for a, k in keys.items())
        + "; memory "
        + ", ".join(f"{a}={_mb(m)}" for a, m in memory.items())
    )
    tags: dict[str, int] = {}
    for s in facts.samples:
        tag = _hash_tag(s.key)
        if tag is not None:
            tags[tag] = tags.get(tag, 0) + 1
    if ratio > 1.5:
        top = sorted(tags.items(), key=lambda kv: -kv[1])[:3]
        yield Finding(
            "cluster.skew",
            "Keys spread over primaries",
            W,
            value + (f"; busiest hash tags in the sample: {top}" if top else ""),
            f"{worst} holds {ratio:.1f}x the mean: it fills up and saturates first",
            "use hash tags only for keys that must share a slot; rebalance: smartcache "
            "cluster rebalance",
        )
    else:
        yield Finding("cluster.skew", "Keys spread over primaries", P, value)


def _keys(n: NodeFacts) -> int:
    return sum(
        _int(db, "keys")
        for name, db in n.info.items()
        if name.startswith("db") and isinstance(db, dict)
    )


def _hash_tag(key: str) -> str | None:
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    return key[start + 1 : end] if end > start + 1 else None


# -- host ------------------------------------------------------------------------------
def check_host(facts: Facts) -> Iterable[Finding]:
    """vm.overcommit_memory=1, transparent huge pages off, a file-descriptor limit."""
    host = facts.host
    if host is None:
        for check, title, how in (
            ("host.overcommit", "vm.overcommit_memory = 1", "sysctl vm.overcommit_memory"),
            (
                "host.thp",
                "Transparent huge pages off",
                "cat /sys/kernel/mm/transparent_hugepage/enabled",
            ),
            (
                "host.nofile",
                "File-descriptor limit >= 65535",
                "grep 'open files' /proc/$(pidof redis-server)/limits",
            ),
        ):
            yield Finding(
                check,
                title,
                U,
                "the servers are not on this machine",
                "",
                f"on each server host: {how}",
            )
        return
    over = host.overcommit_memory
    yield Finding(
        "host.overcommit",
        "vm.overcommit_memory = 1",
        U if over is None else P if over == "1" else W,
        "unreadable" if over is None else over,
        ""
        if over == "1"
        else "background saves (fork) can fail with 'Cannot allocate memory' under memory pressure",
        ""
        if over == "1"
        else "sysctl vm.overcommit_memory=1 (and vm.overcommit_memory = 1 in /etc/sysctl.conf)",
    )
    thp = host.transparent_hugepage
    yield Finding(
        "host.thp",
        "Transparent huge pages off",
        U if thp is None else P if thp == "never" else W,
        "unreadable" if thp is None else thp,
        "" if thp == "never" else "huge pages make fork copy-on-write slow and latency spiky",
        ""
        if thp == "never"
        else "echo never > /sys/kernel/mm/transparent_hugepage/enabled "
        "(and at boot: transparent_hugepage=never)",
    )
    for address, limit in sorted(host.nofile.items()):
        yield Finding(
            "host.nofile",
            "File-descriptor limit >= 65535",
            P if limit >= 65535 else W,
            str(limit),
            "" if limit >= 65535 else "the server caps maxclients to this limit minus 32",
            ""
            if limit >= 65535
            else "ulimit -n 65535 before starting it (LimitNOFILE=65535 in its systemd unit)",
            address,
        )


CHECKS: Final[tuple[Check, ...]] = (
    check_reachable,
    check_shape,
    check_hosts,
    check_slots,
    check_sentinels,
    check_replication,
    check_maxmemory,
    check_eviction_policy,
    check_persistence,
    check_auth,
    check_limits,
    check_memory,
    check_clients,
    check_commands,
    check_ttls,
    check_big_values,
    check_json_strings,
    check_skew,
    check_host,
)


def run_checks(facts: Facts, checks: Sequence[Check] = CHECKS) -> list[Finding]:
    """Every finding of every check, in checklist order."""
    return [finding for check in checks for finding in check(facts)]
