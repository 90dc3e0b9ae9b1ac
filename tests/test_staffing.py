"""The staffing rule answers the same as the Erlang C definition, with bounded work whatever the load."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adaptflow.policies.staffing import mean_wait, staff
from adaptflow.scenario.schema import StageContention
from tests.helpers import confidence_interval


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


def test_an_overload_beyond_the_pool_answers_the_maximum_at_once(erlang_steps):
    """The inputs that hung the planner service: 1e7 items/s and rates of 1e12."""
    for rate in (1e4, 1e7, 1e12, math.inf, math.nan):
        assert staff(rate, 1.0, 0.5, 1.0, lo=1, hi=50) == 50
    assert erlang_steps[0] == 0  # no pool within the bounds is stable: no recursion at all


def test_work_grows_with_the_answer_not_with_its_square(erlang_steps):
    """A load of 20,000 Erlangs within a pool of a million: one pass to ~20,100 servers (the old
    search, an O(c) Erlang C per candidate, took about c**2 / 2 = 2 x 10**8 steps: minutes)."""
    c = staff(20_000.0, 1.0, 0.01, 1.0, lo=0, hi=10**6)
    assert 20_000 < c < 20_500
    assert mean_wait(20_000.0, 1.0, c, 1.0) <= 0.01 < mean_wait(20_000.0, 1.0, c - 1, 1.0)
    assert erlang_steps[0] == c  # one step per server, up to the answer


def hosted(cores: float | None, peak: float = 5.0):
    """Two CPU-bound stages (0.5 s and 0.3 s a visit) on a host of ``cores`` (None: no host),
    fed a daily cycle that peaks at ``peak`` items/s: 0.8 * peak CPU seconds a second."""
    from adaptflow.scenario import parse_scenario

    def stage(mean: float, nxt: str | None = None) -> dict:
        spec = {
            "workers": {"initial": 2, "min": 1, "max": 30, "startup_delay": 10.0, "cost_per_second": 1.0},
            "service": {"dist": "gamma", "mean": mean, "cv": 0.5},
            "next": nxt,
        }
        return {**spec, "host": "vm", "cpu": 1.0} if cores is not None else spec

    rate = {"shape": "diurnal", "base": 0.6 * peak, "amplitude": 0.4 * peak, "period": 7200.0, "peak_time": 3600.0}
    doc = {
        "name": "hosted",
        "horizon": 7200.0,
        "sla": {"latency": 30.0},
        "sources": {"src": {"process": "poisson", "to": "a", "rate": rate}},
        "stages": {"a": stage(0.5, "b"), "b": stage(0.3)},
    }
    return parse_scenario({**doc, "hosts": {"vm": {"cores": cores}}} if cores is not None else doc)


def test_a_host_asked_for_more_than_its_cores_is_staffed_for_what_it_can_serve():
    """5 items/s ask 4 CPU seconds a second of a 2-core host: each stage is staffed for half its
    rate, as many workers as 2.5 items/s need, where the rule without the host staffs for 5."""
    from adaptflow.policies import ErlangPlanner

    aware, blind = ErlangPlanner(hosted(2.0)), ErlangPlanner(hosted(None))
    rates = {"a": 5.0, "b": 5.0}
    assert aware.servable(rates) == {"a": 2.5, "b": 2.5}
    assert aware.staff_all(rates) == blind.staff_all({"a": 2.5, "b": 2.5})
    assert sum(aware.staff_all(rates).values()) < sum(blind.staff_all(rates).values())
    # within its cores (1.6 CPU seconds a second of 2) a host changes nothing
    assert aware.staff_all({"a": 2.0, "b": 2.0}) == blind.staff_all({"a": 2.0, "b": 2.0})
    # a host with room to spare: the same as no host at all
    assert ErlangPlanner(hosted(64.0)).staff_all(rates) == blind.staff_all(rates)


def test_on_an_overloaded_host_the_host_aware_rule_costs_less_than_the_blind_one():
    """The same hosted scenario (peak 4 CPU seconds a second on 2 cores) run with Erlang
    staffing that knows the host and with the old rule (the planner given the scenario without
    its host), on paired seeds: the blind rule pays for processes the cores cannot run."""
    from adaptflow.experiments.evaluation import run_episode
    from adaptflow.policies import ErlangPlanner

    spec, blind = hosted(2.0), hosted(None)
    diffs, completed = [], []
    for seed in range(3):
        aware_run = run_episode(spec, ErlangPlanner(spec), 9000 + seed)
        blind_run = run_episode(spec, ErlangPlanner(blind), 9000 + seed)
        diffs.append(aware_run["cost"] - blind_run["cost"])
        assert aware_run["cost_workers"] < blind_run["cost_workers"]
        completed.append((aware_run["completed"], blind_run["completed"]))
    mean, half = confidence_interval(diffs)
    assert mean + half < 0, f"cost difference {mean:.0f} +- {half:.0f}"
    assert all(a >= b for a, b in completed)  # and serves no fewer items


def test_a_turnaround_that_slows_with_the_busy_processes_is_staffed_for_the_load():
    """Stage b's 0.2 s turnaround grows by half for every process busy on its host (contention
    0.5). With 2 items/s into a (0.5 s) and 5 into b (0.3 s) the host keeps 1 + 1.5 = 2.5
    processes serving, so b holds a process 0.3 + 0.2 x (1 + 0.5 x 2.5) = 0.75 s per visit, and
    is staffed for that: as Erlang C staffs a stage whose turnaround is 0.45 s, more than for
    the plain 0.5 s. With no load the holding time is the plain 0.5 s."""
    from adaptflow.policies import ErlangPlanner

    def scenario(contention: float | None, turnaround: float = 0.2) -> Any:
        spec = hosted(64.0)
        stretch = None if contention is None else StageContention(turnaround=contention)
        b = spec.stages["b"].model_copy(update={"turnaround": turnaround, "contention": stretch})
        return spec.model_copy(update={"stages": {"a": spec.stages["a"], "b": b}})

    rates = {"a": 2.0, "b": 5.0}
    planner = ErlangPlanner(scenario(0.5))
    assert planner.loaded_means(rates)["b"] == pytest.approx(0.3 + 0.2 * (1 + 0.5 * 2.5))
    assert planner.loaded_means({"a": 0.0, "b": 0.0})["b"] == pytest.approx(0.5)
    assert planner.staff_all(rates) == ErlangPlanner(scenario(None, turnaround=0.45)).staff_all(rates)
    assert planner.staff_all(rates)["b"] > ErlangPlanner(scenario(None)).staff_all(rates)["b"]


def test_a_spread_turnaround_adds_its_variance_to_the_held_time_s():
    """A worker is held for the service (exponential, mean 1) and then the turnaround (1 s):
    variance 1, over the held time's 2 squared, 0.25; spread by ``turnaround_cv`` 1, the
    turnaround adds its own variance (1): 0.5, and Erlang C staffs for the longer waits."""
    from adaptflow.policies.staffing import service_scv
    from tests.helpers import scenario as make_scenario
    from tests.helpers import stage

    def spec(cv: float) -> Any:
        return make_scenario({"w": stage(1, "exponential", 1.0, turnaround=1.0, turnaround_cv=cv)}, rate=1.0)

    assert service_scv(spec(0.0), "w") == pytest.approx(0.25)
    assert service_scv(spec(1.0), "w") == pytest.approx(0.5)
    assert (staff(3.0, 2.0, 0.25, 0.25), staff(3.0, 2.0, 0.25, 0.5)) == (8, 9)  # 0.22 s waits at 8, 0.27 spread
