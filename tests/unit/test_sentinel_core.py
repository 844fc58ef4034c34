"""The I/O-free Sentinel core: replies, ROLE, events, the failover state machine, URLs."""

from __future__ import annotations

from typing import Any

import pytest

from smartcache import ConfigurationError
from smartcache.core.sentinel import (
    WATCHED_CHANNELS,
    FailoverState,
    PrimaryInfo,
    ReplicaInfo,
    SentinelEvent,
    SentinelInfo,
    format_address,
    interpret_answer,
    parse_event,
    parse_master_address,
    parse_pubsub_message,
    parse_replicas,
    parse_role,
    parse_sentinel_url,
    parse_sentinels,
    usable_replicas,
)

A = ("10.0.0.1", 6379)
B = ("10.0.0.2", 6380)
C = ("10.0.0.3", 6381)


def flat(d: dict[str, str]) -> list[bytes]:
    """RESP2: a flat list of bytes."""
    out: list[bytes] = []
    for k, v in d.items():
        out += [k.encode(), v.encode()]
    return out


def resp3(d: dict[str, str]) -> dict[bytes, bytes]:
    return {k.encode(): v.encode() for k, v in d.items()}


def as_str(d: dict[str, str]) -> list[str]:
    """RESP2 with decode_responses=True."""
    out: list[str] = []
    for k, v in d.items():
        out += [k, v]
    return out


SHAPES = [flat, resp3, as_str, dict]


def master(flags: str = "master", host: str = A[0], port: int = A[1]) -> dict[str, str]:
    return {
        "name": "mymaster",
        "ip": host,
        "port": str(port),
        "runid": "abc",
        "flags": flags,
        "num-slaves": "2",
        "num-other-sentinels": "2",
        "quorum": "2",
        "config-epoch": "3",
    }


def replica(
    host: str, port: int, flags: str = "slave", link: str = "ok", role: str = "slave"
) -> dict[str, str]:
    return {
        "name": f"{host}:{port}",
        "ip": host,
        "port": str(port),
        "flags": flags,
        "role-reported": role,
        "master-link-status": link,
        "master-host": A[0],
        "master-port": str(A[1]),
        "slave-priority": "100",
        "slave-repl-offset": "42",
    }


def sentinel(host: str, port: int, flags: str = "sentinel") -> dict[str, str]:
    return {"name": "id", "ip": host, "port": str(port), "runid": "id", "flags": flags}


# -- replies ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
def test_primary_info_from_every_reply_shape(shape: Any) -> None:
    info = PrimaryInfo.from_reply(shape(master()))
    assert info.address == A
    assert info.name == "mymaster"
    assert info.flags == {"master"}
    assert (info.num_replicas, info.num_other_sentinels, info.quorum, info.config_epoch) == (
        2,
        2,
        2,
        3,
    )
    assert not info.is_down


@pytest.mark.parametrize("flags", ["master,s_down", "master,s_down,o_down", "master,disconnected"])
def test_primary_flagged_down(flags: str) -> None:
    assert PrimaryInfo.from_reply(flat(master(flags))).is_down


@pytest.mark.parametrize(
    "reply", [[b"10.0.0.1", b"6379"], ["10.0.0.1", "6379"], (b"10.0.0.1", 6379)]
)
def test_get_master_addr(reply: Any) -> None:
    assert parse_master_address(reply) == A


def test_get_master_addr_unknown_service() -> None:
    assert parse_master_address(None) is None


def test_get_master_addr_bad_port() -> None:
    with pytest.raises(ValueError, match="invalid port"):
        parse_master_address([b"h", b"0"])


