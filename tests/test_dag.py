"""Fork and join: sample paths with deterministic times, the whole-item rules, and the checks
that refuse a join that could never complete."""

from __future__ import annotations

import numpy as np
import pytest

from adaptflow.policies.staffing import visit_ratios
from adaptflow.scenario import ScenarioError, load_scenario, parse_scenario
from adaptflow.simulator import Simulation
from tests.helpers import scenario, stage, trace_source


def _dag(tmp_path, times, to, stages, sla=100.0, horizon=50.0):
    return scenario(stages, sources={"t": trace_source(tmp_path, times, to)}, horizon=horizon, sla=sla)


def test_a_fork_joins_when_its_slowest_part_arrives_and_the_join_serves_the_item_once(tmp_path):
    """Parts of 1 s and 3 s, a join of 1 s: the item leaves at 4; part a waited 2 s at the join."""
    spec = _dag(
        tmp_path,
        [0.0],
        {"fork": ["a", "b"], "join": "m"},
        {
            "a": stage(1, "deterministic", 1.0, next="m"),
            "b": stage(1, "deterministic", 3.0, next="m"),
            "m": stage(1, "deterministic", 1.0),
        },
    )
    sim = Simulation(spec, rng=0)
    sim.run(2.0)
    mid = sim.counters()
    assert mid.joins["m"].waiting == 1 and mid.in_system == 1
    sim.run()
    end = sim.counters()
    assert sim.e2e_latencies == [4.0]
    assert (end.exits, end.arrived, end.in_system) == (1, 1, 0)
    assert {n: c.completed for n, c in end.stages.items()} == {"a": 1, "b": 1, "m": 1}
    join = end.joins["m"]
    assert (join.parts, join.joined, join.released, join.waiting) == (2, 1, 2, 0)
    assert join.wait_sum == pytest.approx(2.0) and join.delay_sum == pytest.approx(2.0)
    assert join.area == pytest.approx(2.0)  # one part waiting from 1 to 3
    summary = sim.summary()["joins"]["m"]
    assert summary["mean_part_wait"] == pytest.approx(1.0) and summary["mean_join_delay"] == pytest.approx(2.0)


def test_a_scatter_at_the_exit_leaves_when_its_last_part_is_served(tmp_path):
    """Three parts of 1 s on one worker: the item leaves at 3, once."""
    spec = _dag(tmp_path, [0.0], {"scatter": "a", "parts": 3, "join": None}, {"a": stage(1, "deterministic", 1.0)})
    sim = Simulation(spec, rng=0)
    sim.run()
    end = sim.counters()
    assert sim.e2e_latencies == [3.0] and end.exits == 1 and end.stages["a"].completed == 3
    assert end.joins["exit"].joined == 1 and end.joins["exit"].wait_sum == pytest.approx(2 + 1)


def test_a_dropped_part_drops_its_whole_item_once_and_the_other_parts_are_discarded_at_the_join(tmp_path):
    """Scatter 3 parts onto 1 worker with no room to wait: the second part is dropped, so the
    item is dropped (once), the third part is never sent, and the first is discarded at the join."""
    spec = _dag(
        tmp_path,
        [0.0],
        {"scatter": "a", "parts": 3, "join": "m"},
        {"a": {**stage(1, "deterministic", 1.0, next="m"), "queue": {"capacity": 0}}, "m": stage(1)},
    )
    sim = Simulation(spec, rng=0)
    sim.run()
    end = sim.counters()
    assert (end.dropped, end.exits, end.in_system) == (1, 0, 0)
    assert (end.stages["a"].arrivals, end.stages["a"].drops, end.stages["a"].completed) == (2, 1, 1)
    assert (end.joins["m"].parts, end.joins["m"].joined, end.joins["m"].waiting) == (1, 0, 0)
    assert end.stages["m"].arrivals == 0


def test_a_part_given_up_fails_its_item_and_ends_the_waits_of_its_siblings(tmp_path):
    """Part b always fails (no retry) after 2 s; part a has waited at the join since 1 s."""
    spec = _dag(
        tmp_path,
        [0.0],
        {"fork": ["a", "b"], "join": "m"},
        {
            "a": stage(1, "deterministic", 1.0, next="m"),
            "b": stage(1, "deterministic", 2.0, next="m", failure={"prob": 1.0}),
            "m": stage(1),
        },
    )
    sim = Simulation(spec, rng=0)
    sim.run()
    end = sim.counters()
    assert (end.failed, end.dropped, end.exits, end.in_system) == (1, 0, 0, 0)
    join = end.joins["m"]
    assert (join.waiting, join.released, join.joined) == (0, 1, 0) and join.wait_sum == pytest.approx(1.0)


