"""The model's public reading: ``Simulation.counters`` (named cumulative counters) and
``Simulation.samples`` (per-item values between two readings) are what ``summary``, the
``SimMonitor`` and ``compare-live`` read, so every field is checked here by name against what the
model did, and the monitor's interval against the summary of the same window."""

from __future__ import annotations

import math

import numpy as np
import pytest

from adaptflow.agents.sim import SimMonitor
from adaptflow.scenario import load_scenario
from adaptflow.simulator import Counters, Simulation
from adaptflow.simulator.model import frames

from .helpers import scenario

# Failures with retries, a bounded queue, validation, a split, start-up delays: every counter moves.
BUSY = {
    "a": {
        "workers": {"initial": 2, "max": 6, "startup_delay": 5.0},
        "service": {"dist": "exponential", "mean": 1.0},
        "failure": {"prob": 0.3, "max_retries": 1},
        "queue": {"capacity": 5},
        "next": [{"to": "b", "p": 0.6}, {"to": None, "p": 0.4}],
    },
    "b": {
        "workers": {"initial": 1, "max": 4},
        "service": {"dist": "exponential", "mean": 0.5},
        "validation": {"detect_prob": 0.7, "false_positive_prob": 0.1},
        "next": None,
    },
}


def busy_sim(seed: int = 1) -> Simulation:
    spec = scenario(
        BUSY,
        sources={"s": {"process": "poisson", "rate": 2.2, "to": "a", "quality": {"bad_rate": 0.3}}},
        horizon=2000.0,
        sla=4.0,
    )
    return Simulation(spec, rng=seed)


def test_every_counter_by_name_matches_the_model_and_the_summary():
    sim = busy_sim()
    sim.run(700)
    sim.set_workers("a", 5)  # some start up, some drain later
    sim.run(703)
    c = sim.counters()
    summary = sim.summary()
    assert isinstance(c, Counters) and c.time == sim.now == 703
    for name, st in c.stages.items():
        model, s = sim.stages[name], summary["stages"][name]
        for field in ("arrivals", "completed", "drops", "failures", "failed_items", "detected", "false_alarms"):
            assert getattr(st, field) == s[field], (name, field)
        assert (st.queue_length, st.busy, st.idle) == (len(model.queue), model.busy, model.idle)
        assert (st.starting, st.draining, st.target) == (model.starting, model.draining, model.target)
        assert st.busy + st.idle == s["active_workers"] and st.target == s["target_workers"]
        assert st.n_waits == len(sim.samples(None, c).waits(name)) and st.n_latencies == s["completed"]
        assert st.queue_area / c.time == s["mean_queue_length"]
        assert st.busy_area / c.time == s["mean_busy_workers"]
        assert st.billed_area / c.time == s["mean_workers"] and st.billed_area * model.price == s["cost"]
        assert st.busy_area / st.active_area == s["utilization"]
    assert c.stages["a"].failures > 0 and c.stages["a"].drops > 0 and c.stages["b"].detected > 0
    assert c.stages["a"].starting == 3  # asked for at t=700, ready at 705
    e2e = summary["end_to_end"]
    assert (c.arrived, c.exits, c.dropped, c.failed) == (
        e2e["arrivals"],
        e2e["completed"],
        e2e["drops"],
        e2e["failed_items"],
    )
    assert (c.late, c.escapes, c.caught, c.false_rejections) == (
        e2e["sla_violations"],
        e2e["escapes"],
        e2e["caught"],
        e2e["false_rejections"],
    )
    assert c.source_arrivals == {"s": c.arrived} and c.in_system == e2e["in_system"]
    assert c.late / c.deadlines_passed == e2e["sla_violation_rate"]
    assert c.n_latencies == c.exits == len(sim.samples(None, c).end_to_end())


def test_counters_are_values_that_later_runs_do_not_change():
    sim = busy_sim()
    sim.run(300)
    before = sim.counters()
    frozen = tuple(before)
    sim.run(600)
    assert tuple(before) == frozen
    with pytest.raises(AttributeError):
        before.exits = 0  # type: ignore[misc]


def test_monitor_interval_equals_the_summary_of_the_same_window():
    """``SimMonitor`` and ``summary(since=...)`` read the same counters: equal figures."""
    sim = busy_sim(seed=4)
    monitor = SimMonitor(sim)
    sim.run(500)
    monitor.observe()
    start = sim.counters()
    sim.run(560)
    snapshot = monitor.observe()
    window = sim.summary(since=start)
    assert snapshot.interval == window["duration"] == 60
    for name, m in snapshot.stages.items():
        w = window["stages"][name]
        assert (m.arrivals, m.completed, m.drops, m.failures, m.detected) == (
            w["arrivals"],
            w["completed"],
            w["drops"],
            w["failures"],
            w["detected"],
        )
        assert m.mean_queue_length == w["mean_queue_length"] and m.cost == w["cost"]
        assert m.utilization == w["utilization"] or (math.isnan(m.utilization) and math.isnan(w["utilization"]))
        assert m.mean_wait == pytest.approx(w["mean_wait"], rel=1e-12, nan_ok=True)
    e2e = window["end_to_end"]
    assert (snapshot.completed, snapshot.drops, snapshot.failed, snapshot.sla_violations) == (
        e2e["completed"],
        e2e["drops"],
        e2e["failed_items"],
        e2e["sla_violations"],
    )
    assert snapshot.source_arrivals == {"s": e2e["arrivals"]}
    assert snapshot.mean_latency == pytest.approx(e2e["mean_latency"], rel=1e-12)
    assert snapshot.in_system == e2e["in_system"]


def test_record_is_the_windows_summaries():
    spec = load_scenario("etl_diurnal", horizon=900)
    recorded = Simulation(spec, rng=3).record(interval=100.0)
    windows = list(Simulation(spec, rng=3).windows(100.0))
    assert len(windows) == 9 and recorded.equals(frames(windows))


def test_the_simpy_environment_is_not_public():
    """Stepping SimPy from outside would process the model's re-armable events as SimPy's and
    break the next run (issue 12): there is no public handle to do it."""
    sim = Simulation(load_scenario("mmc", horizon=100), rng=0)
    assert not hasattr(sim, "env")
    assert not any(hasattr(st, "env") for st in sim.stages.values())
    sim.run(50)
    assert np.isfinite(sim.summary()["end_to_end"]["mean_latency"])