@pytest.mark.parametrize("shape", SHAPES)
def test_replicas_usable_filter(shape: Any) -> None:
    reply = [
        shape(replica("r1", 1)),
        shape(replica("r2", 2, flags="slave,s_down")),
        shape(replica("r3", 3, flags="slave,o_down")),
        shape(replica("r4", 4, flags="slave,disconnected")),
        shape(replica("r5", 5, link="err")),
        shape(replica("r6", 6, role="master")),  # the old primary, not demoted yet
        shape(replica("r7", 7)),
        shape(replica("r1", 1)),  # listed twice
    ]
    infos = parse_replicas(reply)
    assert len(infos) == 8
    assert infos[0].primary_host == A[0] and infos[0].primary_port == A[1]
    assert infos[0].repl_offset == 42 and infos[0].priority == 100
    assert usable_replicas(infos) == (("r1", 1), ("r7", 7))
    assert usable_replicas(infos, primary=("r7", 7)) == (("r1", 1),)


def test_replicas_malformed_entries_skipped() -> None:
    reply = [flat(replica("r1", 1)), [b"ip"], flat({"ip": "x", "port": "nope"}), 17]
    assert [r.address for r in parse_replicas(reply)] == [("r1", 1)]
    assert parse_replicas(None) == ()
    assert parse_replicas(ValueError("boom")) == ()


def test_replica_without_role_reported_is_usable() -> None:
    d = replica("r1", 1)
    del d["role-reported"]
    assert ReplicaInfo.from_reply(flat(d)).usable


@pytest.mark.parametrize("shape", SHAPES)
def test_sentinels(shape: Any) -> None:
    infos = parse_sentinels([shape(sentinel("s1", 1)), shape(sentinel("s2", 2, "sentinel,s_down"))])
    assert [s.address for s in infos] == [("s1", 1), ("s2", 2)]
    assert [s.usable for s in infos] == [True, False]
    assert infos[0].run_id == "id"
    assert SentinelInfo("h", 1).usable


# -- interpreting one sentinel's answer ------------------------------------------------------


def test_answer_names_the_primary_and_peers() -> None:
    answer = interpret_answer(
        "mymaster",
        [b"10.0.0.1", b"6379"],
        resp3(master()),
        [flat(sentinel("s1", 1)), flat(sentinel("s2", 2))],
    )
    assert answer.primary == A
    assert answer.sentinels == (("s1", 1), ("s2", 2))
    assert answer.reason == ""


def test_answer_refuses_a_primary_flagged_down() -> None:
    answer = interpret_answer("mymaster", [b"10.0.0.1", b"6379"], flat(master("master,o_down")))
    assert answer.primary is None
    assert "10.0.0.1:6379" in answer.reason and "o_down" in answer.reason


def test_answer_takes_the_promoted_replica_during_reconfiguration() -> None:
    # The leader reports the promoted replica while SENTINEL MASTER still shows the old one.
    answer = interpret_answer("mymaster", [b"10.0.0.2", b"6380"], flat(master("master,o_down")))
    assert answer.primary == B


def test_answer_unknown_service_and_errors() -> None:
    assert "does not monitor" in interpret_answer("x", None).reason
    err = interpret_answer("x", ValueError("NOAUTH"), None, ValueError("no"))
    assert err.primary is None and "NOAUTH" in err.reason and err.sentinels == ()
    assert "malformed" in interpret_answer("x", [b"h"]).reason
    # SENTINEL MASTER refused (an ACL, say): the address still counts; ROLE will confirm.
    assert interpret_answer("x", [b"10.0.0.1", b"6379"], ValueError("NOPERM")).primary == A
    assert interpret_answer("x", [b"10.0.0.1", b"6379"], [b"junk"]).primary == A


# -- ROLE ------------------------------------------------------------------------------------


def test_role_primary() -> None:
    role = parse_role(
        [b"master", 425, [[b"127.0.0.1", b"10579", b"0"], [b"127.0.0.1", b"18342", b"0"]]]
    )
    assert role.is_primary and role.kind == "primary"
    assert role.offset == 425
    assert role.replicas == (("127.0.0.1", 10579), ("127.0.0.1", 18342))