def test_an_item_is_late_once_while_its_parts_are_in_flight(tmp_path):
    """Deadline 2 s, parts of 5 s: late at the first check after 2 s, counted once."""
    spec = _dag(
        tmp_path,
        [0.0],
        {"fork": ["a", "b"], "join": None},
        {"a": stage(1, "deterministic", 5.0), "b": stage(1, "deterministic", 5.0)},
        sla=2.0,
    )
    sim = Simulation(spec, rng=0)
    sim.run(3.0)
    assert sim.counters().late == 1
    sim.run()
    end = sim.counters()
    assert (end.late, end.exits, end.deadlines_passed) == (1, 1, 1)


def test_a_flagged_part_flags_its_item_which_is_caught_once(tmp_path):
    """A bad item's parts are bad; validation on one branch flags it; the item counts once."""
    spec = scenario(
        {
            "a": stage(1, "deterministic", 1.0, validation={"detect_prob": 1.0}),
            "b": stage(1, "deterministic", 1.0),
        },
        sources={"t": trace_source(tmp_path, [0.0], {"fork": ["a", "b"], "join": None}, quality={"bad_rate": 1.0})},
        horizon=10.0,
    )
    sim = Simulation(spec, rng=0)
    sim.run()
    end = sim.counters()
    assert (end.caught, end.escapes, end.exits) == (1, 0, 1)
    assert end.stages["a"].detected == 1


def test_nested_scatter_inside_a_branch_joins_before_the_outer_join(tmp_path):
    """Branch a (1 s) scatters 2 parts of 0.5 s onto one worker, joined at a2 (0.5 s); branch b
    takes 1 s; the outer join m takes 1 s: a's side reaches m at 2.5, so the item leaves at 3.5."""
    spec = _dag(
        tmp_path,
        [0.0],
        {"fork": ["a", "b"], "join": "m"},
        {
            "a": stage(1, "deterministic", 1.0, next={"scatter": "x", "parts": 2, "join": "a2"}),
            "x": stage(1, "deterministic", 0.5, next="a2"),
            "a2": stage(1, "deterministic", 0.5, next="m"),
            "b": stage(1, "deterministic", 1.0, next="m"),
            "m": stage(1, "deterministic", 1.0),
        },
    )
    sim = Simulation(spec, rng=0)
    sim.run()
    end = sim.counters()
    assert sim.e2e_latencies == [3.5]  # a 0-1, x 1-1.5-2, a2 2-2.5, m 2.5-3.5
    assert end.joins["a2"].joined == 1 and end.joins["m"].joined == 1 and end.exits == 1


def test_a_drawn_part_count_takes_its_values_from_the_routing_stream_reproducibly():
    spec = scenario(
        {"a": stage(50, "exponential", 0.1)},
        sources={
            "s": {
                "process": "poisson",
                "rate": 2.0,
                "to": {"scatter": "a", "parts": {"low": 1, "high": 4}, "join": None},
            }
        },
        horizon=2000.0,
    )
    counts = []
    for _ in range(2):
        sim = Simulation(spec, rng=7)
        sim.run()
        end = sim.counters()
        counts.append((end.stages["a"].arrivals, end.exits))
    assert counts[0] == counts[1]
    parts_per_item = counts[0][0] / counts[0][1]
    assert 2.3 < parts_per_item < 2.7  # the mean of 1..4 is 2.5


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        ({"fork": ["a", "b"], "join": "m"}, {"a": 1.0, "b": 1.0, "m": 1.0}),
        ({"scatter": "a", "parts": 4, "join": "m"}, {"a": 4.0, "b": 0.0, "m": 1.0}),
        ({"scatter": "a", "parts": {"samples": [2, 4]}, "join": "m"}, {"a": 3.0, "b": 0.0, "m": 1.0}),
    ],
)
def test_the_traffic_equations_give_the_join_one_visit_per_item(route, expected):
    spec = scenario(
        {"a": stage(1, next="m"), "b": stage(1, next="m"), "m": stage(1)},
        sources={"s": {"process": "poisson", "rate": 1.0, "to": route}},
    )
    assert visit_ratios(spec)["s"] == pytest.approx(expected)


