"""Job classes: priority queues, deadlines and the price of lateness per class, per-class
metrics, and Cobham's per-class waits of a non-preemptive priority M/M/1."""

from __future__ import annotations

import numpy as np
import pytest

from adaptflow.agents import CostModel, SimMonitor
from adaptflow.scenario import ScenarioError
from adaptflow.simulator import Simulation
from tests.helpers import assert_within_ci, replicate, scenario, stage, trace_source

GOLD_SILVER = {"gold": {"priority": 0, "sla": {"latency": 3.0}, "late_weight": 4.0}, "silver": {"priority": 1}}


def _classed(rate, horizon, discipline="priority", shares=None, **stage_extra):
    return scenario(
        {"w": stage(1, "exponential", 1.0, discipline=discipline, **stage_extra)},
        sources={
            "src": {"process": "poisson", "rate": rate, "to": "w", "classes": shares or {"gold": 0.3, "silver": 0.7}}
        },
        horizon=horizon,
        classes=GOLD_SILVER,
    )


def test_a_priority_stage_serves_the_most_urgent_waiting_class_first_without_preempting(tmp_path):
    """One worker, 1 s jobs; a silver job starts at 0; two silver and one gold arrive while it
    runs. The gold starts next (at 1), then the silvers in their order: gold waits 0.7 s."""
    spec = scenario(
        {"w": stage(1, "deterministic", 1.0, discipline="priority")},
        sources={
            "s": trace_source(tmp_path, [0.0, 0.1, 0.2], "w", name="s", classes={"silver": 1.0}),
            "g": trace_source(tmp_path, [0.3], "w", name="g", classes={"gold": 1.0}),
        },
        horizon=10.0,
        classes=GOLD_SILVER,
    )
    sim = Simulation(spec, rng=0)
    sim.run()
    assert sim.stages["w"].waits == pytest.approx([0.0, 0.7, 1.9, 2.8])  # silver, gold, silver, silver
    classes = sim.summary()["classes"]
    assert classes["gold"]["mean_latency"] == pytest.approx(1.7)
    assert classes["silver"]["completed"] == 3 and classes["silver"]["mean_latency"] == pytest.approx(
        (1 + 2.9 + 3.8) / 3
    )


def test_each_class_is_late_against_its_own_deadline_and_priced_by_its_weight(tmp_path):
    """Gold's deadline is 3 s (weight 4), silver's the scenario's 5 s: a gold and a silver job
    both taking 4 s: only gold is late, and its lateness costs 4 units."""
    spec = scenario(
        {"w": stage(2, "deterministic", 4.0)},
        sources={
            "g": trace_source(tmp_path, [0.0], "w", name="g", classes={"gold": 1.0}),
            "s": trace_source(tmp_path, [0.0], "w", name="s", classes={"silver": 1.0}),
        },
        horizon=20.0,
        sla=5.0,
        classes=GOLD_SILVER,
    )
    sim = Simulation(spec, rng=0)
    monitor = SimMonitor(sim)
    sim.run()
    snapshot = monitor.observe()
    assert (snapshot.sla_violations, snapshot.sla_violation_units) == (1, 4.0)
    assert CostModel().components(snapshot).sla == pytest.approx(5.0 * 4.0)  # the cost model's SLA price x units
    classes = sim.counters().classes
    assert (classes["gold"].late, classes["silver"].late, classes["gold"].late_units) == (1, 0, 4.0)


def test_a_scenario_without_classes_prices_each_violation_once():
    sim = Simulation(scenario({"w": stage(1)}, rate=0.9, horizon=500.0, sla=1.0), rng=1)
    monitor = SimMonitor(sim)
    sim.run()
    snapshot = monitor.observe()
    assert snapshot.sla_violations > 0 and np.isnan(snapshot.sla_violation_units)
    assert CostModel().components(snapshot).sla == pytest.approx(5.0 * snapshot.sla_violations)
    assert "classes" not in sim.summary() and sim.counters().classes == {}