def test_role_replica_and_sentinel() -> None:
    role = parse_role(["slave", "127.0.0.1", 11584, "connected", 425])
    assert not role.is_primary and role.kind == "replica"
    assert role.primary == ("127.0.0.1", 11584) and role.link_state == "connected"
    assert role.offset == 425
    sent = parse_role([b"sentinel", [b"mymaster", b"other"]])
    assert sent.kind == "sentinel" and sent.services == ("mymaster", "other")
    assert parse_role([b"something-new"]).kind == "something-new"


@pytest.mark.parametrize("reply", [None, [], b"master", ValueError("x"), [b"slave", b"h"]])
def test_role_malformed(reply: Any) -> None:
    with pytest.raises(ValueError):
        parse_role(reply)


# -- events ----------------------------------------------------------------------------------


def test_pubsub_message_shapes() -> None:
    assert parse_pubsub_message([b"message", b"+odown", b"master m h 1"]) == (
        "+odown",
        b"master m h 1",
    )
    assert parse_pubsub_message([b"pmessage", b"*", b"+odown", b"x"]) == ("+odown", b"x")
    assert parse_pubsub_message(["message", "+sdown", "x"]) == ("+sdown", "x")
    for other in ([b"subscribe", b"+odown", 1], [b"pong", b""], b"PONG", None, [], "message"):
        assert parse_pubsub_message(other) is None


def test_switch_master_event() -> None:
    event = parse_event("+switch-master", b"mymaster 10.0.0.1 6379 10.0.0.2 6380", "s:1")
    assert event == SentinelEvent(
        "+switch-master", "master", "mymaster", A, "mymaster", A, B, "", "s:1"
    )


def test_instance_events() -> None:
    odown = parse_event("+odown", "master mymaster 10.0.0.1 6379 #quorum 3/2")
    assert odown is not None
    assert (odown.instance_type, odown.service, odown.primary, odown.detail) == (
        "master",
        "mymaster",
        A,
        "#quorum 3/2",
    )
    promoted = parse_event(
        "+promoted-slave", "slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1 6379"
    )
    assert promoted is not None and promoted.about_replica
    assert (promoted.address, promoted.service, promoted.primary) == (B, "mymaster", A)
    role = parse_event(
        "-role-change",
        "slave 10.0.0.2:6380 10.0.0.2 6380 @ mymaster 10.0.0.1 6379 new reported role is master",
    )
    assert role is not None and role.detail == "new reported role is master"
    peer = parse_event("+sentinel", "sentinel abc 10.0.0.9 26379 @ mymaster 10.0.0.1 6379")
    assert peer is not None and peer.address == ("10.0.0.9", 26379) and peer.service == "mymaster"


def test_events_without_instance_and_malformed() -> None:
    epoch = parse_event("+new-epoch", b"3")
    assert epoch is not None and epoch.service is None and epoch.detail == "3"
    short = parse_event("+sdown", "slave a:1 a 1")  # no "@ master" part
    assert short is not None and short.service is None
    assert parse_event("+switch-master", "mymaster h 1 h") is None
    assert parse_event("+odown", "master mymaster h notaport") is None


def test_watched_channels() -> None:
    for channel in ("+switch-master", "+try-failover", "+odown", "-odown", "+sentinel"):
        assert channel in WATCHED_CHANNELS
    assert len(set(WATCHED_CHANNELS)) == len(WATCHED_CHANNELS)
    assert any(c.startswith("-failover-abort-") for c in WATCHED_CHANNELS)


# -- the failover state machine ----------------------------------------------------------------


def ev(
    channel: str, source: str = "s1", primary: tuple[str, int] = A, svc: str = "mymaster"
) -> SentinelEvent:
    if channel == "+switch-master":
        raise AssertionError("use switch()")
    if channel in ("+selected-slave", "+promoted-slave", "+failover-state-wait-promotion"):
        data = f"slave {B[0]}:{B[1]} {B[0]} {B[1]} @ {svc} {primary[0]} {primary[1]}"
    else:
        data = f"master {svc} {primary[0]} {primary[1]}"
    event = parse_event(channel, data, source)
    assert event is not None
    return event