def _refusal(stages, to):
    with pytest.raises(ScenarioError) as info:
        parse_scenario(
            {
                "name": "bad",
                "horizon": 10.0,
                "sla": {"latency": 1.0},
                "sources": {"s": {"process": "poisson", "rate": 1.0, "to": to}},
                "stages": stages,
            }
        )
    return str(info.value)


def test_a_part_that_can_leave_before_its_join_is_refused_with_the_path():
    message = _refusal(
        {"a": stage(1, next="m"), "b": stage(1, next="c"), "c": stage(1, next=None), "m": stage(1)},
        {"fork": ["a", "b"], "join": "m"},
    )
    assert "sources.s.to: a part sent to 'b' can leave the system (b -> c -> exit)" in message
    assert "without reaching its join 'm'" in message


def test_a_part_routed_away_on_quality_is_refused():
    quarantine = {"attribute": "flagged", "routes": {True: None, False: "m"}}
    message = _refusal(
        {"a": stage(1, next=quarantine, validation={"detect_prob": 0.9}), "m": stage(1)},
        {"scatter": "a", "parts": 2, "join": "m"},
    )
    assert "a part sent to 'a' can leave the system (a -> exit)" in message


def test_a_nested_join_at_the_exit_inside_a_branch_is_refused():
    message = _refusal(
        {
            "a": stage(1, next={"scatter": "x", "parts": 2, "join": None}),
            "x": stage(1),
            "b": stage(1, next="m"),
            "m": stage(1),
        },
        {"fork": ["a", "b"], "join": "m"},
    )
    assert "a part sent to 'a' can leave the system (a -> exit)" in message


@pytest.mark.parametrize(
    ("route", "needle"),
    [
        ({"fork": ["a"], "join": None}, "at least 2"),
        ({"scatter": "a", "parts": 0, "join": None}, "greater than or equal to 1"),
        ({"scatter": "a", "parts": {"low": 3, "high": 2}, "join": None}, "low is 3 and high is 2"),
        ({"scatter": "a", "parts": 10, "join": "nowhere"}, "'nowhere', which is not a stage"),
        ({"scatter": "a", "parts": 20_000, "join": None}, "less than or equal to 10000"),
    ],
)
def test_bad_fan_outs_are_refused_with_the_field(route, needle):
    assert needle in _refusal({"a": stage(1)}, route)


def test_a_pipeline_has_no_join_metrics_and_pays_nothing_for_joins():
    sim = Simulation(scenario({"a": stage(1)}, rate=0.5, horizon=100.0), rng=np.random.default_rng(0))
    sim.run()
    assert "joins" not in sim.summary() and sim.counters().joins == {}
    assert sim._exit.__func__ is Simulation._exit  # the plain exit, not the join-aware one


def test_the_monitor_reports_parts_waiting_at_a_join_and_the_encoder_observes_them(tmp_path):
    from adaptflow.agents import ObservationEncoder, SimMonitor

    spec = _dag(
        tmp_path,
        [0.0],
        {"fork": ["a", "b"], "join": "m"},
        {
            "a": stage(1, "deterministic", 1.0, next="m"),
            "b": stage(1, "deterministic", 3.0, next="m"),
            "m": stage(1, "deterministic", 1.0),
        },
    )
    sim = Simulation(spec, rng=0)
    monitor = SimMonitor(sim)
    sim.run(2.0)
    snapshot = monitor.observe()
    assert snapshot.join_waiting == {"m": 1} and snapshot.in_system == 1  # one item, not its two parts
    encoder = ObservationEncoder.for_scenario(spec)
    names = [f.name for f in encoder.features]
    assert "join:m" in names
    from adaptflow.agents.types import Insights

    insights = Insights(rates={"t": 0.0}, forecasts={"t": []}, stage_rates={n: 0.0 for n in spec.stages})
    value = encoder.encode(snapshot, insights)[names.index("join:m")]
    assert value == pytest.approx(1 / 20)  # 1 part / (10 items x 2 parts)


def test_the_envs_run_a_shipped_dag_scenario_through_the_checker_deterministically():
    import gymnasium as gym
    from gymnasium.utils.env_checker import check_env

    import adaptflow.envs  # noqa: F401  (registers the envs)

    env = gym.make("adaptflow/Autoscale-v0", scenario="epigenomics_dag", horizon=1800)
    check_env(env.unwrapped, skip_render_check=True)
    runs = []
    for _ in range(2):
        obs, _ = env.reset(seed=4)
        env.action_space.seed(4)
        trace = [obs]
        for _ in range(30):
            obs, *_ = env.step(env.action_space.sample())
            trace.append(obs)
        runs.append(np.array(trace))
    assert np.array_equal(runs[0], runs[1])
    joins = [f.name for f in env.unwrapped.encoder.features if f.name.startswith("join:")]
    assert joins == ["join:mapMerge"]