def test_class_draws_have_their_own_stream_so_adding_classes_keeps_the_arrivals():
    plain = Simulation(scenario({"w": stage(1)}, rate=0.5, horizon=2000.0), rng=3)
    classed = Simulation(_classed(0.5, 2000.0, discipline="fifo"), rng=3)
    plain.run()
    classed.run()
    assert plain.arrived == classed.arrived
    per_class = classed.counters().classes
    assert per_class["gold"].arrived + per_class["silver"].arrived == classed.arrived
    assert 0.25 < per_class["gold"].arrived / classed.arrived < 0.35  # its share is 0.3


def test_per_class_totals_add_up_to_the_whole(tmp_path):
    sim = Simulation(_classed(0.9, 5000.0, queue={"capacity": 3}), rng=5)
    sim.run()
    end, classes = sim.counters(), sim.counters().classes
    for field, total in (("arrived", end.arrived), ("exits", end.exits), ("dropped", end.dropped), ("late", end.late)):
        assert sum(getattr(c, field) for c in classes.values()) == total, field
    assert end.dropped > 0


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"shares": {"gold": 0.5, "silver": 0.4}}, "class shares sum to 0.9; expected 1"),
        ({"shares": {"gold": 0.5, "bronze": 0.5}}, "sources.src.classes: ['bronze'] are not job classes"),
        ({"shares": None}, "sources.src.classes: missing; expected the share of each class"),
        ({"classes": {}, "shares": None}, "stages.w.discipline: 'priority' needs job classes"),
    ],
)
def test_bad_classes_are_refused_with_the_field(data, needle):
    source = {"process": "poisson", "rate": 1.0, "to": "w"}
    if data["shares"] is not None:
        source["classes"] = data["shares"]
    with pytest.raises(ScenarioError) as info:
        scenario(
            {"w": stage(1, discipline="priority")},
            sources={"src": source},
            classes=data.get("classes", GOLD_SILVER),
        )
    assert needle in str(info.value)


def cobham_waits(rates: list[float], mean_service: float) -> list[float]:
    """Mean waits per class of a non-preemptive priority M/M/1 (Cobham 1954), class 0 first:
    W_k = W0 / ((1 - sigma_{k-1}) (1 - sigma_k)), W0 = sum lambda_i E[S^2] / 2 = rho E[S] for
    exponential service, sigma_k the load of classes 0..k."""
    loads = [r * mean_service for r in rates]
    w0 = sum(loads) * mean_service
    sigma = np.cumsum([0.0, *loads])
    return [w0 / ((1 - sigma[k]) * (1 - sigma[k + 1])) for k in range(len(rates))]


def test_a_non_preemptive_priority_mm1_matches_cobham_per_class():
    """Rate 0.6 (0.18 gold, 0.42 silver), mean service 1: gold waits 0.732 s, silver 1.829 s
    (FIFO would give both 1.5). A class's mean latency is its wait plus the mean service."""
    runs = replicate(_classed(0.6, 50_000.0), n=20, warmup=1000)
    expected = cobham_waits([0.18, 0.42], 1.0)
    for name, wait in zip(("gold", "silver"), expected, strict=True):
        latencies = [r["classes"][name]["mean_latency"] - 1.0 for r in runs]
        assert_within_ci(latencies, wait, f"Cobham {name} wait", 0.05)


def test_a_fifo_stage_with_classes_gives_every_class_the_mm1_wait():
    runs = replicate(_classed(0.6, 50_000.0, discipline="fifo"), n=20, warmup=1000)
    for name in ("gold", "silver"):
        latencies = [r["classes"][name]["mean_latency"] - 1.0 for r in runs]
        assert_within_ci(latencies, 0.6 / (1 - 0.6), f"FIFO {name} wait", 0.05)


def test_the_monitor_reports_each_class_backlog_and_the_encoder_observes_it():
    from adaptflow.agents import ObservationEncoder

    spec = _classed(0.95, 400.0)
    sim = Simulation(spec, rng=2)
    monitor = SimMonitor(sim)
    sim.run(300.0)
    snapshot = monitor.observe()
    classes = sim.counters().classes
    assert snapshot.class_backlog == {n: c.arrived - c.exits - c.dropped - c.failed for n, c in classes.items()}
    assert sum(snapshot.class_backlog.values()) == snapshot.in_system > 0
    names = [f.name for f in ObservationEncoder.for_scenario(spec).features]
    assert {"backlog:gold", "backlog:silver"} <= set(names)
