"""key_slot agrees with the server's CLUSTER KEYSLOT for >= 20,000 generated keys."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from smartcache import key_slot
from smartcache.testing import Cluster

BATCH = 100
EXAMPLES = 210

keys = st.one_of(
    st.binary(max_size=48),
    st.text(max_size=32),
    st.text(alphabet="{}ab\x00é\U0001f600", max_size=14),
    st.integers(),
    st.floats(),
)
SPECIAL = ["{}", "{{a}}", "a{}b{c}", "{", "}", "}{", "a{b", "{a}}", b"\xff{\x00}", "{é}x"]


def test_key_slot_matches_server(redis_cluster: Cluster) -> None:
    node = redis_cluster.processes[0].client()
    checked = 0

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    )
    @given(st.lists(keys, min_size=BATCH, max_size=BATCH))
    @example(SPECIAL + [""] * (BATCH - len(SPECIAL)))
    def check(batch: list[bytes | str | int | float]) -> None:
        nonlocal checked
        pipe = node.pipeline(transaction=False)
        for key in batch:
            pipe.execute_command("CLUSTER", "KEYSLOT", key)
        server = [int(s) for s in pipe.execute()]
        ours = [key_slot(k) for k in batch]
        mismatches = [(k, o, s) for k, o, s in zip(batch, ours, server, strict=True) if o != s]
        assert not mismatches, mismatches[:5]
        checked += len(batch)

    try:
        check()
    finally:
        node.close()
    assert checked >= 20_000