def switch(
    old: tuple[str, int], new: tuple[str, int], source: str = "s1", svc: str = "mymaster"
) -> SentinelEvent:
    event = parse_event("+switch-master", f"{svc} {old[0]} {old[1]} {new[0]} {new[1]}", source)
    assert event is not None
    return event


def test_forced_failover_holds_writes_until_switch_confirmed() -> None:
    state = FailoverState("mymaster").with_primary(A)
    assert state.writable and not state.in_progress
    for channel in (
        "+try-failover",
        "+elected-leader",
        "+failover-state-select-slave",
        "+selected-slave",
        "+failover-state-wait-promotion",
        "+promoted-slave",
        "+failover-state-reconf-slaves",
    ):
        state = state.apply(ev(channel))
        assert not state.writable and state.in_progress, channel
    state = state.apply(switch(A, B, source="s2"))  # a follower announces the switch first
    assert state.pending == B and not state.writable
    assert state.apply(switch(A, B, source="s3")) is state  # same news again: no change
    state = state.with_primary(B)  # ROLE confirmed
    assert state.writable and state.primary == B and not state.in_progress
    # The leader's late events name the old primary: ignored.
    for late in (ev("+failover-end"), switch(A, B)):
        assert state.apply(late) is state


def test_abort_releases_only_its_source() -> None:
    state = FailoverState("mymaster", primary=A)
    state = state.apply(ev("+try-failover", "s1")).apply(ev("+try-failover", "s2"))
    assert state.failing_over == {"s1", "s2"}
    state = state.apply(ev("-failover-abort-not-elected", "s1"))
    assert not state.writable and state.failing_over == {"s2"}
    state = state.apply(ev("-failover-abort-no-good-slave", "s2"))
    assert state.writable


def test_odown_holds_until_odown_clears_or_switch() -> None:
    state = FailoverState("mymaster", primary=A).apply(ev("+sdown"))
    assert state.writable  # one sentinel's subjective view is not enough
    state = state.apply(ev("+odown", "s1")).apply(ev("+odown", "s2"))
    assert not state.writable and state.down == {"s1", "s2"} and not state.in_progress
    assert not state.apply(ev("-odown", "s1")).writable
    assert state.apply(ev("-odown", "s1")).apply(ev("-odown", "s2")).writable
    assert state.apply(switch(A, B)).with_primary(B).writable


def test_forget_source_and_reset() -> None:
    state = (
        FailoverState("mymaster", primary=A)
        .apply(ev("+try-failover", "s1"))
        .apply(ev("+odown", "s1"))
    )
    assert state.forget("s1").writable
    assert state.forget("other") is state
    assert state.apply(ev("+reset-master", "s1")).writable


def test_other_services_and_other_primaries_are_ignored() -> None:
    state = FailoverState("mymaster", primary=A)
    assert state.apply(ev("+try-failover", svc="other")) is state
    assert state.apply(ev("+try-failover", primary=C)) is state
    assert state.apply(switch(C, B, svc="other")) is state
    assert state.apply(ev("+sdown")) is state
    epoch = parse_event("+new-epoch", "4")
    assert epoch is not None and state.apply(epoch) is state


def test_unknown_primary_accepts_events_about_any() -> None:
    state = FailoverState("mymaster").apply(ev("+try-failover", primary=C))
    assert not state.writable


def test_switch_that_proves_wrong_is_cleared_by_reconfirming_the_old_primary() -> None:
    state = FailoverState("mymaster", primary=A).apply(switch(A, B))
    assert state.pending == B
    back = state.with_primary(A)
    assert back.pending is None and back.writable and back.primary == A
    assert back.with_primary(A) is back


def test_events_about_the_pending_primary_count() -> None:
    state = FailoverState("mymaster", primary=A).apply(switch(A, B))
    assert state.apply(ev("+odown", primary=B)).down == {"s1"}


