"""The doctor's rules on hand-made facts (no server): each verdict, threshold and parse."""

from __future__ import annotations

from smartcache.ops import Report
from smartcache.ops._checks import (
    check_eviction_policy,
    check_memory,
    check_sentinels,
    check_slots,
    run_checks,
)
from smartcache.ops._collect import _json_shape, _listpack_entry, mask_url
from smartcache.ops._facts import (
    Facts,
    Finding,
    KeySample,
    NodeFacts,
    SentinelFacts,
    Status,
    parse_cluster_nodes,
)

A, B, C = "a" * 40, "b" * 40, "c" * 40

NODES = f"""\
{A} 10.0.0.1:7000@17000 myself,master - 0 0 1 connected 0-5460 [5460->-{B}]
{B} 10.0.0.2:7000@17000 master - 0 0 2 connected 5461-10922 [5460-<-{A}]
{C} 10.0.0.3:7000@17000 master - 0 0 3 connected 10923-16383
"""


def cluster_facts(text: str) -> Facts:
    """Each node's own view: the same lines, ``myself`` on its own (only there do its open
    slots show, as on a real server)."""
    nodes = []
    for i, address in enumerate(("10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000")):
        lines = []
        for j, line in enumerate(text.splitlines()):
            parts = line.split()
            flags = set(parts[2].split(",")) - {"myself"}
            if i == j:
                flags.add("myself")
            else:
                parts = [p for p in parts if not p.startswith("[")]
            parts[2] = ",".join(sorted(flags))
            lines.append(" ".join(parts))
        node = NodeFacts(address, info={"role": "master"})
        node.cluster_nodes = parse_cluster_nodes("\n".join(lines))
        nodes.append(node)
    return Facts("cluster", "redis://10.0.0.1:7000", nodes=nodes)


def test_parse_cluster_nodes_reads_open_slots() -> None:
    a, b, c = parse_cluster_nodes(NODES)
    assert a.address == "10.0.0.1:7000" and a.flags == frozenset({"master"}) and a.myself
    assert not b.myself
    assert a.slots == ((0, 5460),) and a.migrating == {5460: B} and a.importing == {}
    assert b.importing == {5460: A} and c.migrating == c.importing == {}


def test_a_matched_migration_warns_a_half_open_one_fails() -> None:
    (covered, opened) = check_slots(cluster_facts(NODES))
    assert covered.status is Status.PASS and covered.value == "16384 of 16384"
    assert opened.status is Status.WARN  # in progress (or stuck): both sides agree
    assert opened.value == "5460 migrating 10.0.0.1:7000 -> 10.0.0.2:7000"
    half = NODES.replace(f" [5460-<-{A}]", "")
    (_, opened) = check_slots(cluster_facts(half))
    assert opened.status is Status.FAIL and opened.value.endswith("(target not importing)")


def test_uncovered_slots_are_listed_as_ranges() -> None:
    text = (
        NODES.replace("10923-16383", "10923-16000 16002-16383")
        .replace(" [5460->-" + B + "]", "")
        .replace(" [5460-<-" + A + "]", "")
    )
    (covered, _) = check_slots(cluster_facts(text))
    assert covered.status is Status.FAIL and covered.value == "1 slot(s) not served: 16001"


def sentinel(address: str, primary: str, *, up: bool = True) -> SentinelFacts:
    return SentinelFacts(address, reachable=up, primary=primary, ckquorum_ok=up, ckquorum="OK")


def test_sentinels_even_count_warns_and_disagreement_fails() -> None:
    facts = Facts("sentinel", "x", sentinels=[sentinel("s1", "p:1"), sentinel("s2", "p:1")])
    count, agree, quorum = check_sentinels(facts)
    assert count.status is Status.WARN and count.value == "2 of 2 reachable"
    assert agree.status is Status.PASS and quorum.status is Status.PASS
    facts.sentinels.append(sentinel("s3", "q:2"))
    count, agree, _ = check_sentinels(facts)
    assert count.status is Status.PASS
    assert agree.status is Status.FAIL and "s3 says q:2" in agree.value


def test_memory_thresholds() -> None:
    def used(share: float) -> Finding:
        node = NodeFacts("n:1", info={"used_memory": int(share * 1000), "maxmemory": 1000})
        return next(iter(check_memory(Facts("standalone", "x", nodes=[node]))))

    assert used(0.5).status is Status.PASS
    assert used(0.85).status is Status.WARN
    assert used(0.96).status is Status.FAIL


def test_a_volatile_policy_with_keys_without_ttl_warns() -> None:
    node = NodeFacts(
        "n:1",
        info={"role": "master", "db0": {"keys": 100, "expires": 10}},
        config={"maxmemory-policy": "volatile-lru"},
    )
    (finding,) = check_eviction_policy(Facts("standalone", "x", nodes=[node]))
    assert finding.status is Status.WARN and finding.value.endswith("90% of keys have no TTL")
    node.config = {"maxmemory-policy": "allkeys-lru"}
    assert list(check_eviction_policy(Facts("standalone", "x", nodes=[node]))) == []


def test_unreadable_config_is_unknown_never_pass() -> None:
    node = NodeFacts("n:1", info={"role": "master"}, config=None)
    findings = run_checks(Facts("standalone", "x", nodes=[node]))
    maxmemory = [f for f in findings if f.check == "config.maxmemory"]
    assert [f.status for f in maxmemory] == [Status.UNKNOWN]
    assert "CONFIG GET" in maxmemory[0].fix


def test_exit_codes() -> None:
    def report(*statuses: Status) -> Report:
        return Report(Facts("standalone", "x"), [Finding("c", "t", s, "v") for s in statuses])

    assert report(Status.PASS, Status.UNKNOWN).exit_code(strict=True) == 0
    assert report(Status.PASS, Status.WARN).exit_code() == 0
    assert report(Status.PASS, Status.WARN).exit_code(strict=True) == 1
    assert report(Status.WARN, Status.FAIL).exit_code() == 2


def test_json_shape_and_listpack_sizes() -> None:
    assert _listpack_entry(b"7") == 2  # a 7-bit integer and its back-length
    assert _listpack_entry(b"123456") == 5
    assert _listpack_entry(b"name") == 6  # 1 header + 4 bytes + 1 back-length
    sample = KeySample("k", "n", "string", memory=200, ttl=-1)
    _json_shape(sample, b'{"id": 7, "name": "x"}')
    assert sample.json_fields == 2 and sample.hash_estimate is not None
    for raw in (b'{"a": {"nested": 1}}', b"[1, 2]", b"not json", b'{"a": "' + b"x" * 65 + b'"}'):
        other = KeySample("k", "n", "string", memory=200, ttl=-1)
        _json_shape(other, raw)
        assert other.hash_estimate is None, raw


def test_mask_url_hides_passwords() -> None:
    assert mask_url("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
    assert mask_url("redis://:pw@h:1") == "redis://:***@h:1"
    assert mask_url("redis://h:1") == "redis://h:1"
    assert mask_url("redis+sentinel://:pw@h:1,h:2/svc") == "redis+sentinel://:***@h:1,h:2/svc"
