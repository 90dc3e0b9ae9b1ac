"""The staffing rule answers the same as the Erlang C definition, with bounded work whatever the load."""

from __future__ import annotations

import math
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from adaptflow.policies.staffing import mean_wait, staff


def fewest_by_definition(rate: float, mean: float, target: float, scv: float, lo: int, hi: int) -> int:
    """The definition, checked candidate by candidate (quadratic: only for small pools)."""
    if rate <= 0:
        return lo
    for c in range(max(lo, 1), hi + 1):
        if mean_wait(rate, mean, c, scv) <= target:
            return c
    return hi


@settings(max_examples=300, deadline=None)
@given(
    rate=st.floats(0.0, 200.0),
    mean=st.floats(0.01, 5.0),
    target=st.floats(0.001, 100.0),
    scv=st.floats(0.0, 4.0),
    lo=st.integers(0, 20),
    extra=st.integers(0, 200),
)
def test_staff_is_the_fewest_workers_meeting_the_target(rate, mean, target, scv, lo, extra):
    hi = max(lo, 1) + extra
    assert staff(rate, mean, target, scv, lo, hi) == fewest_by_definition(rate, mean, target, scv, lo, hi)


def test_an_overload_beyond_the_pool_answers_the_maximum_at_once():
    """The inputs that hung the planner service: 1e7 items/s and rates of 1e12."""
    started = time.perf_counter()
    for rate in (1e4, 1e7, 1e12, math.inf, math.nan):
        assert staff(rate, 1.0, 0.5, 1.0, lo=1, hi=50) == 50
    assert time.perf_counter() - started < 0.1  # generous: it is a handful of comparisons


def test_work_grows_with_the_answer_not_with_its_square():
    """A load of 20,000 Erlangs within a pool of a million: one pass to ~20,100 servers."""
    started = time.perf_counter()
    c = staff(20_000.0, 1.0, 0.01, 1.0, lo=0, hi=10**6)
    elapsed = time.perf_counter() - started
    assert 20_000 < c < 20_500
    assert mean_wait(20_000.0, 1.0, c, 1.0) <= 0.01 < mean_wait(20_000.0, 1.0, c - 1, 1.0)
    assert elapsed < 2.0  # the old search took minutes here (O(c) Erlang C per candidate)