def test_the_service_asks_a_dag_planner_for_its_join_buffers_and_a_pipeline_for_none():
    from fastapi.testclient import TestClient

    from adaptflow.agents import SimMonitor
    from adaptflow.runtime.service import app_for

    sim = Simulation(load_scenario("epigenomics_dag"), rng=1)
    monitor = SimMonitor(sim)
    sim.run(600.0)
    body = {"metrics": monitor.observe().to_dict()}
    client = TestClient(app_for("erlang", "epigenomics_dag", fallback="static"))
    assert client.post("/v1/decide", json=body).status_code == 200
    body["metrics"].pop("join_waiting")
    refused = client.post("/v1/decide", json=body)
    assert refused.status_code == 422 and "join_waiting" in refused.text
    pipeline = TestClient(app_for("erlang", "mmc", fallback="static"))
    mm = Simulation(load_scenario("mmc"), rng=1)
    mm_monitor = SimMonitor(mm)
    mm.run(60.0)
    assert pipeline.post("/v1/decide", json={"metrics": mm_monitor.observe().to_dict()}).status_code == 200


def test_nested_scatters_multiply_the_work_bound_and_a_run_that_asks_too_much_is_refused_before_it_starts():
    from adaptflow.experiments.simulation import check_work

    nested = scenario(
        {"a": stage(1, next={"scatter": "x", "parts": 10_000, "join": "m"}), "x": stage(1, next="m"), "m": stage(1)},
        sources={"s": {"process": "poisson", "rate": 1.0, "to": {"scatter": "a", "parts": 10_000, "join": None}}},
        horizon=10.0,
    )
    assert nested.parts_per_item() >= 10_000 * 10_000
    with pytest.raises(ValueError, match=r"about 10 arrivals x up to [\d,]+ parts each"):
        check_work(nested, None)
    sequential = scenario(
        {"a": stage(1, next="b"), "b": stage(1, next={"scatter": "c", "parts": 5, "join": None}), "c": stage(1)},
        sources={"s": {"process": "poisson", "rate": 1.0, "to": {"scatter": "a", "parts": 4, "join": "b"}}},
    )
    assert sequential.parts_per_item() == 1 + 4 + 5  # one after the other: they add


def test_parts_that_can_fork_again_have_no_bound_and_are_refused_before_they_run():
    """A part of a's scatter may go back to a and scatter again before its join: a branching
    process with no bound on its parts. (An item that loops after its join forks once per pass,
    as any item visits a stage once per pass: that is the traffic of a feedback loop.)"""
    from adaptflow.experiments.simulation import check_work

    looping = scenario(
        {
            "a": stage(1, next={"scatter": "x", "parts": 2, "join": "m"}),
            "x": stage(1, next=[{"to": "a", "p": 0.5}, {"to": "m", "p": 0.5}]),
            "m": stage(1),
        },
        sources={"s": {"process": "poisson", "rate": 1.0, "to": "a"}},
    )
    assert looping.parts_per_item() == float("inf")
    with pytest.raises(ValueError, match="parts each"):
        check_work(looping, None)


@pytest.mark.parametrize("join", ["m", None])
def test_nested_fan_outs_with_the_same_join_complete_the_inner_family_then_the_outer(tmp_path, join):
    """The outer fork's branch a scatters 2 parts that meet at the same join as the outer fork
    (a stage m, or the exit): the inner family completes first, then its parent (an outer part)
    waits for its sibling b there, and the item goes on once: m serves it once, it exits once."""
    spec = _dag(
        tmp_path,
        [0.0],
        {"fork": ["a", "b"], "join": join},
        {
            "a": stage(1, "deterministic", 1.0, next={"scatter": "x", "parts": 2, "join": join}),
            "x": stage(2, "deterministic", 1.0, next=join),
            "b": stage(1, "deterministic", 5.0, next=join),
            **({"m": stage(1, "deterministic", 1.0)} if join else {}),
        },
    )
    sim = Simulation(spec, rng=0)
    sim.run()
    end = sim.counters()
    name = join or "exit"
    assert (end.exits, end.in_system, end.joins[name].joined) == (1, 0, 2)  # inner and outer family
    assert sim.e2e_latencies == [6.0 if join else 5.0]  # b takes 5, then m 1
    if join:
        assert end.stages["m"].completed == 1