def test_switch_from_a_missed_primary_still_counts() -> None:
    # We missed A -> C; a later C -> B still names the primary to confirm.
    state = FailoverState("mymaster", primary=A).apply(switch(C, B))
    assert state.pending == B


def test_format_address() -> None:
    assert format_address(A) == "10.0.0.1:6379"


# -- redis+sentinel:// URLs --------------------------------------------------------------------


def test_url_full() -> None:
    url = parse_sentinel_url(
        "redis+sentinel://user:p%40ss@h1:26379,h2:26380,[::1]:26381,h4/mymaster/2"
        "?socket_timeout=0.5&sentinel_password=sp&sentinel_username=su&decode_responses=true"
        "&client_name=app"
    )
    assert url.sentinels == (("h1", 26379), ("h2", 26380), ("::1", 26381), ("h4", 26379))
    assert url.service_name == "mymaster"
    assert url.db == 2
    assert (url.username, url.password) == ("user", "p@ss")
    assert (url.sentinel_username, url.sentinel_password) == ("su", "sp")
    assert not url.ssl
    assert url.connection_kwargs() == {
        "db": 2,
        "socket_timeout": 0.5,
        "decode_responses": True,
        "client_name": "app",
        "username": "user",
        "password": "p@ss",
    }
    assert url.sentinel_kwargs() == {"username": "su", "password": "sp"}
    assert "p@ss" not in repr(url) and "sp'" not in repr(url)


def test_url_minimal_tls_and_password_only() -> None:
    url = parse_sentinel_url("rediss+sentinel://:secret@h1,h1:26379/svc")
    assert url.sentinels == (("h1", 26379),)  # deduplicated
    assert (url.db, url.username, url.password, url.ssl) == (0, None, "secret", True)
    assert url.connection_kwargs() == {"db": 0, "password": "secret", "ssl": True}
    assert url.sentinel_kwargs() == {"ssl": True}
    assert parse_sentinel_url("redis+sentinel://h/svc/?db=3").db == 3


def test_url_user_without_password() -> None:
    # an ACL user with ``nopass``: redis-py's URLs take a user name alone too
    url = parse_sentinel_url("redis+sentinel://alice@h/svc")
    assert (url.username, url.password) == ("alice", None)
    assert url.connection_kwargs() == {"db": 0, "username": "alice"}


@pytest.mark.parametrize(
    ("url", "match"),
    [
        ("redis://h:26379/svc", "not a Sentinel URL"),
        ("h1:26379/svc", "not a Sentinel URL"),
        ("redis+sentinel://h1:26379", "names no service"),
        ("redis+sentinel://h1:26379/", "names no service"),
        ("redis+sentinel://h1:26379/svc/0/extra", "service_name\\[/db\\]"),
        ("redis+sentinel://h1:26379/svc/x", "db must be"),
        ("redis+sentinel://h1:26379/svc?db=-1", "db must be"),
        ("redis+sentinel://h1:notaport/svc", "bad port"),
        ("redis+sentinel://h1:99999/svc", "bad port"),
        ("redis+sentinel://h1,,h2/svc", "empty host"),
        ("redis+sentinel:///svc", "empty host"),
        ("redis+sentinel://[::1/svc", "bad host"),
        ("redis+sentinel://:26379/svc", "bad host"),
        ("redis+sentinel://h/svc?socket_timeout=soon", "invalid value 'soon' for socket_timeout"),
        ("redis+sentinel://h/svc?decode_responses=maybe", "decode_responses"),
    ],
)
def test_url_errors(url: str, match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        parse_sentinel_url(url)


def test_url_errors_never_show_passwords() -> None:
    with pytest.raises(ConfigurationError) as info:
        parse_sentinel_url("redis+sentinel://u:hunter2@h:bad/svc?sentinel_password=hunter3")
    assert "hunter2" not in str(info.value) and "hunter3" not in str(info.value)
    with pytest.raises(ConfigurationError) as info:
        parse_sentinel_url("redis+sentinel://:hunter2@h/svc/x")
    assert "hunter2" not in str(info.value)
