"""The cluster SCAN cursor (smartcache.core.scan): pure, no server."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from smartcache.core.scan import NODE_BITS, ScanStep, first_step, next_step
from smartcache.exceptions import InvalidArgumentError


def test_zero_starts_at_the_first_primary() -> None:
    assert first_step(0, 3) == ScanStep(0, 0)


def test_a_finished_primary_hands_over_to_the_next_and_the_last_ends_at_zero() -> None:
    step = next_step(ScanStep(0, 0), 0, 3)
    assert step == ScanStep(1, 0) and step.to_cursor() == 1
    assert next_step(ScanStep(2, 5), 0, 3).to_cursor() == 0


@given(node=st.integers(0, 9), cursor=st.integers(1, 2**64 - 1))
def test_cursor_round_trip(node: int, cursor: int) -> None:
    step = next_step(ScanStep(node, 0), cursor, 10)
    assert first_step(step.to_cursor(), 10) == ScanStep(node, cursor)
    assert step.to_cursor() != 0


@pytest.mark.parametrize("bad", [-1, 5, (7 << NODE_BITS) | 3])
def test_bad_cursors_are_refused(bad: int) -> None:
    with pytest.raises(InvalidArgumentError):
        first_step(bad, 3)
